"""8 processes race for a cap that affords 1,000 reservations, on the real Postgres.

Every worker process reserves the worst case, marks its item sent and settles to the same
amount; one is SIGKILLed while it holds reservations. The database must admit exactly the
affordable number, never let spent + reserved exceed the cap, and the reaper must close
every hold the dead process left.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROCS = 8
PER_PROC = 500
AMOUNT = 1_000  # micro-USD per reservation
CAP_USD = 1_000 * AMOUNT / 1_000_000  # affords exactly 1,000


def _reserver(url: str, job_id: str, window_id: int, first_item: int, hold_forever: bool, ready) -> None:
    from jobs.money.budgets import open_reservation, settle
    from jobs.ledger.models import Item
    from jobs.ledger.session import session_scope

    admitted = 0
    for k in range(PER_PROC):
        item_id = first_item + k
        with session_scope(url) as s:
            hold = open_reservation(s, job_id, item_id, "sim-strong", AMOUNT, window_id, None)
            if hold is None:
                continue
            s.execute(update(Item).where(Item.id == item_id).values(state="sent", lease_until=datetime.now(UTC) - timedelta(seconds=1)))
        admitted += 1
        if hold_forever:
            if admitted == 20:
                ready.set()
            continue  # never settles: it will be killed holding money
        with session_scope(url) as s:
            settle(s, hold, AMOUNT, job_id=job_id)
            s.execute(update(Item).where(Item.id == item_id).values(state="succeeded", lease_until=None))
    if hold_forever:
        ready.set()
        time.sleep(600)


def test_eight_processes_never_overspend_and_the_reaper_closes_dead_holds(pg_url: str) -> None:
    from jobs.money.budgets import create_budget, current_window
    from jobs.ledger.migrate import upgrade
    from jobs.ledger.models import BudgetWindow, Item, Reservation
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.recovery import recover_lost

    upgrade(pg_url)
    with session_scope(pg_url) as s:
        s.execute(text(
            "INSERT INTO jobs (id, created_at, input_file, input_format, spec, router, strong_model, weak_model, state, phase) "
            "VALUES ('race', now(), 'x', 'jsonl', '{}', 'length', 'sim-strong', 'sim-weak', 'in_progress', 'generating')"
        ))
        s.execute(text(
            "INSERT INTO items (job_id, line_no, chunk, custom_id, prompt, state) "
            "SELECT 'race', g, g / 500, 'c' || g, 'p', 'routed' FROM generate_series(1, :n) AS g"
        ), {"n": PROCS * PER_PROC})
        first_id = s.scalar(select(func.min(Item.id)))
        budget = create_budget(s, "race", CAP_USD, "none")
        window_id = current_window(s, budget).id

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    procs = [
        ctx.Process(target=_reserver, args=(pg_url, "race", window_id, first_id + i * PER_PROC, i == 0, ready))
        for i in range(PROCS)
    ]
    for p in procs:
        p.start()
    assert ready.wait(120), "the victim never got its reservations"
    os.kill(procs[0].pid, signal.SIGKILL)
    for p in procs[1:]:
        p.join(180)
        assert p.exitcode == 0
    procs[0].join(10)

    with session_scope(pg_url) as s:
        w = s.get(BudgetWindow, window_id)
        assert w.spent_micro_usd + w.reserved_micro_usd <= w.cap_micro_usd
        victim_open = s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open"))
        assert victim_open >= 20
        total = s.scalar(select(func.count()).select_from(Reservation))
    assert total == 1_000, "exactly the affordable number of reservations is admitted"

    with session_scope(pg_url) as s:
        counts = recover_lost(s, now=datetime.now(UTC))
    assert counts["settled_at_reserved"] == victim_open
    with session_scope(pg_url) as s:
        assert s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open")) == 0
        w = s.get(BudgetWindow, window_id)
        assert w.reserved_micro_usd == 0
        assert w.spent_micro_usd == 1_000 * AMOUNT == w.cap_micro_usd
        attempts = s.scalar(text("SELECT coalesce(sum(cost_micro_usd), 0) FROM attempts WHERE error_class = 'LostInFlight'"))
        assert attempts == victim_open * AMOUNT
