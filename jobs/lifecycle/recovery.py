"""Recovering from workers that died: items lost in flight and their budget holds.

One rule for every path (``resume``, the periodic reaper): an item marked ``sent`` whose
lease expired may or may not have reached the provider. It gets a ``LostInFlight``
attempt, its budget hold is settled conservatively at the full reserved amount (charged to
that attempt, so attempts and budgets still add up), and it goes back to ``routed`` to be
sent again. A hold on an item that was never sent is released to zero.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.ledger.models import Attempt, Item, Reservation
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, Phase
from jobs.money.budgets import add_event, hold_of, release, settle

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
) -> LostCounts:
    """Requeue lost items and close dead holds; returns counts and the affected job ids.

    ``force`` treats every sent item as lost (only safe when no worker is running).
    ``provider_of(model) -> str`` names the provider for the recorded attempt.
    """
    now = now or utcnow()
    counts: LostCounts = {"lost_items": 0, "settled_at_reserved": 0, "released": 0, "jobs": set()}
    lost_q = select(Item).where(Item.state == ItemState.SENT)
    if job_id is not None:
        lost_q = lost_q.where(Item.job_id == job_id)
    if not force:
        lost_q = lost_q.where((Item.lease_until.is_(None)) | (Item.lease_until < now))
    for item in s.scalars(lost_q.with_for_update(skip_locked=True)).all():
        cost = 0
        for res in s.scalars(select(Reservation).where(Reservation.item_id == item.id, Reservation.state == "open")):
            settle(
                s, hold_of(res), res.amount_micro_usd, note="lost in flight: settled at the reserved amount", job_id=item.job_id
            )
            cost += res.amount_micro_usd
            counts["settled_at_reserved"] += 1
            add_event(
                s,
                "reaper_settled",
                f"item {item.custom_id}: hold settled at the reserved amount (call may have been sent)",
                job_id=item.job_id,
                data={"amount_micro_usd": res.amount_micro_usd},
            )
        s.add(
            Attempt(
                id=uuid.uuid4().hex,
                job_id=item.job_id,
                item_id=item.id,
                attempt_no=0,
                model=item.model or "",
                provider=(provider_of(item.model) if provider_of and item.model else "") or "",
                error_class="LostInFlight",
                error_message=LOST_MESSAGE,
                cost_micro_usd=cost,
                started_at=now,
                finished_at=now,
            )
        )
        item.cost_micro_usd = (item.cost_micro_usd or 0) + cost
        item.state = ItemState.ROUTED
        item.lease_until = None
        counts["lost_items"] += 1
        counts["jobs"].add(item.job_id)
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
        release(s, hold_of(res), note=f"item {item_state}, never sent: released to zero")
        counts["released"] += 1
        add_event(s, "reaper_released", f"reservation of item {res.item_id} released to zero (never sent)", job_id=res.job_id)
    return counts


def open_work(s: Session, job_id: str, phase: str) -> list[Enqueue]:
    """The messages that move a job on from where its items are: shared by ``resume`` and
    the reaper, so both re-enqueue the same work."""

    def chunks(state: ItemState) -> list[int]:
        return sorted(s.scalars(select(Item.chunk).where(Item.job_id == job_id, Item.state == state).distinct()).all())

    if phase == Phase.SCORING:
        pending = chunks(ItemState.PENDING)
        return [("score", job_id, c) for c in pending] or [("route", job_id, None)]
    return [("generate", job_id, c) for c in chunks(ItemState.ROUTED)] + [("finalize", job_id, None)]
