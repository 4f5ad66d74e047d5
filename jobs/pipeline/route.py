"""Routing a scored job: fix the threshold (or allocate under the budget), route every item."""

from __future__ import annotations

import numpy as np
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from jobs.ledger.models import Budget, Item, Job
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, Phase
from jobs.money.admission import worst_case_micro
from jobs.money.budgets import current_window
from jobs.money.pricing import sync_prices
from jobs.pipeline.request import request_shape
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime


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
            if threshold is None:
                from routing import threshold_for_strong_share

                scores = np.fromiter(
                    s.scalars(select(Item.score).where(Item.job_id == job_id, Item.score.is_not(None))), dtype=np.float64
                )
                threshold = threshold_for_strong_share(scores, job.strong_share if job.strong_share is not None else 0.5)
                job.threshold = threshold
            route_scored_items(s, job, threshold)
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


def route_scored_items(s: Session, job: Job, threshold: float) -> None:
    """score >= threshold -> strong, else weak; one UPDATE for the whole job."""
    is_strong = Item.score >= threshold
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .values(
            state=ItemState.ROUTED,
            threshold=threshold,
            route=case((is_strong, "strong"), else_="weak"),
            model=case((is_strong, job.strong_model), else_=job.weak_model),
            route_reason=case((is_strong, "score>=threshold"), else_="score<threshold"),
            updated_at=utcnow(),
        )
    )
