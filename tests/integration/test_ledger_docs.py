"""Every SQL example in docs/ledger.md runs against a populated ledger, as a read-only role."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from jobs.ledger.session import get_engine
from jobs.lifecycle.service import JobSpec, run

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "ledger.md"


def doc_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_at_least_ten_queries() -> None:
    assert len(doc_queries()) >= 10


@pytest.fixture
def populated(tmp_path: Path, pg_url: str, runtime_factory) -> str:
    data = tmp_path / "in.jsonl"
    with data.open("w") as fh:
        for i in range(120):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} " + "why " * (i % 25)}) + "\n")
    faulty = runtime_factory(
        pg_url, {"providers.sim.simulated.faults": {"500": 0.1, "429": 0.1}, "providers.sim.simulated.retry_after_s": 0.01}
    )
    run(faulty, JobSpec(input_file=str(data), router="length", strong_share=0.5, budget_usd=0.03, max_tokens=32))
    plain = runtime_factory(pg_url)
    run(plain, JobSpec(input_file=str(data), router="random:seed=1", strong_share=0.3))
    return pg_url


def test_every_documented_query_runs_for_a_readonly_analyst(populated: str) -> None:
    from jobs.ledger.views import grant_readonly

    grant_readonly(populated, "rb_test_analyst")
    engine = get_engine(populated)
    results = []
    with engine.connect() as conn:
        conn.execute(text("SET ROLE rb_test_analyst"))
        for sql in doc_queries():
            results.append(conn.execute(text(sql)).fetchall())
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("DELETE FROM attempts"))
        conn.rollback()
    empty = [i + 1 for i, rows in enumerate(results) if not rows]
    assert empty == [], f"queries {empty} returned nothing on a populated ledger"
    reconciliation = next(
        rows for sql, rows in zip(doc_queries(), results, strict=True) if "AS job_budget_spent_micro_usd" in sql
    )
    for job_id, attempts, items, budget_spent in reconciliation:
        assert attempts == items
        assert budget_spent is None or budget_spent == attempts
    with engine.begin() as conn:
        conn.execute(text("REASSIGN OWNED BY rb_test_analyst TO postgres"))
        conn.execute(text("DROP OWNED BY rb_test_analyst"))
        conn.execute(text("DROP ROLE rb_test_analyst"))
