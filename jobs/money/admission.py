"""Admission of claimed items to the provider: the budget gate in front of every call.

Items are admitted in small batches just before they are sent, so the money held at any
moment is about the worst case of the calls in flight, not of a whole chunk. For each item
one reservation is opened on the job's cap and on its named budget (both or neither).

**The weak floor.** A labelling job wants every item answered first and only the surplus
spent on upgrades. So the first batch of a job reserves a *floor*: the worst case of the
weak (cheapest) call of every item not yet admitted, held on the job's windows like any
hold (``jobs.money.budgets.open_floor``: one row per job, locked by each admitting
transaction, so workers admitting chunks in parallel and other jobs drawing on the same
named budget see it). Each admitted item takes its weak share out of the floor; a strong
call reserves only its extra over that share from the free room, so an upgrade can never
eat another item's weak answer. An upgrade that does not fit waits for holds in flight to
settle (they settle to the real cost, far below the worst case) and is answered weak once
waiting cannot help, under every ``--on-exhausted`` policy: while the floor is covered no
item is skipped.

When the cap cannot cover the floor the job says so before its first call (a ``job_note``
event and a warning) and ``--on-exhausted`` decides: ``downgrade`` answers every item weak
while the money lasts (the floor holds what there is) and skips the rest with the reason,
``skip`` sends items as routed and skips those that cannot be afforded, ``stop`` ends the
job ``budget_exhausted`` before any call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from jobs.config import AppConfig
from jobs.ledger.models import Budget, Item, Job, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import transitions as lifecycle
from jobs.lifecycle.states import ItemState, JobState
from jobs.money.budgets import (
    FLOOR_PREFIX,
    Floor,
    Hold,
    add_event,
    check_alerts,
    claim_owed_shares,
    current_window,
    floor_of,
    give_back_kept,
    hold_of,
    keep_in_floor,
    lock_floor,
    open_floor,
    open_reservation_from_floor,
    refill_floor,
    release,
    release_floor,
    room_of,
    room_without_item_holds,
    save_floor,
    shrink_floor,
)
from jobs.money.pricing import PriceVersion, micro_to_usd
from jobs.money.tokens import input_token_bound
from jobs.pipeline.request import RequestShape, request_shape
from jobs.runtime import Runtime

log = logging.getLogger("routebatch.budget")

FLOOR_STATES = (ItemState.PENDING, ItemState.SCORED, ItemState.ROUTED, ItemState.SENT)
"""Items a floor is kept for: not answered, not skipped, not yet admitted."""


def worst_case_micro(shape: RequestShape, model: str, prices: dict[str, PriceVersion], config: AppConfig) -> int:
    """Worst-case cost of one call, over the model and its fallback chain."""
    tokens_in = input_token_bound(shape.messages)
    worst = 0
    for candidate in config.fallback_chain(model):
        price = prices.get(candidate)
        if price is not None:
            worst = max(worst, price.worst_case_micro_usd(tokens_in, shape.max_tokens))
    return worst


@dataclass
class Admitted:
    row: Any
    model: str
    hold: Hold | None
    max_tokens: int
    messages: list[dict]


@dataclass
class AdmitResult:
    admitted: list[Admitted] = field(default_factory=list)
    deferred: list = field(default_factory=list)  # would fit once holds in flight settle
    stop: bool = False


@dataclass(frozen=True)
class BudgetPlan:
    """Which windows a job draws from; None when the job has no budget at all."""

    job_budget_id: int | None
    named_budget_id: int | None
    policy: str
    strong: str
    weak: str

    @property
    def active(self) -> bool:
        return self.job_budget_id is not None or self.named_budget_id is not None


def budget_plan(job: Job) -> BudgetPlan:
    return BudgetPlan(job.job_budget_id, job.budget_id, job.on_exhausted, job.strong_model, job.weak_model)


def weak_share(
    cfg: AppConfig, weak: str, row: Any, prices: dict[str, PriceVersion], job_max_tokens: int | None
) -> tuple[RequestShape, int]:
    """The weak call of ``row`` and its worst case: the item's part of the floor."""
    shape = request_shape(
        cfg, weak, prompt=row.prompt, messages=row.messages, row_max_tokens=row.max_tokens, job_max_tokens=job_max_tokens
    )
    return shape, worst_case_micro(shape, weak, prices, cfg)


def floor_need(
    s, job_id: str, cfg: AppConfig, weak: str, prices: dict[str, PriceVersion], job_max_tokens: int | None
) -> tuple[int, int]:
    """(micro-USD, items): the weak worst case of every item of the job not yet admitted."""
    held = select(Reservation.item_id).where(
        Reservation.job_id == job_id, Reservation.state == "open", ~Reservation.id.startswith(FLOOR_PREFIX)
    )
    rows = s.execute(
        select(Item.prompt, Item.messages, Item.max_tokens).where(
            Item.job_id == job_id, Item.state.in_(FLOOR_STATES), Item.id.not_in(held)
        )
    ).all()
    return sum(weak_share(cfg, weak, r, prices, job_max_tokens)[1] for r in rows), len(rows)


def _ensure_floor(
    s,
    job: Job,
    plan: BudgetPlan,
    windows: tuple[int | None, int | None],
    cfg: AppConfig,
    prices: dict[str, PriceVersion],
    job_max_tokens: int | None,
) -> Floor | None:
    """The job's floor for this transaction, reserved on its first batch (and again after a
    resume, a lapsed lease or a new budget window); None when ``stop`` ends the job here."""
    anchor = s.scalar(select(func.min(Item.id)).where(Item.job_id == job.id))
    res = lock_floor(s, job.id, anchor)
    if res is not None and (res.job_window_id, res.named_window_id) == windows:
        if res.state == "open":
            return _take_back_shares(s, job.id, floor_of(res))
        this_run = res.settled_at is not None and (job.in_progress_at is None or res.settled_at >= job.in_progress_at)
        if res.state == "settled" and this_run:  # drawn to zero, or off, in this run: nothing to reserve again
            return _take_back_shares(s, job.id, floor_of(res))
    if res is not None and res.state == "open":
        release(s, hold_of(res), note="budget window changed: the floor moves to the current window")
    # sized afresh, the floor counts those items anyway; cleared first, a release that lands
    # in between is held twice until the job ends, never not at all
    _take_owed_shares(s, job.id)
    need, items = floor_need(s, job.id, cfg, plan.weak, prices, job_max_tokens)
    ids = tuple(w for w in windows if w is not None)
    room = room_of(s, ids)
    data = {"floor_micro_usd": need, "items": items, "room_micro_usd": room, "weak": plan.weak, "policy": plan.policy}
    if need <= room:
        floor = open_floor(s, job.id, anchor, need, "covered", *windows)
        if floor is not None:
            add_event(
                s,
                "job_note",
                f"budget: weak floor ${micro_to_usd(need):.6f} held for {items} items ({plan.weak}, worst case); "
                f"${micro_to_usd(room - need):.6f} left for upgrades",
                job_id=job.id,
                data={**data, "covered": True},
            )
            return floor
        room = room_of(s, ids)  # another job took money in between
    then = {
        "downgrade": "every item goes weak while the money lasts, the rest are skipped",
        "skip": "items go as routed while they fit, the rest are skipped",
        "stop": "the job stops before its first call",
    }[plan.policy]
    message = (
        f"budget: the cap cannot cover the weak answer of every item: {items} items need up to "
        f"${micro_to_usd(need):.6f} ({plan.weak}, worst case), ${micro_to_usd(max(room, 0)):.6f} available; "
        f"--on-exhausted {plan.policy}: {then}"
    )
    log.warning(message)
    add_event(s, "job_note", message, job_id=job.id, data={**data, "covered": False})
    if plan.policy == "stop":
        return None
    if plan.policy == "skip":
        return open_floor(s, job.id, anchor, 0, "off", *windows)
    return open_floor(s, job.id, anchor, max(0, min(room, need)), "short", *windows) or open_floor(
        s, job.id, anchor, 0, "short", *windows
    )


def _take_owed_shares(s, job_id: str, floor: Floor | None = None) -> tuple[int, int]:
    """(micro-USD, items): what the floor must reserve anew for the job's items that wait to
    be admitted again (released unsent, or lost in flight). Every owed share is marked paid:
    a share its release kept reserved goes into ``floor`` when the floor holds on the same
    windows, and back to the free room otherwise (no floor: the caller sizes one afresh; a
    hold whose item ended owes nothing)."""
    need = items = 0
    for share in claim_owed_shares(s, job_id):
        waiting = share.item_state in FLOOR_STATES
        if waiting and floor is not None and floor.holds and share.window_ids == floor.window_ids:
            keep_in_floor(s, floor, share.kept)
            need += share.draw - share.kept
        else:
            give_back_kept(s, share)
            need += share.draw if waiting else 0
        items += waiting
    return need, items


def _take_back_shares(s, job_id: str, floor: Floor) -> Floor:
    """A hold released unsent (a claim never sent, a batch line with no answer, a downgrade to a
    model sent synchronously) kept its weak share reserved, and one lost in flight spent it,
    while its item waits to be admitted again: that share goes back into the floor before
    this batch buys any upgrade, or the upgrades could spend the room and leave the item
    skipped. A spent share is reserved again from the free room, as far as there is any."""
    if not floor.holds:
        _take_owed_shares(s, job_id)  # kept shares go back to the free room
        return floor
    owed, items = _take_owed_shares(s, job_id, floor)
    got = refill_floor(s, floor, owed)
    if got < owed:
        message = (
            f"budget: {items} items returned to admission; the floor took back ${micro_to_usd(got):.6f} of their "
            f"${micro_to_usd(owed):.6f} weak share (the rest was spent meanwhile)"
        )
        log.warning(message)
        add_event(s, "job_note", message, job_id=job_id, data={"owed_micro_usd": owed, "refilled_micro_usd": got})
    return floor


def admit(
    rt: Runtime,
    job_id: str,
    rows: list,
    plan: BudgetPlan,
    prices: dict[str, PriceVersion],
    job_max_tokens: int | None,
    final: bool = False,
) -> AdmitResult:
    """Reserve money for ``rows`` (claimed 'sent' items) in one transaction.

    Each item's weak share comes out of the job's floor; what a call costs beyond it (an
    upgrade) must fit the free room. A call that does not fit only because of money held for
    calls in flight is *deferred* (tried again after they settle); once waiting cannot help
    (or ``final``) an upgrade is answered weak, and a weak call that still does not fit (the
    floor was short) is skipped, or stops the job under ``--on-exhausted stop``.
    """
    out = AdmitResult()
    cfg = rt.config
    prepared = [
        (
            row,
            request_shape(
                cfg,
                row.model,
                prompt=row.prompt,
                messages=row.messages,
                row_max_tokens=row.max_tokens,
                job_max_tokens=job_max_tokens,
            ),
        )
        for row in rows
    ]
    if not plan.active:
        out.admitted = [Admitted(row, row.model, None, shape.max_tokens, shape.messages) for row, shape in prepared]
        return out
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.state != JobState.IN_PROGRESS:
            if job is not None:
                release_floor(s, job_id)
            out.stop = True
            return out
        job_window = current_window(s, s.get_one(Budget, plan.job_budget_id)).id if plan.job_budget_id else None
        named_window = current_window(s, s.get_one(Budget, plan.named_budget_id)).id if plan.named_budget_id else None
        windows = tuple(w for w in (job_window, named_window) if w is not None)
        floor = _ensure_floor(s, job, plan, (job_window, named_window), cfg, prices, job_max_tokens)
        if floor is None:
            reason = "budget exhausted: the cap cannot cover the weak answer of every item (--on-exhausted stop)"
            _stop_job(s, job, [r.id for r, _ in prepared], 0, reason)
            out.stop = True
            return out
        skipped: list[tuple[int, str]] = []
        downgraded: list[int] = []
        free_base: int | None = None  # room once item holds settle, this job's floor not counted
        refused: int | None = None  # the smallest extra refused here: nothing larger fits either
        alerted = False

        def reserve(row: Any, model: str, amount: int, draw: int) -> Hold | None:
            nonlocal refused
            extra = amount - min(draw, amount)
            if refused is not None and extra >= refused:
                return None
            hold = open_reservation_from_floor(s, job_id, row.id, model, amount, floor, draw)
            if hold is None:
                refused = extra if refused is None else min(refused, extra)
            return hold

        def waiting_helps(amount: int, draw: int) -> bool:
            nonlocal free_base
            if final:
                return False
            if free_base is None:
                free_base = room_without_item_holds(s, windows, floor.reservation_id)
            return amount - draw <= free_base - (floor.amount if floor.holds else 0)

        for i, (row, shape) in enumerate(prepared):
            weak_shape, share = weak_share(cfg, plan.weak, row, prices, job_max_tokens)
            draw = min(share, floor.amount) if floor.holds else 0
            model, use = row.model, shape
            if model == plan.weak:
                use = weak_shape
            elif floor.mode == "short":
                model, use = plan.weak, weak_shape
                downgraded.append(row.id)
            amount = share if model == plan.weak else worst_case_micro(use, model, prices, cfg)
            hold = reserve(row, model, amount, draw)
            if hold is None and model != plan.weak:
                if waiting_helps(amount, draw):
                    out.deferred.append(row)
                    continue
                if plan.policy == "downgrade" or floor.mode == "covered":
                    if not alerted:  # the cap bit: an upgrade no longer fits (the 100% alert), once a batch
                        alerted = True
                        for window in windows:
                            check_alerts(s, window, job_id, needed=amount - draw)
                    model, use, amount = plan.weak, weak_shape, share
                    hold = reserve(row, model, amount, draw)
                    if hold is not None:
                        downgraded.append(row.id)
            if hold is None:
                if waiting_helps(amount, draw):
                    out.deferred.append(row)
                    continue
                if plan.policy == "stop":
                    save_floor(s, floor)
                    _stop_job(s, job, [r.id for r, _ in prepared[i:]], amount)
                    for window in windows:
                        check_alerts(s, window, job_id, needed=amount)
                    out.stop = True
                    break
                shrink_floor(s, floor, draw)  # its share goes back to the room
                why = "the cap cannot cover the weak answer of every item; " if floor.mode != "covered" else ""
                skipped.append((row.id, f"budget: {why}cannot afford {model} (worst case {amount} micro-USD)"))
                for window in windows:
                    check_alerts(s, window, job_id, needed=amount)
                continue
            out.admitted.append(Admitted(row, model, hold, use.max_tokens, use.messages))
        if not out.stop:
            save_floor(s, floor)
        now = utcnow()
        if downgraded:
            s.execute(
                update(Item)
                .where(Item.id.in_(downgraded))
                .values(model=plan.weak, route_reason="budget_downgrade", updated_at=now)
            )
        for item_id, reason in skipped:
            s.execute(
                update(Item)
                .where(Item.id == item_id, Item.state == ItemState.SENT)
                .values(state=ItemState.SKIPPED_BUDGET, error=reason, lease_until=None, updated_at=now)
            )
    return out


def _stop_job(s, job: Job, unsent_ids: list[int], amount: int, reason: str | None = None) -> None:
    """--on-exhausted stop: the job ends budget_exhausted, every unsent item is listed as skipped."""
    now = utcnow()
    reason = reason or "budget exhausted: job stopped (--on-exhausted stop)"
    release_floor(s, job.id, note="job stopped: floor released")
    s.execute(
        update(Item)
        .where(Item.id.in_(unsent_ids), Item.state == ItemState.SENT)
        .values(state=ItemState.SKIPPED_BUDGET, error=reason, lease_until=None, updated_at=now)
    )
    # claimed here or by other workers but not admitted (no hold): never sent, and never will be
    held = select(Reservation.item_id).where(
        Reservation.job_id == job.id, Reservation.state == "open", ~Reservation.id.startswith(FLOOR_PREFIX)
    )
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state == ItemState.SENT, Item.id.not_in(held))
        .values(state=ItemState.SKIPPED_BUDGET, error=reason, lease_until=None, updated_at=now)
    )
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state.in_(lifecycle.UNSENT_STATES))
        .values(state=ItemState.SKIPPED_BUDGET, error=reason, updated_at=now)
    )
    lifecycle.transition(job, JobState.BUDGET_EXHAUSTED)
    job.error = "budget_exhausted"
    add_event(s, "budget_exhausted", f"job {job.id} stopped: next call needed {amount} micro-USD", job_id=job.id)
