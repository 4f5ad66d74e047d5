"""Scoring a chunk: the router's score for every pending item, then routing once all are scored."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sqlalchemy import func, select, update

from jobs.ledger.models import Item, Job
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, JobState
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime


def count_items(rt: Runtime, job_id: str, states: Iterable[str]) -> int:
    with session_scope(rt.db_url) as s:
        return s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state.in_(list(states)))) or 0


def score_chunk(rt: Runtime, queue: TaskQueue, job_id: str, chunk: int) -> int:
    """Score the chunk's pending items; returns how many were scored by this call."""
    from jobs.pipeline.route import route_job

    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or JobState(job.state).terminal or job.state == JobState.CANCELLING:
            return 0
        rows = s.execute(
            select(Item.id, Item.prompt)
            .where(Item.job_id == job_id, Item.chunk == chunk, Item.state == ItemState.PENDING)
            .order_by(Item.id)
        ).all()
        router_spec = job.router
    scored = 0
    if rows:
        scores = np.asarray(rt.router(router_spec).score([r.prompt for r in rows]), dtype=np.float64)
        with session_scope(rt.db_url) as s:
            s.execute(
                update(Item).where(Item.state == ItemState.PENDING),
                [
                    {"id": r.id, "score": float(sc), "state": ItemState.SCORED, "updated_at": utcnow()}
                    for r, sc in zip(rows, scores)
                ],
                execution_options={"synchronize_session": False},
            )
        scored = len(rows)
    if count_items(rt, job_id, [ItemState.PENDING]) == 0:
        route_job(rt, queue, job_id)
    return scored
