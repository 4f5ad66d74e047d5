"""A job id may be given as a unique prefix (``list`` can shorten ids); an ambiguous one is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.errors import JobNotFound
from tests.unit.cli.helpers import one_line_error, rb, write_jsonl


def _jobs(sqlite_url: str, ids: list[str]) -> None:
    from jobs.ledger.migrate import ensure_schema
    from jobs.ledger.models import Job
    from jobs.ledger.session import session_scope
    from jobs.ledger.types import utcnow

    ensure_schema(sqlite_url)
    with session_scope(sqlite_url) as s:
        for job_id in ids:
            s.add(
                Job(
                    id=job_id, state="completed", phase="done", input_file="x.jsonl", input_format="jsonl", router="length",
                    strong_model="s", weak_model="w", spec={}, created_at=utcnow(),
                )
            )


def test_resolve_job_id(sqlite_url: str) -> None:
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.lookup import resolve_job_id

    _jobs(sqlite_url, ["batch_de3aaa", "batch_de3bbb", "batch_de3", "batch_x_1", "batch_xy1"])
    with session_scope(sqlite_url) as s:
        assert resolve_job_id(s, "batch_de3a") == "batch_de3aaa"
        assert resolve_job_id(s, "batch_de3b…") == "batch_de3bbb"
        assert resolve_job_id(s, "batch_de3bb...") == "batch_de3bbb"
        assert resolve_job_id(s, "batch_de3") == "batch_de3", "an exact id wins over longer ones"
        assert resolve_job_id(s, "batch_x_") == "batch_x_1", "_ is not a LIKE wildcard"
        with pytest.raises(JobNotFound, match="ambiguous: it matches batch_de3, batch_de3aaa, batch_de3bbb"):
            resolve_job_id(s, "batch_d")
        with pytest.raises(JobNotFound, match="no job 'batch_zz'"):
            resolve_job_id(s, "batch_zz")
        with pytest.raises(JobNotFound, match="no job '%'"):
            resolve_job_id(s, "%")
        with pytest.raises(JobNotFound):
            resolve_job_id(s, "  ")


def test_cli_export_and_cancel_take_a_prefix(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"p{i}", "prompt": f"q {i}"} for i in range(3)])
    job_id = json.loads(rb(["run", "in.jsonl", "--router", "length", "--json"], tmp_path).stdout)["job_id"]
    out = rb(["export", job_id[:10] + "...", "--out", "r.jsonl", "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["job_id"] == job_id and json.loads(out.stdout)["results"] == 3
    assert "no job 'batch_zzz'" in one_line_error(rb(["cancel", "batch_zzz"], tmp_path))
