"""Routing a scored job: fix the threshold (or allocate under the budget), route every item."""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from jobs.ledger.models import Budget, Item, Job, LedgerEvent
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, Phase
from jobs.money.admission import worst_case_micro
from jobs.money.budgets import current_window
from jobs.money.pricing import sync_prices
from jobs.pipeline.request import request_shape
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime

log = logging.getLogger(__name__)


def route_job(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """Once every item is scored: fix the threshold, route every item, enqueue generation.

    Returns True for the one caller that made the transition.
    """
    with session_scope(rt.db_url) as s:
        won = rowcount(s.execute(update(Job).where(Job.id == job_id, Job.phase == Phase.SCORING).values(phase=Phase.GENERATING)))
        if not won:
            return False
        job = s.get_one(Job, job_id)  # the UPDATE above just matched it
        if job.allocate == "budget":
            allocate_items(rt, s, job)
        else:
            threshold = job.threshold
            tie_cutoff_id = None
            if threshold is None:
                threshold, tie_cutoff_id = _share_threshold(s, job)
                job.threshold = threshold
            route_scored_items(s, job, threshold, tie_cutoff_id)
        chunks = job.chunks
    for chunk in range(chunks):
        queue.enqueue("generate", job_id, chunk)
    return True


def allocate_items(rt: Runtime, s: Session, job: Job) -> None:
    """``--allocate budget``: the strong set that maximises expected gain under the cap.

    Costs are the same worst cases the reservations will hold, so an allocation that fits
    the cap also passes every reservation; the weak call of every item is paid for first.
    """
    from routing.allocation import allocate_budget

    pair = [job.strong_model, job.weak_model]
    prices = sync_prices(s, rt.config, rt.config.models_with_fallbacks(pair))
    rows = s.execute(
        select(Item.id, Item.prompt, Item.messages, Item.max_tokens, Item.score)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .order_by(Item.id)
    ).all()
    cap = None
    for bid in (job.job_budget_id, job.budget_id):
        if bid is not None:
            w = current_window(s, s.get_one(Budget, bid))
            room = w.cap_micro_usd - w.spent_micro_usd - w.reserved_micro_usd
            cap = room if cap is None else min(cap, room)
    n = len(rows)
    p = np.fromiter((r.score for r in rows), dtype=np.float64, count=n)
    cs = np.empty(n)
    cw = np.empty(n)
    job_max = job.spec.get("max_tokens")
    for i, r in enumerate(rows):
        for costs, model in ((cs, job.strong_model), (cw, job.weak_model)):
            shape = request_shape(
                rt.config, model, prompt=r.prompt, messages=r.messages, row_max_tokens=r.max_tokens, job_max_tokens=job_max
            )
            costs[i] = worst_case_micro(shape, model, prices, rt.config)
    alloc = allocate_budget(p, cs, cw, float(cap if cap is not None else np.inf))
    now = utcnow()
    updates = [
        {
            "id": r.id,
            "state": ItemState.ROUTED,
            "route": "strong" if strong else "weak",
            "model": job.strong_model if strong else job.weak_model,
            "route_reason": "budget_allocation" if alloc.affordable else "budget_allocation:unaffordable",
            "updated_at": now,
        }
        for r, strong in zip(rows, alloc.strong)
    ]
    if updates:
        s.execute(update(Item), updates, execution_options={"synchronize_session": False})
    job.spec = {
        **job.spec,
        "allocation": {
            "strong": int(alloc.strong.sum()),
            "planned_worst_case_micro_usd": int(alloc.cost),
            "cap_micro_usd": None if cap is None else int(cap),
        },
    }


def _share_threshold(s: Session, job: Job) -> tuple[float, int | None]:
    """``--strong-share``: the threshold, and the tie-break cutoff item id when ties need one.

    With many equal scores ``score >= threshold`` alone would send them all strong (a
    share of 0.1 on a constant router becomes 1.0, at ten times the cost). The cut keeps
    exactly ``round(share * n)`` strong: tied items go strong in item id order up to the
    returned id, the rest weak. Such a split is logged and recorded as a ledger event.
    """
    from routing.thresholds import cut_for_strong_share

    share = job.strong_share if job.strong_share is not None else 0.5
    rows = s.execute(select(Item.id, Item.score).where(Item.job_id == job.id, Item.score.is_not(None)).order_by(Item.id)).all()
    ids = [r.id for r in rows]
    cut = cut_for_strong_share(np.fromiter((r.score for r in rows), dtype=np.float64, count=len(rows)), share)
    if not cut.tie_broken or cut.last_tied_strong is None:
        return cut.threshold, None
    strong = int(cut.strong.sum())
    message = (
        f"job {job.id}: {cut.tied} of {len(ids)} items have the same score {cut.threshold:.6g}; "
        f"--strong-share {share:g} holds only by breaking the tie: {cut.tied_strong} of them go strong "
        f"in input order ({strong} strong in all; score >= threshold alone would send {strong - cut.tied_strong + cut.tied})"
    )
    log.warning(message)
    s.add(
        LedgerEvent(
            at=utcnow(),
            kind="strong_share_tie_break",
            job_id=job.id,
            message=message,
            data={
                "strong_share": share,
                "threshold": cut.threshold,
                "items": len(ids),
                "strong": strong,
                "tied": cut.tied,
                "tied_strong": cut.tied_strong,
            },
        )
    )
    return cut.threshold, ids[cut.last_tied_strong]


def route_scored_items(s: Session, job: Job, threshold: float, tie_cutoff_id: int | None = None) -> None:
    """score >= threshold -> strong, else weak; one UPDATE for the whole job.

    With ``tie_cutoff_id`` (a strong share that needed a tie-break) an item whose score
    equals the threshold is strong only if its id is <= the cutoff.
    """
    if tie_cutoff_id is None:
        is_strong = Item.score >= threshold
        reason = case((is_strong, "score>=threshold"), else_="score<threshold")
    else:
        tied = Item.score == threshold
        tied_strong = and_(tied, Item.id <= tie_cutoff_id)
        is_strong = or_(Item.score > threshold, tied_strong)
        reason = case(
            (Item.score > threshold, "score>=threshold"),
            (tied_strong, "score=threshold:tie_break_strong"),
            (tied, "score=threshold:tie_break_weak"),
            else_="score<threshold",
        )
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .values(
            state=ItemState.ROUTED,
            threshold=threshold,
            route=case((is_strong, "strong"), else_="weak"),
            model=case((is_strong, job.strong_model), else_=job.weak_model),
            route_reason=reason,
            updated_at=utcnow(),
        )
    )
