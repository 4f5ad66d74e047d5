"""``export`` never destroys data: not the ledger, not the input, not the other output,
not an existing file without ``--force``; a running job needs ``--partial``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobs.errors import ConfigError, ExportRefused
from jobs.ledger.export import _TERMINAL_JOB_STATES, export_job, ledger_files
from jobs.lifecycle.states import JobState
from tests.unit.cli.helpers import one_line_error, rb, write_jsonl

ROWS = [{"custom_id": f"p{i}", "prompt": f"prompt {i}"} for i in range(12)] + [{"custom_id": "bad"}]


@pytest.fixture(scope="module")
def done_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("export")
    write_jsonl(cwd / "in.jsonl", ROWS)
    run = rb(["run", "in.jsonl", "--router", "length", "--json"], cwd)
    assert run.returncode == 0, run.stderr
    return cwd, json.loads(run.stdout)["job_id"]


def _url(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'rb.db'}"


def test_out_onto_the_ledger_is_refused_and_the_ledger_survives(done_job: tuple[Path, str]) -> None:
    cwd, job_id = done_job
    db = cwd / "rb.db"
    size = db.stat().st_size
    line = one_line_error(rb(["export", job_id, "--out", "rb.db", "--force"], cwd))
    assert "ledger database" in line
    assert db.stat().st_size == size > 0
    assert rb(["status", job_id, "--json"], cwd).returncode == 0
    for suffix in ("-wal", "-shm"):  # the WAL files are the ledger too
        with pytest.raises(ExportRefused, match="ledger database"):
            export_job(_url(cwd), job_id, cwd / f"rb.db{suffix}", force=True)
    with pytest.raises(ExportRefused, match="ledger database"):
        export_job(_url(cwd), job_id, cwd / "out.jsonl", errors=cwd / "sub" / ".." / "rb.db", force=True)


def test_out_and_errors_the_same_file_is_refused(done_job: tuple[Path, str], tmp_path: Path) -> None:
    cwd, job_id = done_job
    with pytest.raises(ExportRefused, match="same file"):
        export_job(_url(cwd), job_id, tmp_path / "x.jsonl", errors=tmp_path / "x.jsonl")
    os.symlink(tmp_path / "y.jsonl", tmp_path / "link.jsonl")
    (tmp_path / "y.jsonl").write_text("")
    with pytest.raises(ExportRefused, match="same file"):
        export_job(_url(cwd), job_id, tmp_path / "y.jsonl", errors=tmp_path / "link.jsonl", force=True)


def test_out_onto_the_input_is_refused_even_with_force(done_job: tuple[Path, str]) -> None:
    cwd, job_id = done_job
    before = (cwd / "in.jsonl").read_bytes()
    line = one_line_error(rb(["export", job_id, "--out", "in.jsonl", "--force"], cwd))
    assert "input file" in line
    assert (cwd / "in.jsonl").read_bytes() == before


def test_existing_file_needs_force_and_is_replaced_whole(done_job: tuple[Path, str], tmp_path: Path) -> None:
    cwd, job_id = done_job
    out, errs = tmp_path / "r.jsonl", tmp_path / "e.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(ExportRefused, match="already exists; pass --force"):
        export_job(_url(cwd), job_id, out, errs)
    assert out.read_text() == "keep me\n" and not errs.exists()
    counts = export_job(_url(cwd), job_id, out, errs, force=True)
    assert counts == {"results": 12, "errors": 1}
    assert len(out.read_text().splitlines()) == 12 and len(errs.read_text().splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_export_leaves_the_old_file_and_no_temporary(
    done_job: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.ledger.export as export

    cwd, job_id = done_job
    out = tmp_path / "r.jsonl"
    out.write_text("old\n")

    def boom(item, job, **options):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "openai_line", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_job(_url(cwd), job_id, out, force=True)
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]


def test_a_running_job_needs_partial(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", ROWS)
    sub = rb(["submit", "in.jsonl", "--router", "length", "--json"], tmp_path)  # no broker: ingested, not run
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    line = one_line_error(rb(["export", job_id, "--out", "r.jsonl"], tmp_path))
    assert "not finished" in line and "--partial" in line
    assert not (tmp_path / "r.jsonl").exists()
    ok = rb(["export", job_id[:12], "--out", "r.jsonl", "--partial", "--json"], tmp_path)  # a unique id prefix works too
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["results"] == 0 and json.loads(ok.stdout)["job_id"] == job_id  # nothing answered yet
    refused = rb(["export", job_id, "--out", "r.jsonl", "--partial", "--json"], tmp_path)
    assert refused.returncode == 1 and "already exists" in json.loads(refused.stdout)["error"]


def test_refusals_are_config_errors_and_the_terminal_list_matches_the_states() -> None:
    assert issubclass(ExportRefused, ConfigError)
    assert set(_TERMINAL_JOB_STATES) == {s.value for s in JobState if s.terminal}


def test_ledger_files_of_urls(tmp_path: Path) -> None:
    db = (tmp_path / "l.db").resolve()
    assert ledger_files(f"sqlite:///{db}") == [db, db.with_name("l.db-wal"), db.with_name("l.db-shm"), db.with_name("l.db-journal")]
    assert ledger_files("sqlite://") == [] and ledger_files("sqlite:///:memory:") == []
    assert ledger_files("postgresql+psycopg://u@h/db") == []
