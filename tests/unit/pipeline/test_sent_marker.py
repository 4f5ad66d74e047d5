"""A crash charges only the holds whose calls may have reached a provider (#10 item 3).

The admission gate takes holds in batches ahead of the senders, so when a generate worker
dies some holds belong to calls that never started. Senders stamp ``reservations.sent_at``
(group commits, before the call leaves); recovery settles only stamped holds at the
reserved amount and releases the others to zero without an attempt.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from jobs.ledger.models import Attempt, Item, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.recovery import recover_lost
from jobs.lifecycle.states import ItemState
from jobs.money.budgets import FLOOR_PREFIX
from jobs.pipeline.sent import SentLog
from tests.unit.pipeline import test_fanout as fanout_tests
from tests.unit.pipeline.test_fanout import claim, ledger, run_async, submit_routed

sends = fanout_tests.sends  # the fixture

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


def _crash_mid_fanout(fan, sends, wait_calls: int) -> None:
    """Run the fan-out until ``wait_calls`` calls are at the provider, then drop it the way
    a killed process does: calls in flight never come back, nothing more is written."""

    async def main() -> None:
        task = asyncio.create_task(fan.run())
        while len(sends.calls) < wait_calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the senders are inside their (slow) calls
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_async(main(), timeout=30)


def test_a_crash_charges_only_the_holds_of_calls_that_went_out(tmp_path: Path, db_url: str, runtime_factory, sends) -> None:
    # 20 items: an admission batch gets holds, the rest are claimed but never admitted;
    # two senders, each stuck in a 5 s call when the worker "dies".
    rt = runtime_factory(db_url, {"providers.sim.concurrency": 2, "providers.sim.simulated.latency_ms": 5000})
    job_id = submit_routed(rt, tmp_path, 20, strong_share=0.5, budget_usd=1.0, max_tokens=32)
    fan = sends.watch(claim(rt, job_id))
    _crash_mid_fanout(fan, sends, wait_calls=2)

    sent = {c[0] for c in sends.calls}
    assert len(sent) == 2
    with session_scope(db_url) as s:
        held = s.scalar(
            select(func.count())
            .select_from(Reservation)
            .where(Reservation.job_id == job_id, Reservation.state == "open", ~Reservation.id.startswith(FLOOR_PREFIX))
        )
        assert held > 2, "admission takes holds ahead of the two senders"
        stamped = s.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.job_id == job_id, Reservation.sent_at.is_not(None))
        )
        assert stamped == 2, "each call's hold is stamped before it leaves, and only those"
        held_for_sent = int(
            s.scalar(
                select(func.sum(Reservation.amount_micro_usd))
                .join(Item, Item.id == Reservation.item_id)
                .where(Reservation.job_id == job_id, Item.custom_id.in_(sent), ~Reservation.id.startswith(FLOOR_PREFIX))
            )
        )
        s.execute(update(Item).where(Item.job_id == job_id).values(lease_until=utcnow() - timedelta(seconds=1)))

    with session_scope(db_url) as s:
        got = recover_lost(s, job_id=job_id)
    assert got["lost_items"] == 2 and got["settled_at_reserved"] == 2
    assert got["released"] == held - 2

    after = ledger(db_url, job_id)
    with session_scope(db_url) as s:  # the job's weak floor (if any) stays: the job goes on
        floor = s.scalar(
            select(func.coalesce(func.sum(Reservation.amount_micro_usd), 0)).where(
                Reservation.job_id == job_id, Reservation.state == "open", Reservation.id.startswith(FLOOR_PREFIX)
            )
        )
        floors = s.scalar(
            select(func.count()).where(
                Reservation.job_id == job_id, Reservation.state == "open", Reservation.id.startswith(FLOOR_PREFIX)
            )
        )
        kept, drawn = s.execute(  # the released holds keep their floor shares for the items' next admission
            select(
                func.coalesce(func.sum(Reservation.floor_kept_micro_usd), 0),
                func.coalesce(func.sum(Reservation.floor_draw_micro_usd), 0),
            ).where(Reservation.job_id == job_id, Reservation.state == "released")
        ).one()
    assert kept == drawn
    assert after["reserved"] == floor + kept and after["open_holds"] == floors
    assert after["spent"] == held_for_sent == after["attempts_cost"] == after["items_cost"]
    assert after["attempted"] == sent, "only the calls that went out have (LostInFlight) attempts"
    assert after["states"] == {ItemState.ROUTED: 20}
    with session_scope(db_url) as s:
        classes = set(s.scalars(select(Attempt.error_class).where(Attempt.job_id == job_id)))
    assert classes == {"LostInFlight"}


def test_sent_log_group_commits_and_fails_only_its_own_flush() -> None:
    writes: list[list[str]] = []
    fail_next = {"on": False}

    async def write(ids: list[str]) -> set[str]:
        await asyncio.sleep(0.01)
        if fail_next["on"]:
            fail_next["on"] = False
            raise RuntimeError("database away")
        writes.append(ids)
        return set(ids)

    async def main() -> None:
        log = SentLog(write)
        await asyncio.gather(*(log.mark(f"r{i}") for i in range(50)))
        assert sorted(r for batch in writes for r in batch) == sorted(f"r{i}" for i in range(50))
        assert len(writes) < 10, f"{len(writes)} writes for 50 marks: not grouped"

        fail_next["on"] = True
        outcome = await asyncio.gather(*(log.mark(f"x{i}") for i in range(5)), return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcome), "a failed flush must not let its senders go"
        await log.mark("y")  # the next flush works again
        assert writes[-1] == ["y"]

    run_async(main())


def test_a_hold_closed_before_its_call_leaves_is_not_sent(tmp_path: Path, db_url: str, runtime_factory) -> None:
    """A sender whose claim outlived its lease (a step slower than ``send_lease_s``) used to
    stamp and send a hold the reaper had already released, its item routed again: the call
    went out with no money held for it, and its cost never reached the windows. The stamp
    now finds the hold closed and the call is withdrawn before it leaves."""
    from jobs.money.budgets import hold_of, release

    rt = runtime_factory(db_url, {"providers.sim.concurrency": 2})
    job_id = submit_routed(rt, tmp_path, 10, strong_share=0.5, budget_usd=1.0)
    fan = claim(rt, job_id)
    real = fan._mark_sent
    closed: dict[str, str] = {}

    async def reaper_first(ids: list[str]) -> set[str]:
        if not closed:  # the claim's lease lapsed: the reaper released this hold, freed its item
            with session_scope(db_url) as s:
                res = s.get_one(Reservation, ids[0])
                release(s, hold_of(res), note="claimed, never sent: released to zero")
                item = s.get_one(Item, res.item_id)
                item.state, item.lease_until = ItemState.ROUTED, None
                closed[ids[0]] = item.custom_id
        return await real(ids)

    fan._mark_sent = reaper_first  # type: ignore[method-assign]
    run_async(fan.run())
    (withdrawn,) = closed.values()
    got = ledger(db_url, job_id)
    assert withdrawn not in got["attempted"], "no call went out for the closed hold"
    assert got["states"] == {ItemState.SUCCEEDED: 9, ItemState.ROUTED: 1}
    assert got["spent"] == got["attempts_cost"] == got["items_cost"]
