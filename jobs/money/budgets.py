"""Budgets that cannot be overspent: reserve the worst case, call, settle to the real cost.

The promise rests on the database, not on process discipline: money moves only through
conditional UPDATEs (``... WHERE spent + reserved + :amount <= cap``), and a CHECK
constraint on ``budget_windows`` makes ``spent + reserved <= cap`` a fact that no bug in
any number of concurrent workers can break. A named budget with a window (daily, weekly,
monthly) keeps one ``budget_windows`` row per period, so history stays and each period has
its own cap.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Insert, case, event, func, or_, select, text, update
from sqlalchemy.orm import Session, SessionTransaction

from jobs.errors import BudgetError
from jobs.ledger.models import Budget, BudgetWindow, Job, LedgerEvent, Reservation
from jobs.ledger.session import rowcount
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import JOB_TERMINAL, JobState
from jobs.money.pricing import micro_to_usd, usd_to_micro
from jobs.notify.webhooks import Notification, queue_after_commit

log = logging.getLogger("routebatch.budget")

WINDOWS = ("none", "daily", "weekly", "monthly")
ALERT_LEVELS = (50, 80, 100)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RESERVATION_LEASE = timedelta(minutes=15)


def window_start(window: str, now: datetime | None = None) -> datetime:
    """Start of the period containing ``now`` (UTC): midnight, Monday, or the 1st."""
    now = (now or utcnow()).astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "none":
        return EPOCH
    if window == "daily":
        return day
    if window == "weekly":
        return day - timedelta(days=day.weekday())
    if window == "monthly":
        return day.replace(day=1)
    raise BudgetError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")


def _insert_ignore(s: Session, table, values: dict) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on Postgres and SQLite alike; True if a row went in.

    Told by RETURNING, not by the row count: psycopg 3 reports -1 for this statement."""
    stmt: Insert
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).values(**values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    return s.execute(stmt.returning(*table.primary_key.columns)).first() is not None


# ---------------------------------------------------------------- budgets


def create_budget(s: Session, name: str, cap_usd: float, window: str = "none", kind: str = "named") -> Budget:
    if window not in WINDOWS:
        raise BudgetError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
    if cap_usd < 0:
        raise BudgetError("the cap must be >= 0")
    if s.scalar(select(Budget.id).where(Budget.name == name)) is not None:
        raise BudgetError(f"budget {name!r} already exists (use `budget raise`)")
    budget = Budget(name=name, kind=kind, cap_micro_usd=usd_to_micro(cap_usd), window=window, created_at=utcnow())
    s.add(budget)
    s.flush()
    current_window(s, budget)
    return budget


def get_budget(s: Session, name: str) -> Budget:
    budget = s.scalar(select(Budget).where(Budget.name == name))
    if budget is None:
        raise BudgetError(f"no budget {name!r}")
    return budget


def current_window(s: Session, budget: Budget, now: datetime | None = None) -> BudgetWindow:
    """The window row for ``now``, created on first use (concurrently safe)."""
    start = window_start(budget.window, now)
    _insert_ignore(
        s, BudgetWindow.__table__, {"budget_id": budget.id, "window_start": start, "cap_micro_usd": budget.cap_micro_usd}
    )
    return s.scalars(select(BudgetWindow).where(BudgetWindow.budget_id == budget.id, BudgetWindow.window_start == start)).one()


def raise_budget(s: Session, name: str, cap_usd: float) -> Budget:
    """Change the cap from now on; the current window's cap too (never below what it holds)."""
    budget = get_budget(s, name)
    cap = usd_to_micro(cap_usd)
    window = current_window(s, budget)
    held = s.execute(
        select(BudgetWindow.spent_micro_usd, BudgetWindow.reserved_micro_usd).where(BudgetWindow.id == window.id)
    ).one()
    if cap < held[0] + held[1]:
        raise BudgetError(
            f"budget {name!r}: cap ${cap_usd} is below what this window already spent and holds "
            f"(${micro_to_usd(held[0] + held[1]):.6f})"
        )
    budget.cap_micro_usd = cap
    s.execute(update(BudgetWindow).where(BudgetWindow.id == window.id).values(cap_micro_usd=cap))
    return budget


def budget_report(s: Session, budget: Budget) -> dict:
    window = current_window(s, budget)
    s.refresh(window)
    cap = window.cap_micro_usd
    return {
        "name": budget.name,
        "kind": budget.kind,
        "window": budget.window,
        "window_start": window.window_start.isoformat(),
        "cap_usd": micro_to_usd(cap),
        "spent_usd": micro_to_usd(window.spent_micro_usd),
        "reserved_usd": micro_to_usd(window.reserved_micro_usd),
        "available_usd": micro_to_usd(cap - window.spent_micro_usd - window.reserved_micro_usd),
        "overdraft_usd": micro_to_usd(window.overdraft_micro_usd),
        "used_pct": round(100.0 * window.spent_micro_usd / cap, 2) if cap else 0.0,
    }


# ---------------------------------------------------------------- reserve / settle


@dataclass(frozen=True)
class Hold:
    """An open reservation, as the generate step keeps it until settlement."""

    reservation_id: str
    amount: int
    window_ids: tuple[int, ...]


def try_reserve(s: Session, window_ids: tuple[int, ...], amount: int) -> bool:
    """Hold ``amount`` on every window, or on none (a savepoint undoes a partial hold)."""
    if amount < 0:
        raise BudgetError("a reservation cannot be negative")
    savepoint = s.begin_nested()
    for wid in window_ids:
        won = rowcount(
            s.execute(
                text(
                    "UPDATE budget_windows SET reserved_micro_usd = reserved_micro_usd + :a "
                    "WHERE id = :w AND spent_micro_usd + reserved_micro_usd + :a <= cap_micro_usd"
                ),
                {"a": amount, "w": wid},
            )
        )
        if won != 1:
            savepoint.rollback()
            return False
    savepoint.commit()
    return True


def open_reservation(
    s: Session, job_id: str, item_id: int, model: str, amount: int, job_window: int | None, named_window: int | None
) -> Hold | None:
    """Reserve and record; None when a window cannot afford ``amount``."""
    windows = tuple(w for w in (job_window, named_window) if w is not None)
    if not try_reserve(s, windows, amount):
        return None
    return _record_hold(s, job_id, item_id, model, amount, job_window, named_window)


def _record_hold(
    s: Session,
    job_id: str,
    item_id: int,
    model: str,
    amount: int,
    job_window: int | None,
    named_window: int | None,
    floor_draw: int = 0,
) -> Hold:
    windows = tuple(w for w in (job_window, named_window) if w is not None)
    rid = uuid.uuid4().hex
    now = utcnow()
    s.add(
        Reservation(
            id=rid,
            job_id=job_id,
            item_id=item_id,
            model=model,
            amount_micro_usd=amount,
            job_window_id=job_window,
            named_window_id=named_window,
            state="open",
            created_at=now,
            lease_until=now + RESERVATION_LEASE,
            floor_draw_micro_usd=floor_draw,
        )
    )
    return Hold(rid, amount, windows)


# ---------------------------------------------------------------- the weak floor

FLOOR_PREFIX = "floor-"
FLOOR_MODES = ("covered", "short", "off")
"""``covered``: the floor holds the weak worst case of every item not yet admitted;
``short``: the cap could not cover it, so it holds what there was and the job answers weak
only (``--on-exhausted downgrade``); ``off``: no floor (``--on-exhausted skip`` on a cap
that cannot cover it)."""


def floor_id(job_id: str) -> str:
    """The one floor reservation of a job: a fixed id, so concurrent workers find one row."""
    return FLOOR_PREFIX + hashlib.blake2b(job_id.encode("utf-8"), digest_size=16).hexdigest()


@dataclass
class Floor:
    """A job's weak floor as one admission transaction holds it (its row locked).

    ``amount`` is what is reserved for it on every window of ``window_ids`` right now;
    draws move money from the floor to an item's hold without touching the windows.
    """

    reservation_id: str
    amount: int
    window_ids: tuple[int, ...]
    mode: str
    job_window: int | None
    named_window: int | None

    @property
    def holds(self) -> bool:
        return self.mode != "off"


def lock_floor(s: Session, job_id: str, anchor_item_id: int | None = None) -> Reservation | None:
    """The job's floor row, locked for this transaction (a Postgres row lock; SQLite
    serialises writers anyway), or None when it has none.

    With ``anchor_item_id`` a placeholder row (holding nothing) is created first when there
    is none: a concurrent creator makes this INSERT wait until it commits, so two workers
    admitting a job's first batches at once end up taking turns on one locked row instead
    of each reserving a floor of its own.
    """
    rid = floor_id(job_id)
    if anchor_item_id is not None:
        now = utcnow()
        _insert_ignore(
            s,
            Reservation.__table__,
            {
                "id": rid,
                "job_id": job_id,
                "item_id": anchor_item_id,
                "model": "floor:none",
                "amount_micro_usd": 0,
                "state": "released",
                "settled_micro_usd": 0,
                "created_at": now,
                "lease_until": now,
                "settled_at": now,
            },
        )
    return s.scalars(
        select(Reservation).where(Reservation.id == rid).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()


def floor_of(res: Reservation) -> Floor:
    """The floor a floor row stands for: ``open`` holds ``amount``; ``settled`` was drawn to
    zero (or is ``off``) in this run of the job and holds nothing."""
    held = res.state == "open"
    windows = tuple(w for w in (res.job_window_id, res.named_window_id) if w)
    return Floor(
        res.id,
        res.amount_micro_usd if held else 0,
        windows,
        res.model.removeprefix("floor:"),
        res.job_window_id,
        res.named_window_id,
    )


def room_of(s: Session, window_ids: tuple[int, ...]) -> int:
    """What the tightest window can still reserve now."""
    if not window_ids:
        return 2**62
    rows = s.execute(
        select(BudgetWindow.cap_micro_usd - BudgetWindow.spent_micro_usd - BudgetWindow.reserved_micro_usd).where(
            BudgetWindow.id.in_(window_ids)
        )
    ).scalars()
    return int(min(rows))


def room_without_item_holds(s: Session, window_ids: tuple[int, ...], exclude_floor: str | None = None) -> int:
    """What the tightest window could reserve once every item hold settled at zero: the
    floors of jobs stay held (all of them but ``exclude_floor``, which the caller counts),
    and so do the floor shares that released holds keep for them."""
    if not window_ids:
        return 2**62
    best: int | None = None
    for wid in window_ids:
        cap, spent = s.execute(
            select(BudgetWindow.cap_micro_usd, BudgetWindow.spent_micro_usd).where(BudgetWindow.id == wid)
        ).one()
        floors = s.scalar(
            select(func.coalesce(func.sum(Reservation.amount_micro_usd), 0)).where(
                Reservation.state == "open",
                Reservation.id.startswith(FLOOR_PREFIX),
                Reservation.id != (exclude_floor or ""),
                or_(Reservation.job_window_id == wid, Reservation.named_window_id == wid),
            )
        )
        kept = s.scalar(
            select(func.coalesce(func.sum(Reservation.floor_kept_micro_usd), 0)).where(
                Reservation.state != "open",
                Reservation.floor_draw_micro_usd > 0,  # the partial index of closed holds that owe a share
                or_(Reservation.job_window_id == wid, Reservation.named_window_id == wid),
            )
        )
        room = int(cap) - int(spent) - int(floors or 0) - int(kept or 0)
        best = room if best is None else min(best, room)
    return int(best if best is not None else 2**62)


def open_floor(
    s: Session,
    job_id: str,
    anchor_item_id: int,
    amount: int,
    mode: str,
    job_window: int | None,
    named_window: int | None,
) -> Floor | None:
    """Hold ``amount`` for the job's floor on its windows (both or neither) and record it in
    the job's floor row, created or reopened; None when the windows cannot afford it.

    The caller holds the row lock (:func:`lock_floor`) and has released any earlier floor.
    """
    if mode not in FLOOR_MODES:
        raise BudgetError(f"unknown floor mode {mode!r}")
    windows = tuple(w for w in (job_window, named_window) if w is not None)
    held = amount if mode != "off" else 0
    if held and not try_reserve(s, windows, held):
        return None
    now = utcnow()
    rid = floor_id(job_id)
    values = {
        "model": f"floor:{mode}",
        "amount_micro_usd": held,
        "job_window_id": job_window,
        "named_window_id": named_window,
        "state": "open" if mode != "off" else "settled",
        "settled_micro_usd": None if mode != "off" else 0,
        "note": "weak floor: the cheapest answer of every item not yet admitted",
        "lease_until": now + RESERVATION_LEASE,
        "settled_at": None if mode != "off" else now,
    }
    existing = s.get(Reservation, rid)
    if existing is None:
        s.add(Reservation(id=rid, job_id=job_id, item_id=anchor_item_id, created_at=now, **values))
    else:
        for key, value in values.items():
            setattr(existing, key, value)
    s.flush()
    return Floor(rid, held, windows, mode, job_window, named_window)


def save_floor(s: Session, floor: Floor) -> None:
    """Write the floor's drawn-down amount and renew its lease (a floor whose job stopped
    admitting for a whole lease is released by the reaper, and reopened on the next batch).

    A floor drawn to zero is closed (``settled`` at zero): every item it was kept for has
    its own hold now, so an open row would only keep the job's books from reading empty.
    """
    if not floor.holds:
        return
    now = utcnow()
    if floor.amount <= 0:
        values = {"amount_micro_usd": 0, "state": "settled", "settled_micro_usd": 0, "settled_at": now}
    else:
        values = {"amount_micro_usd": floor.amount, "lease_until": now + RESERVATION_LEASE}
    s.execute(update(Reservation).where(Reservation.id == floor.reservation_id, Reservation.state == "open").values(**values))


def shrink_floor(s: Session, floor: Floor, amount: int) -> None:
    """Give ``amount`` of the floor back to the windows (an item it was kept for will not be
    answered); the caller saves the floor afterwards."""
    amount = min(amount, floor.amount)
    if amount <= 0:
        return
    _unreserve(s, floor.window_ids, amount)
    floor.amount -= amount


def _unreserve(s: Session, window_ids: tuple[int, ...], amount: int) -> None:
    """Money held on the windows by no hold any more goes back to their free room."""
    for wid in window_ids:
        s.execute(
            text("UPDATE budget_windows SET reserved_micro_usd = reserved_micro_usd - :a WHERE id = :w"),
            {"a": amount, "w": wid},
        )


def release_floor(s: Session, job_id: str, note: str = "job no longer admits: floor released") -> int:
    """Release what the job's floor still holds, and the shares its released holds kept for
    it (any terminal state, a changed window); returns the amount given back."""
    res = lock_floor(s, job_id)
    kept = sum(share.kept for share in claim_owed_shares(s, job_id, kept_only=True) if give_back_kept(s, share))
    if res is None or res.state != "open":
        return kept
    amount = res.amount_micro_usd
    release(s, hold_of(res), note=note)
    return amount + kept


EXTRA_CALL_NOTE = "sent: adapt "


def extra_call_note(purpose: str) -> str:
    """The note of a stamped hold of an extra call (an ``--adapt`` twin or judge call): it
    names the call's purpose until the hold closes, so a reaper charging the call as lost in
    flight books it as what it was."""
    return EXTRA_CALL_NOTE + purpose


def purpose_of_note(note: str | None) -> str | None:
    """The purpose :func:`extra_call_note` wrote; None for any other note."""
    if note and note.startswith(EXTRA_CALL_NOTE):
        return note[len(EXTRA_CALL_NOTE) :]
    return None


@dataclass(frozen=True)
class OwedShare:
    """The floor share of a closed item hold whose item may be admitted again: ``draw`` came
    from the floor, and ``kept`` of it is still reserved on ``window_ids`` (a release while
    the job admitted); the rest was given back, or spent (a call lost in flight)."""

    draw: int
    kept: int
    window_ids: tuple[int, ...]
    item_state: str


def claim_owed_shares(
    s: Session, job_id: str | None = None, *, kept_only: bool = False, ended_jobs: bool = False
) -> list[OwedShare]:
    """The owed floor shares of the job's closed holds (or, with ``ended_jobs``, of every job
    that has ended), each marked paid in the same write: a concurrent claimer re-reads the
    row, finds nothing owed, and counts none of it twice. The caller moves the shares.

    With ``ended_jobs`` (the reaper) rows another transaction holds are skipped, not waited
    for: an admission holding them goes on to lock windows, and a reaper waiting on it
    while holding windows itself would deadlock; a skipped row is claimed at a later tick."""
    from jobs.ledger.models import Item

    rows = (
        select(
            Reservation.id,
            Reservation.floor_draw_micro_usd,
            Reservation.floor_kept_micro_usd,
            Reservation.job_window_id,
            Reservation.named_window_id,
            Item.state,
        )
        .join(Item, Item.id == Reservation.item_id)
        .where(Reservation.state != "open", Reservation.floor_draw_micro_usd > 0)
    )
    if job_id is not None:
        rows = rows.where(Reservation.job_id == job_id)
    if kept_only:
        rows = rows.where(Reservation.floor_kept_micro_usd > 0)
    if ended_jobs:
        rows = (
            rows.join(Job, Job.id == Reservation.job_id)
            .where(Job.state.in_([st.value for st in JOB_TERMINAL]))
            .with_for_update(of=Reservation, skip_locked=True)
        )
    found = {r.id: r for r in s.execute(rows)}
    if not found:
        return []
    claimed = s.scalars(
        update(Reservation)
        .where(Reservation.id.in_(list(found)), Reservation.floor_draw_micro_usd > 0)
        .values(floor_draw_micro_usd=0, floor_kept_micro_usd=0)
        .returning(Reservation.id),
        execution_options={"synchronize_session": False},
    ).all()
    return [
        OwedShare(
            int(found[rid].floor_draw_micro_usd),
            int(found[rid].floor_kept_micro_usd),
            tuple(w for w in (found[rid].job_window_id, found[rid].named_window_id) if w),
            str(found[rid].state),
        )
        for rid in claimed
    ]


def give_back_kept(s: Session, share: OwedShare) -> bool:
    """A kept share nobody will draw on goes back to its windows' free room."""
    if share.kept <= 0:
        return False
    _unreserve(s, share.window_ids, share.kept)
    return True


def release_kept_of_ended_jobs(s: Session) -> int:
    """Kept shares of jobs that have ended: a release that committed while its job's end
    was being written (after the end's own clean-up read) left one; the reaper gives it
    back. Returns how many.

    Run in a transaction of its own, before any other window lock: it locks holds, then
    windows, one window at a time in id order, as an admission does (floor, holds, windows)."""
    shares = [share for share in claim_owed_shares(s, kept_only=True, ended_jobs=True) if share.kept > 0]
    per_window: dict[int, int] = {}
    for share in shares:
        for wid in share.window_ids:
            per_window[wid] = per_window.get(wid, 0) + share.kept
    for wid in sorted(per_window):
        _unreserve(s, (wid,), per_window[wid])
    return len(shares)


def keep_in_floor(s: Session, floor: Floor, amount: int) -> None:
    """Put ``amount``, already reserved on the floor's windows (a kept share), into the
    floor, reopening its row if it had been drawn to zero. The caller holds the row lock
    and saves the floor afterwards."""
    if amount <= 0:
        return
    _reopen(s, floor)
    floor.amount += amount


def open_reservation_from_floor(
    s: Session,
    job_id: str,
    item_id: int,
    model: str,
    amount: int,
    floor: Floor,
    draw: int,
) -> Hold | None:
    """An item's hold of ``amount``, ``draw`` of it taken from the job's floor (already held
    on the windows) and the rest reserved conditionally, as :func:`open_reservation` does;
    None when the rest does not fit. The caller saves the floor afterwards."""
    draw = max(0, min(draw, amount, floor.amount if floor.holds else 0))
    if amount > draw and not try_reserve(s, floor.window_ids, amount - draw):
        return None
    floor.amount -= draw
    return _record_hold(s, job_id, item_id, model, amount, floor.job_window, floor.named_window, draw)


def refill_floor(s: Session, floor: Floor, amount: int) -> int:
    """Hold up to ``amount`` more for the floor, as far as the windows' free room allows, and
    reopen its row if it had been drawn to zero; returns what was added. The caller holds
    the row lock and saves the floor afterwards."""
    if not floor.holds or amount <= 0:
        return 0
    for _ in range(3):  # the room can shrink between the read and the hold (another job reserving)
        got = min(amount, max(room_of(s, floor.window_ids), 0))
        if got <= 0:
            return 0
        if try_reserve(s, floor.window_ids, got):
            break
    else:
        return 0
    amount = got
    _reopen(s, floor)
    floor.amount += amount
    return amount


def _reopen(s: Session, floor: Floor) -> None:
    s.execute(
        update(Reservation)
        .where(Reservation.id == floor.reservation_id, Reservation.state != "open")
        .values(state="open", amount_micro_usd=0, settled_micro_usd=None, settled_at=None)
    )


def settle(
    s: Session,
    hold: Hold,
    actual: int,
    note: str | None = None,
    job_id: str | None = None,
    *,
    lapsed_before: datetime | None = None,
    item_returns: bool = False,
) -> bool:
    """Swap the held amount for the real cost, in the caller's transaction; False when the
    hold was no longer open (or, with ``lapsed_before``, its lease was renewed).
    ``item_returns``: the item will be sent again (a call lost in flight), so the hold keeps
    its floor draw for the job's next admission to take back (as a released hold does).

    The real cost is at most the held worst case whenever the token bound holds; if a
    provider ever bills more, the part that does not fit the cap is recorded as overdraft
    (and an event) rather than lost, so the ledger stays complete.
    """
    closed = _close(s, hold, "settled", actual, note, lapsed_before, keep_draw=item_returns)
    if closed is None:  # already settled by the reaper: the money moved then
        return False
    held, _ = closed
    for wid in hold.window_ids:
        _move(s, wid, held, actual, job_id)
    return True


def release(s: Session, hold: Hold, note: str, *, lapsed_before: datetime | None = None, unsent_only: bool = False) -> bool:
    """Give a hold back untouched: the call provably was not made. With ``lapsed_before``
    (the reaper), only if its lease has still lapsed then: its owner may have renewed it
    since the caller read the row. With ``unsent_only``, only if it is not stamped sent: its
    sender may have stamped it since. False when the hold was not released.

    A hold that drew on its job's weak floor, released while the job still admits, leaves
    that share reserved on its windows (``floor_kept_micro_usd``): its item will be
    admitted again, and given back to the free room the share could go to another job on a
    shared budget first. The job's next admission moves it into the floor."""
    closed = _close(s, hold, "released", 0, note, lapsed_before, unsent_only, keep_share=True)
    if closed is None:
        return False
    held, kept = closed
    for wid in hold.window_ids:
        _move(s, wid, held - kept, 0, None)
    return True


def _close(
    s: Session,
    hold: Hold,
    state: str,
    actual: int,
    note: str | None,
    lapsed_before: datetime | None = None,
    unsent_only: bool = False,
    keep_draw: bool = True,
    keep_share: bool = False,
) -> tuple[int, int] | None:
    """Close an open hold; (the amount it held *now*, the part of it that stays reserved as
    a floor share), or None if it was no longer open.

    The row's amount, not the caller's copy: a floor's amount shrinks as items draw on it,
    and a copy read before a draw would take money still held by the items off the windows."""
    stmt = update(Reservation).where(Reservation.id == hold.reservation_id, Reservation.state == "open")
    if lapsed_before is not None:
        stmt = stmt.where(Reservation.lease_until < lapsed_before)
    if unsent_only:
        stmt = stmt.where(Reservation.sent_at.is_(None))
    values: dict[str, Any] = {"state": state, "settled_micro_usd": actual, "settled_at": utcnow(), "note": note}
    if not keep_draw:  # its item has its outcome: the floor owes it nothing
        values["floor_draw_micro_usd"] = 0
    if keep_share:  # read from the job's committed state: a job that ended keeps nothing
        admitting = select(Job.state).where(Job.id == Reservation.job_id).scalar_subquery() == JobState.IN_PROGRESS.value
        share = case(
            (Reservation.floor_draw_micro_usd < Reservation.amount_micro_usd, Reservation.floor_draw_micro_usd),
            else_=Reservation.amount_micro_usd,
        )
        values["floor_kept_micro_usd"] = case((admitting, share), else_=0)
    row = s.execute(stmt.values(**values).returning(Reservation.amount_micro_usd, Reservation.floor_kept_micro_usd)).first()
    return None if row is None else (int(row[0]), int(row[1]) if keep_share else 0)


def _move(s: Session, window_id: int, held: int, actual: int, job_id: str | None) -> None:
    fits = rowcount(
        s.execute(
            text(
                "UPDATE budget_windows SET reserved_micro_usd = reserved_micro_usd - :h, spent_micro_usd = spent_micro_usd + :a "
                "WHERE id = :w AND spent_micro_usd + reserved_micro_usd - :h + :a <= cap_micro_usd"
            ),
            {"h": held, "a": actual, "w": window_id},
        )
    )
    if not fits:
        row = s.execute(
            text("SELECT cap_micro_usd, spent_micro_usd, reserved_micro_usd FROM budget_windows WHERE id = :w"),
            {"w": window_id},
        ).one()
        room = row[0] - row[1] - (row[2] - held)
        over = actual - room
        s.execute(
            text(
                "UPDATE budget_windows SET reserved_micro_usd = reserved_micro_usd - :h, "
                "spent_micro_usd = spent_micro_usd + :room, overdraft_micro_usd = overdraft_micro_usd + :over WHERE id = :w"
            ),
            {"h": held, "room": room, "over": over, "w": window_id},
        )
        add_event(s, "budget_overdraft", f"billed {over} micro-USD above the cap", job_id=job_id, window_id=window_id)
    check_alerts(s, window_id, job_id)


def check_alerts(s: Session, window_id: int, job_id: str | None, *, needed: int | None = None) -> None:
    """Soft alerts at 50/80/100% of a window's cap: one event, one log line and one webhook
    each. A call of ``needed`` micro-USD that no longer fits under this window's cap counts as
    reaching 100%: spend can never exceed the cap, so it rarely lands on it exactly.

    The alert is recorded after ``s`` commits, in a short transaction of its own. Written
    here, its unique key could make a transaction that holds this window's row wait on
    another that recorded the same alert and then waits on that row: a deadlock on Postgres.
    An alert that cannot be written then is found again by the window's next check."""
    cap, spent, reserved, budget_id = s.execute(
        select(
            BudgetWindow.cap_micro_usd, BudgetWindow.spent_micro_usd, BudgetWindow.reserved_micro_usd, BudgetWindow.budget_id
        ).where(BudgetWindow.id == window_id)
    ).one()
    if not cap:
        return
    used = 100.0 * spent / cap
    exhausted = needed is not None and cap - spent - reserved < needed
    pending: dict[str, _Alert] = s.info.setdefault(_ALERTS_KEY, {})
    for level in ALERT_LEVELS:
        if used >= level or (exhausted and level == 100):
            key = f"alert:{window_id}:{level}"
            if key in pending or s.scalar(select(LedgerEvent.id).where(LedgerEvent.dedupe_key == key)) is not None:
                continue
            name = s.scalar(select(Budget.name).where(Budget.id == budget_id))
            reached = f"{used:.1f}%" + (", a call no longer fits" if exhausted and used < level else "")
            message = f"budget {name} at {reached} of ${micro_to_usd(cap):.2f} (alert {level}%)"
            data = {"budget": name, "level": level, "spent_micro_usd": spent, "cap_micro_usd": cap, "job_id": job_id}
            pending[key] = _Alert(key, level, message, job_id, budget_id, window_id, data)


_ALERTS_KEY = "routebatch_budget_alerts"


@dataclass(frozen=True)
class _Alert:
    key: str
    level: int
    message: str
    job_id: str | None
    budget_id: int
    window_id: int
    data: dict


@event.listens_for(Session, "after_commit")
def _record_alerts(s: Session) -> None:
    if s.in_nested_transaction():  # a savepoint released (try_reserve): not the commit yet
        return
    alerts = s.info.pop(_ALERTS_KEY, None)
    if not alerts:
        return
    try:
        with Session(s.get_bind().engine) as own:
            for a in alerts.values():
                inserted = add_event(
                    own, f"budget_alert_{a.level}", a.message, job_id=a.job_id, budget_id=a.budget_id,
                    window_id=a.window_id, dedupe_key=a.key, data=a.data,
                )  # fmt: skip
                if inserted:
                    log.warning(a.message)
                    queue_after_commit(own, Notification("budget_alert", a.message, a.data))
            own.commit()
    except Exception as exc:  # soft, and the spend has committed: the window's next check records it
        log.warning("budget alerts not recorded yet (%s): %s", ", ".join(alerts), type(exc).__name__)


@event.listens_for(Session, "after_soft_rollback")
def _drop_alerts(s: Session, previous_transaction: SessionTransaction) -> None:
    # A savepoint's rollback (budget holds use them) keeps the outer transaction's alerts.
    if previous_transaction.parent is None:
        s.info.pop(_ALERTS_KEY, None)


def add_event(
    s: Session,
    kind: str,
    message: str,
    *,
    job_id: str | None = None,
    budget_id: int | None = None,
    window_id: int | None = None,
    dedupe_key: str | None = None,
    data: dict | None = None,
) -> bool:
    """Record an event; with a ``dedupe_key``, only once (returns False if it was there)."""
    values = {
        "at": utcnow(),
        "kind": kind,
        "job_id": job_id,
        "budget_id": budget_id,
        "window_id": window_id,
        "dedupe_key": dedupe_key,
        "message": message,
        "data": data,
    }
    if dedupe_key is None:
        s.add(LedgerEvent(**values))
        return True
    return _insert_ignore(s, LedgerEvent.__table__, values)


def hold_of(res: Reservation) -> Hold:
    return Hold(res.id, res.amount_micro_usd, tuple(w for w in (res.job_window_id, res.named_window_id) if w))
