"""Two admissions on one named budget window must not deadlock over its alert, on Postgres.

Seen in CI (``test_weak_floor_postgres``): admission B finds that a call no longer fits
the window and records the window's 100% alert (a row unique by its dedupe key), then goes
on to reserve a cheaper call on the same window. Meanwhile admission A, which holds the
window row from its own reservation, records the same alert. A waited on B's uncommitted
key, B waited on A's row lock, and Postgres killed one of them with DeadlockDetected.
The alert is now written after its transaction commits, in a short transaction of its own,
so it never waits while the window is locked.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jobs.ledger.migrate import ensure_schema
from jobs.ledger.models import LedgerEvent
from jobs.ledger.session import get_engine, session_scope
from jobs.money.budgets import check_alerts, create_budget, current_window, try_reserve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CAP_USD = 0.01  # 10,000 micro-USD


def test_two_admissions_recording_the_same_alert_do_not_deadlock(pg_url: str) -> None:
    ensure_schema(pg_url)
    with session_scope(pg_url) as s:
        budget = create_budget(s, "labeling", CAP_USD, "monthly")
        window = current_window(s, budget).id
    engine = get_engine(pg_url)
    a, b = Session(engine), Session(engine)
    errors: list[BaseException] = []
    try:
        # B: a call of 20,000 no longer fits this window (its 100% alert), and nothing is locked yet
        assert not try_reserve(b, (window,), 20_000)
        check_alerts(b, window, None, needed=20_000)
        # A: reserves (locks the window row), then finds the next call no longer fits
        assert try_reserve(a, (window,), 6_000)

        def admission_a() -> None:
            try:
                check_alerts(a, window, None, needed=20_000)
                a.commit()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                a.rollback()

        thread_a = threading.Thread(target=admission_a)
        thread_a.start()
        thread_a.join(2)  # A either finished or waits on B's alert row
        # B: a cheaper call on the same window waits on A's row lock, if A still holds it
        b.execute(text("SET LOCAL lock_timeout = '20s'"))
        b_fits = try_reserve(b, (window,), 3_000)
        b.commit()
        thread_a.join(30)
        assert not thread_a.is_alive()
    finally:
        a.close()
        b.close()
    assert not errors, errors
    assert b_fits
    with session_scope(pg_url) as s:
        alerts = s.scalar(select(func.count()).select_from(LedgerEvent).where(LedgerEvent.dedupe_key == f"alert:{window}:100"))
        reserved = s.scalar(text("SELECT reserved_micro_usd FROM budget_windows WHERE id = :w"), {"w": window})
    assert alerts == 1
    assert reserved == 9_000
