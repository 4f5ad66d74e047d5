"""Scoring a chunk: the router's score for every pending item; routed at once when the rule streams.

Under a streaming rule (a fixed threshold, or a held sample threshold; see
``jobs.pipeline.route``) the scoring UPDATE writes the route too and the chunk's
``generate`` is enqueued straight away, so provider calls start while other chunks wait to
be scored. Otherwise items stay ``scored`` and the call that finds no pending item left
routes the whole job (:func:`route_when_scored`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select, update

from jobs.ledger.models import Item, Job
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, JobState
from jobs.money.budgets import add_event
from jobs.pipeline.route import hold_sample_threshold, note_rule, route_job, route_scored_chunks, routed_values
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime
from routing.templates import score_with_template


def count_items(rt: Runtime, job_id: str, states: Iterable[str]) -> int:
    with session_scope(rt.db_url) as s:
        return s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state.in_(list(states)))) or 0


def route_when_scored(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """The handoff from scoring to routing: once no item is pending, route the job (the
    phase winner does; every other caller gets False). Used after every score step,
    including one that failed its chunk's items."""
    if count_items(rt, job_id, [ItemState.PENDING]) != 0:
        return False
    return route_job(rt, queue, job_id)


def score_chunk(rt: Runtime, queue: TaskQueue, job_id: str, chunk: int) -> int:
    """Score the chunk's pending items; returns how many were scored by this call."""
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
        rule = note_rule(s, job)  # the job_note "streaming: ..." / "routing: ...", once per job
    scored = 0
    to_generate: list[int] = []
    if rows:
        scored_scores, template = score_with_template(rt.router(router_spec), [r.prompt for r in rows])
        scores = scored_scores.tolist()
        now = utcnow()
        with session_scope(rt.db_url) as s:
            if template.stripped:  # what the router did not read, once per job (the first chunk that had it)
                add_event(
                    s,
                    "job_note",
                    template.describe(),
                    job_id=job_id,
                    dedupe_key=f"template:{job_id}",
                    data={"chunk": chunk, **template.to_dict()},
                )
            if rule.held:
                job = s.get_one(Job, job_id)
                values = routed_values(job, rule, scores)
                params = [
                    {"id": r.id, "score": sc, "updated_at": now, **v} for r, sc, v in zip(rows, scores, values, strict=True)
                ]
            else:
                params = [{"id": r.id, "score": sc, "state": ItemState.SCORED, "updated_at": now} for r, sc in zip(rows, scores)]
            s.execute(
                update(Item).where(Item.state == ItemState.PENDING), params, execution_options={"synchronize_session": False}
            )
        scored = len(rows)
        if rule.held:
            to_generate.append(chunk)
    if rule.streams:
        with session_scope(rt.db_url) as s:
            job = s.get_one(Job, job_id)
            held = hold_sample_threshold(s, job)  # the sample rule: hold the threshold once the sample is scored
            # this chunk's items a crash left scored, or (the moment the threshold is held) every waiting chunk
            to_generate += route_scored_chunks(s, job, held, chunk=chunk if rule.held else None)
    for c in sorted(set(to_generate)):
        queue.enqueue("generate", job_id, c)
    route_when_scored(rt, queue, job_id)
    return scored
