"""Recovering from workers that died: items lost in flight and their budget holds.

One rule for every path (``resume``, the periodic reaper): an item marked ``sent`` whose
lease expired may or may not have reached the provider. It gets a ``LostInFlight``
attempt, its budget hold is settled conservatively at the full reserved amount (charged to
that attempt, so attempts and budgets still add up), and it goes back to ``routed`` to be
sent again. A hold on an item that was never sent is released to zero.

"May have reached the provider" is known exactly for items with a hold: the sender stamps
the hold's ``sent_at`` before its call leaves (``jobs.pipeline.sent``). A claimed item
of a job with a budget whose hold carries no stamp (or that has no hold yet) was never
handed to a provider: its hold is released to zero and the item goes back to ``routed``
without an attempt. Without a budget there is no hold to stamp, and the rule above stands.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.ledger.models import Attempt, Item, Job, Reservation
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, Phase
from jobs.money.budgets import FLOOR_PREFIX, add_event, hold_of, purpose_of_note, release, settle

if TYPE_CHECKING:
    from jobs.config import AppConfig

Enqueue = tuple[str, str, int | None]
"""(step, job id, chunk) to put on the queue."""

LOST_MESSAGE = "worker stopped after marking the item sent; outcome unknown, sent again"


class LostCounts(TypedDict):
    """What ``recover_lost`` did: items requeued, holds settled or released, jobs touched."""

    lost_items: int
    settled_at_reserved: int
    released: int
    jobs: set[str]


def recover_lost(
    s: Session,
    *,
    job_id: str | None = None,
    force: bool = False,
    now: datetime | None = None,
    provider_of: Callable[[str], str] | None = None,
    sent_ids: set[int] | None = None,
    estimate: Callable[[Session, Item], int] | None = None,
    claim: datetime | None = None,
) -> LostCounts:
    """Requeue lost items and close dead holds; returns counts and the affected job ids.

    ``claim``: only the items claimed under this lease (the ones a failed generate step
    claimed, in its chunk or, for a provider batch, in others), and no dead-hold pass: items
    of the chunk that another step claimed, and the holds of calls other steps have in
    flight (a judge step's), are theirs.

    ``force`` treats every sent item as lost (only safe when no worker is running).
    ``provider_of(model) -> str`` names the provider for the recorded attempt.
    ``sent_ids``, when the caller knows which calls really went out (the process that made
    them, after Ctrl-C): only those are maybe-sent; the other claimed items go back to
    ``routed`` with their holds released to zero and no attempt. A maybe-sent call without
    a hold is charged ``estimate(session, item)`` (its worst case), so the ledger never
    under-counts what may have been billed.
    """
    now = now or utcnow()
    counts: LostCounts = {"lost_items": 0, "settled_at_reserved": 0, "released": 0, "jobs": set()}
    lost_q = select(Item).where(Item.state == ItemState.SENT)
    if job_id is not None:
        lost_q = lost_q.where(Item.job_id == job_id)
    if claim is not None:
        lost_q = lost_q.where(Item.lease_until == claim)
    if not force:
        lost_q = lost_q.where((Item.lease_until.is_(None)) | (Item.lease_until < now))
    budgeted: dict[str, bool] = {}
    in_batches: dict[str, set[int]] = {}
    for item in s.scalars(lost_q.with_for_update(skip_locked=True)).all():
        if item.job_id not in in_batches:
            from jobs.ledger.provider_batches import batched_item_ids

            in_batches[item.job_id] = batched_item_ids(s, item.job_id)
        if item.id in in_batches[item.job_id]:
            continue  # inside a provider batch: its results settle it (jobs.pipeline.batch_poll)
        holds = list(
            s.scalars(
                select(Reservation)
                .where(
                    Reservation.item_id == item.id,
                    Reservation.state == "open",
                    ~Reservation.id.startswith(FLOOR_PREFIX),  # a job's weak floor is not this item's call
                )
                .with_for_update()  # a sender stamping one now waits, then finds it closed
            )
        )
        if sent_ids is not None:
            never_sent = item.id not in sent_ids
        else:
            if item.job_id not in budgeted:
                budgeted[item.job_id] = _has_budget(s, item.job_id)
            never_sent = budgeted[item.job_id] and all(r.sent_at is None for r in holds)
        if never_sent:
            # where the lock above is no lock (SQLite), a hold stamped since the read is not
            # released: its call went out after all, and is settled below (unless the process
            # that sent the calls said which ones did)
            note = "claimed, never sent: released to zero"
            stamped = [res for res in holds if not release(s, hold_of(res), note=note, unsent_only=sent_ids is None)]
            counts["released"] += len(holds) - len(stamped)
            holds = stamped
        if never_sent and not holds:
            item.state = ItemState.ROUTED
            item.lease_until = None
            counts["jobs"].add(item.job_id)
            continue
        cost = 0
        held = False
        for res in holds:
            settle(
                s,
                hold_of(res),
                res.amount_micro_usd,
                note="lost in flight: settled at the reserved amount",
                job_id=item.job_id,
                item_returns=True,  # sent again: its floor share is taken back at the next admission
            )
            cost += res.amount_micro_usd
            held = True
            counts["settled_at_reserved"] += 1
            add_event(
                s,
                "reaper_settled",
                f"item {item.custom_id}: hold settled at the reserved amount (call may have been sent)",
                job_id=item.job_id,
                data={"amount_micro_usd": res.amount_micro_usd},
            )
        if not held and estimate is not None:
            cost = estimate(s, item)
        _charge_lost_call(s, item.job_id, item.id, item.model or "", provider_of, cost, now)
        item.cost_micro_usd = (item.cost_micro_usd or 0) + cost
        item.state = ItemState.ROUTED
        item.lease_until = None
        counts["lost_items"] += 1
        counts["jobs"].add(item.job_id)
    if claim is not None:
        return counts
    dead = (
        select(Reservation, Item.state)
        .join(Item, Item.id == Reservation.item_id)
        .where(Reservation.state == "open", Item.state != ItemState.SENT)
    )
    if job_id is not None:
        dead = dead.where(Reservation.job_id == job_id)
    if not force:
        dead = dead.where(Reservation.lease_until < now)
    for res, item_state in s.execute(dead).all():
        if res.sent_at is not None:
            # an extra call on an item that has its outcome (an --adapt twin or judge call):
            # stamped, so it may have been billed; charged, never released
            purpose = _extra_call_purpose(s, res.item_id, res.note)  # read before the settle's note
            closed = settle(
                s, hold_of(res), res.amount_micro_usd, note="lost in flight: settled at the reserved amount",
                job_id=res.job_id, lapsed_before=None if force else now,
            )  # fmt: skip
            if not closed:  # its worker settled it after all, since the read above
                continue
            _charge_lost_call(s, res.job_id, res.item_id, res.model, provider_of, res.amount_micro_usd, now, purpose)
            s.execute(
                update(Item)
                .where(Item.id == res.item_id)
                .values(cost_micro_usd=func.coalesce(Item.cost_micro_usd, 0) + res.amount_micro_usd)
            )
            counts["settled_at_reserved"] += 1
            counts["jobs"].add(res.job_id)
            add_event(
                s,
                "reaper_settled",
                f"extra call of item {res.item_id}: hold settled at the reserved amount (call may have been sent)",
                job_id=res.job_id,
                data={"amount_micro_usd": res.amount_micro_usd},
            )
            continue
        release(s, hold_of(res), note=f"item {item_state}, never sent: released to zero", lapsed_before=None if force else now)
        counts["released"] += 1
        add_event(s, "reaper_released", f"reservation of item {res.item_id} released to zero (never sent)", job_id=res.job_id)
    return counts


def _charge_lost_call(
    s: Session,
    job_id: str,
    item_id: int,
    model: str,
    provider_of: Callable[[str], str] | None,
    cost: int,
    now: datetime,
    purpose: str = "answer",
) -> None:
    """The ``LostInFlight`` attempt that carries what a call that may have been sent costs."""
    s.add(
        Attempt(
            id=uuid.uuid4().hex,
            job_id=job_id,
            item_id=item_id,
            attempt_no=0,
            model=model,
            provider=(provider_of(model) if provider_of and model else "") or "",
            error_class="LostInFlight",
            error_message=LOST_MESSAGE,
            cost_micro_usd=cost,
            started_at=now,
            finished_at=now,
            purpose=purpose,
        )
    )


def _extra_call_purpose(s: Session, item_id: int, note: str | None) -> str:
    """What an extra call of an item with its outcome was, so that it stays out of the
    all-strong baseline (the ``savings`` view): the purpose its hold's note names
    (:func:`extra_call_note`). A hold stamped before the note named it: the sample's verdict
    row is written once the twin has answered, so a call lost before there is one was the
    twin, and after, a judge call (a duplicate twin lost after its verdict reads as a judge call)."""
    from jobs.ledger.models import Judgement

    named = purpose_of_note(note)
    if named is not None:
        return named
    return "judge" if s.scalar(select(Judgement.id).where(Judgement.item_id == item_id)) is not None else "twin"


def _has_budget(s: Session, job_id: str) -> bool:
    """Under a budget every call is admitted with a hold first, so an item without a
    stamped hold never reached a provider."""
    row = s.execute(select(Job.budget_id, Job.job_budget_id).where(Job.id == job_id)).one_or_none()
    return row is not None and (row.budget_id is not None or row.job_budget_id is not None)


def open_work(s: Session, job_id: str, phase: str) -> list[Enqueue]:
    """The messages that move a job on from where its items are: shared by ``resume`` and
    the reaper, so both re-enqueue the same work."""

    def chunks(state: ItemState) -> list[int]:
        return sorted(s.scalars(select(Item.chunk).where(Item.job_id == job_id, Item.state == state).distinct()).all())

    if phase == Phase.SCORING:
        # Routed items while scoring exist only under a streaming rule (jobs.pipeline.route):
        # those chunks go out now, not after the rest is scored.
        routed: list[Enqueue] = [("generate", job_id, c) for c in chunks(ItemState.ROUTED)]
        scores: list[Enqueue] = [("score", job_id, c) for c in chunks(ItemState.PENDING)]
        return routed + (scores or [("route", job_id, None)])
    from jobs.ledger.provider_batches import open_batches_exist

    polls: list[Enqueue] = [("poll", job_id, None)] if open_batches_exist(s, job_id) else []
    return [("generate", job_id, c) for c in chunks(ItemState.ROUTED)] + polls + [("finalize", job_id, None)]


def worst_case_estimator(config: AppConfig) -> Callable[[Session, Item], int]:
    """Worst-case cost of one call of an item, for a maybe-sent call that had no budget hold
    (so the ledger never under-counts what may have been billed)."""
    from jobs.ledger.models import Job
    from jobs.money.admission import worst_case_micro
    from jobs.money.pricing import latest_price
    from jobs.pipeline.request import request_shape

    def estimate(s: Session, item: Item) -> int:
        if not item.model:
            return 0
        try:
            job = s.get(Job, item.job_id)
            job_max = (job.spec or {}).get("max_tokens") if job is not None else None
            shape = request_shape(
                config,
                item.model,
                prompt=item.prompt,
                messages=item.messages,
                row_max_tokens=item.max_tokens,
                job_max_tokens=job_max,
            )
            prices = {m: p for m in config.fallback_chain(item.model) if (p := latest_price(s, m)) is not None}
            return worst_case_micro(shape, item.model, prices, config)
        except Exception:  # an estimate must never stop the bookkeeping
            return 0

    return estimate
