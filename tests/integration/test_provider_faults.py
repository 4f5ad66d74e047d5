"""Provider failures end to end: a real run on Postgres against the simulated provider.

- 20% injected faults of every kind: every item succeeds, every retry is an attempt row,
  and nothing is sent again after its success.
- A 401 fails items at once with the provider's message; the job still ends.
- A planted API key appears nowhere: not in the ledger, the export, or the logs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from jobs.errors import ProviderError
from sqlalchemy import text

from jobs.ledger.session import session_scope
from jobs.ledger.export import export_job
from jobs.lifecycle.service import JobSpec, run

pytestmark = pytest.mark.integration

KEY = "sk-planted-e2e-5d1f0c9a7b3e"


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"Question {i}: how many {i % 13} are there?"}) + "\n")
    return path


@pytest.mark.slow
def test_twenty_percent_faults_of_every_kind_all_items_succeed(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    n = 5000
    rt = runtime_factory(pg_url, {
        "providers.sim.simulated": {"latency_ms": 2, "seed": 5, "fault_rate": 0.2, "hang_s": 30, "retry_after_s": 0.05},
        "providers.sim.concurrency": 128,
        "providers.sim.timeout_s": 1.0,
        "providers.sim.retry": {"max_attempts": 15, "backoff_base_s": 0.01, "backoff_cap_s": 0.2, "jitter": True},
    })
    st = run(rt, JobSpec(input_file=str(write_prompts(tmp_path / "in.jsonl", n)), router="random", strong_share=0.5,
                         chunk_size=1000))
    assert st.status == "completed" and (st.total, st.succeeded, st.failed) == (n, n, 0)

    with session_scope(pg_url) as s:
        per_class = dict(s.execute(text(
            "SELECT coalesce(error_class, 'ok'), count(*) FROM attempts GROUP BY 1")).all())
        # each kind of fault shows up as its own retried attempt
        assert per_class["ok"] == n
        for cls in ("rate_limited", "server_error", "read_timeout", "connection_dropped", "malformed_response"):
            assert per_class.get(cls, 0) > 50, per_class
        faults = sum(v for k, v in per_class.items() if k != "ok")
        assert 0.15 * n < faults < 0.4 * n  # ~20% of first tries, plus faults on retries
        # exactly one success per item, and it is its last attempt: nothing sent after success
        bad = s.execute(text("""
            SELECT a.item_id FROM attempts a
            JOIN (SELECT item_id, max(attempt_no) AS last FROM attempts WHERE error_class IS NULL GROUP BY item_id) ok
              ON ok.item_id = a.item_id
            WHERE a.attempt_no > ok.last
            UNION ALL
            SELECT item_id FROM attempts WHERE error_class IS NULL GROUP BY item_id HAVING count(*) <> 1
        """)).all()
        assert bad == []
        assert s.scalar(text("SELECT count(DISTINCT item_id) FROM attempts")) == n
        # missing usage was counted locally and flagged
        assert s.scalar(text("SELECT count(*) FROM attempts WHERE usage_estimated AND error_class IS NULL")) > 50


def test_401_fails_items_at_once_with_the_message_and_the_job_ends(
    tmp_path: Path, pg_url: str, runtime_factory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RB_TEST_WRONG_KEY", KEY)  # the sim expects another key: every call is a 401
    rt = runtime_factory(pg_url, {
        "providers.sim.simulated": {"latency_ms": 1, "api_key": "sk-the-right-one-0000"},
        "providers.sim.api_key_env": "RB_TEST_WRONG_KEY",
    })
    with pytest.raises(ProviderError, match="refused"):  # the pre-flight stops it before any work
        run(rt, JobSpec(input_file=str(write_prompts(tmp_path / "in.jsonl", 40)), router="random", strong_share=0.5))
    assert KEY not in caplog.text
    rt.settings.preflight = False  # a key revoked mid-job: each item fails at once
    st = run(rt, JobSpec(input_file=str(write_prompts(tmp_path / "in.jsonl", 40)), router="random", strong_share=0.5))
    assert st.status in ("completed", "failed")
    assert (st.total, st.succeeded, st.failed) == (40, 0, 40)
    with session_scope(pg_url) as s:
        rows = s.execute(text("SELECT item_id, count(*), min(status_code), min(error_message) FROM attempts GROUP BY item_id")).all()
        assert len(rows) == 40 and {(r[1], r[2]) for r in rows} == {(1, 401)}  # no retries
        assert all(r[3].startswith("HTTP 401: Incorrect API key provided") for r in rows)

        # the provider echoed the key in its message: it must be nowhere we keep or show
        tables = [t for (t,) in s.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
        for t in tables:
            dump = s.execute(text(f'SELECT coalesce(string_agg(row_to_json(x)::text, chr(10)), \'\') FROM "{t}" x')).scalar()
            assert KEY not in dump, f"planted key found in table {t}"
    out, errs = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    export_job(pg_url, st.job_id, out, errs)
    assert KEY not in out.read_text() and (not errs.exists() or KEY not in errs.read_text())
    assert out.read_text() == "" and "Incorrect API key provided" in errs.read_text()  # failed items: the error file only
    assert KEY not in caplog.text
