"""``add_event(..., dedupe_key=...)`` says True exactly once per key on Postgres too.

The runner counts "the same error twice" by it (``jobs.pipeline.runner._chunk_failed``): a
first error must come back True, or a chunk is failed on its first error instead of its
second. With psycopg 3 an ``INSERT ... ON CONFLICT DO NOTHING`` reported a row count of -1,
so the first insert said False.
"""

from __future__ import annotations

from sqlalchemy import func, select

from jobs.ledger.migrate import ensure_schema
from jobs.ledger.models import LedgerEvent
from jobs.ledger.session import session_scope
from jobs.money.budgets import add_event


def test_a_dedupe_key_is_new_once_then_known(pg_url: str) -> None:
    ensure_schema(pg_url)
    with session_scope(pg_url) as s:
        first = add_event(s, "step_error", "generate of chunk 0 raised X", dedupe_key="k:1")
    with session_scope(pg_url) as s:
        second = add_event(s, "step_error", "generate of chunk 0 raised X", dedupe_key="k:1")
        rows = s.scalar(select(func.count()).select_from(LedgerEvent).where(LedgerEvent.dedupe_key == "k:1"))
    assert (first, second, rows) == (True, False, 1)
