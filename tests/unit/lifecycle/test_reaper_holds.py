"""The reaper and holds it did not open: extra calls of ``--adapt`` and a job's weak floor.

Two bugs found in review, each replayed here on the ledger:
- A twin or judge call (on an item that already has its outcome) stamps its hold ``sent``
  before it leaves. A worker that died after the call left its hold open on an item that is
  not ``sent``, and the reaper released it to zero: money that may have been billed was
  never counted, so a budget could be overspent.
- A hold closed from a copy read before the row changed (a floor shrinks as items draw on
  it) took the copy's amount off the windows, money still held by the items that drew it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, text

from jobs.ledger.models import Attempt, Budget, Item, Job, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.recovery import recover_lost
from jobs.lifecycle.service import JobSpec, run
from jobs.money.budgets import current_window, hold_of, release, settle, try_reserve
from tests.unit.jobs.test_budgets import write_prompts


def _finished_job(tmp_path: Path, sqlite_url: str, runtime_factory) -> tuple[str, int, int]:
    rt = runtime_factory(sqlite_url)
    data = write_prompts(tmp_path / "in.jsonl", 6)
    st = run(rt, JobSpec(input_file=str(data), router="length", budget_usd=1.0, max_tokens=32, chunk_size=3))
    assert st.status == "completed"
    with session_scope(sqlite_url) as s:
        item = s.scalars(select(Item.id).where(Item.job_id == st.job_id)).first()
        job = s.get_one(Job, st.job_id)
        window = current_window(s, s.get_one(Budget, job.job_budget_id)).id
    assert item is not None
    return st.job_id, item, window


def _open_hold(sqlite_url: str, job_id: str, item_id: int, window: int, amount: int, *, sent: bool) -> str:
    now = utcnow()
    rid = uuid.uuid4().hex
    with session_scope(sqlite_url) as s:
        assert try_reserve(s, (window,), amount)
        s.add(
            Reservation(
                id=rid, job_id=job_id, item_id=item_id, model="sim-weak", amount_micro_usd=amount, job_window_id=window,
                named_window_id=None, state="open", created_at=now, lease_until=now - timedelta(minutes=1),
                sent_at=now - timedelta(minutes=16) if sent else None,
            )
        )  # fmt: skip
    return rid


def _window(sqlite_url: str, window: int) -> tuple[int, int]:
    with session_scope(sqlite_url) as s:
        spent, reserved = s.execute(
            text("SELECT spent_micro_usd, reserved_micro_usd FROM budget_windows WHERE id = :w"), {"w": window}
        ).one()
    return int(spent), int(reserved)


def test_a_stamped_extra_call_whose_worker_died_is_charged_not_released(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    job_id, item_id, window = _finished_job(tmp_path, sqlite_url, runtime_factory)
    with session_scope(sqlite_url) as s:
        item_cost = s.get_one(Item, item_id).cost_micro_usd or 0
    spent, reserved = _window(sqlite_url, window)
    stamped = _open_hold(sqlite_url, job_id, item_id, window, 5_000, sent=True)
    unstamped = _open_hold(sqlite_url, job_id, item_id, window, 700, sent=False)
    with session_scope(sqlite_url) as s:
        counts = recover_lost(s)
    assert (counts["settled_at_reserved"], counts["released"]) == (1, 1)
    assert _window(sqlite_url, window) == (spent + 5_000, reserved)
    with session_scope(sqlite_url) as s:
        assert s.get_one(Reservation, stamped).state == "settled"
        assert s.get_one(Reservation, unstamped).state == "released"
        lost = s.scalar(
            select(func.sum(Attempt.cost_micro_usd)).where(Attempt.item_id == item_id, Attempt.error_class == "LostInFlight")
        )
        assert lost == 5_000 and s.get_one(Item, item_id).cost_micro_usd == item_cost + 5_000


def test_a_hold_is_closed_at_its_amount_now_and_the_reaper_spares_a_renewed_one(
    tmp_path: Path, sqlite_url: str, runtime_factory
) -> None:
    job_id, item_id, window = _finished_job(tmp_path, sqlite_url, runtime_factory)
    _, reserved = _window(sqlite_url, window)
    floor = _open_hold(sqlite_url, job_id, item_id, window, 5_000, sent=False)
    with session_scope(sqlite_url) as s:  # the reaper's copy, read while the lease has lapsed
        stale = hold_of(s.get_one(Reservation, floor))
        read_at = utcnow()
    with session_scope(sqlite_url) as s:  # meanwhile an admission draws 3,000 into an item's hold and renews
        row = s.get_one(Reservation, floor)
        row.amount_micro_usd, row.lease_until = 2_000, utcnow() + timedelta(minutes=15)
        s.add(
            Reservation(
                id=uuid.uuid4().hex, job_id=job_id, item_id=item_id, model="sim-weak", amount_micro_usd=3_000,
                job_window_id=window, named_window_id=None, state="open", created_at=utcnow(),
                lease_until=utcnow() + timedelta(minutes=15),
            )
        )  # fmt: skip
    with session_scope(sqlite_url) as s:
        release(s, stale, "reaper", lapsed_before=read_at)
    assert _window(sqlite_url, window)[1] == reserved + 5_000  # renewed: left alone
    with session_scope(sqlite_url) as s:
        release(s, stale, "job ended")
    assert _window(sqlite_url, window)[1] == reserved + 3_000  # the floor's 2,000 back; the item's 3,000 still held


def test_a_failed_steps_cleanup_leaves_other_calls_in_flight_and_the_reaper_settles_them_once(
    tmp_path: Path, sqlite_url: str, runtime_factory
) -> None:
    """A generate step that fails recovers what it claimed (``force``, no lease check, by its
    own claim lease): its cleanup used to cover the whole job, then its chunk, so it could
    charge a judge step's calls in flight on items with an outcome at their worst case. The
    reaper's own pass (lapsed leases only) settles such a stamped hold, once."""
    job_id, first, window = _finished_job(tmp_path, sqlite_url, runtime_factory)
    with session_scope(sqlite_url) as s:
        other = s.scalars(select(Item.id).where(Item.job_id == job_id, Item.chunk != s.get_one(Item, first).chunk)).first()
    assert other is not None
    here = _open_hold(sqlite_url, job_id, first, window, 5_000, sent=True)
    there = _open_hold(sqlite_url, job_id, other, window, 4_000, sent=True)
    with session_scope(sqlite_url) as s:
        counts = recover_lost(s, job_id=job_id, force=True, claim=utcnow() + timedelta(minutes=15))
    assert counts["settled_at_reserved"] == counts["released"] == 0
    with session_scope(sqlite_url) as s:
        assert (s.get_one(Reservation, here).state, s.get_one(Reservation, there).state) == ("open", "open")
        s.get_one(Reservation, there).lease_until = utcnow() + timedelta(minutes=15)  # its worker is alive
    with session_scope(sqlite_url) as s:
        counts = recover_lost(s, job_id=job_id)
    assert counts["settled_at_reserved"] == 1
    with session_scope(sqlite_url) as s:
        assert (s.get_one(Reservation, here).state, s.get_one(Reservation, there).state) == ("settled", "open")
        stale = hold_of(s.get_one(Reservation, there))
    with session_scope(sqlite_url) as s:  # its worker settles it meanwhile: the reaper's settle says so
        assert settle(s, stale, 3_900, job_id=job_id)
    with session_scope(sqlite_url) as s:
        assert not settle(s, stale, 4_000, job_id=job_id, lapsed_before=utcnow())
    assert _window(sqlite_url, window)[0] >= 5_000 + 3_900


def test_a_hold_stamped_after_the_reaper_read_it_is_charged_not_released(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch
) -> None:
    """The reaper read a lapsed claim's holds, found them unstamped, and released them. A
    sender stamping one in between (its call then left) had its call's money released to
    zero: the answer's settle found the hold closed and the cost never reached the window.
    On Postgres the reaper now locks the holds it reads; on SQLite, where that lock is no
    lock, a release only takes a hold that is still unstamped."""
    import jobs.lifecycle.recovery as recovery
    from jobs.lifecycle.states import ItemState

    job_id, item_id, window = _finished_job(tmp_path, sqlite_url, runtime_factory)
    rid = _open_hold(sqlite_url, job_id, item_id, window, 700, sent=False)
    with session_scope(sqlite_url) as s:
        item = s.get_one(Item, item_id)
        item.state, item.lease_until = ItemState.SENT, utcnow() - timedelta(minutes=1)
    spent_before, reserved_before = _window(sqlite_url, window)
    real_release = recovery.release

    def stamped_meanwhile(s, hold, **kwargs):  # the sender's group commit lands between read and release
        with session_scope(sqlite_url) as other:
            other.execute(text("UPDATE reservations SET sent_at = :t WHERE id = :r"), {"t": utcnow(), "r": rid})
        return real_release(s, hold, **kwargs)

    monkeypatch.setattr(recovery, "release", stamped_meanwhile)
    with session_scope(sqlite_url) as s:
        got = recover_lost(s, job_id=job_id)
    assert got["released"] == 0 and got["settled_at_reserved"] == 1
    spent, reserved = _window(sqlite_url, window)
    assert (spent - spent_before, reserved_before - reserved) == (700, 700), "charged at the reserved amount"
    with session_scope(sqlite_url) as s:
        assert s.get_one(Reservation, rid).state == "settled"
        lost = s.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.item_id == item_id, Attempt.error_class == "LostInFlight")
        )
    assert lost == 1
