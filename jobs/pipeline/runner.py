"""The step table: one name per pipeline step, the same in embedded and distributed mode.

Each step is idempotent under redelivery: it only touches items still in the state it
expects, guarded in SQL, and the job advances between phases by one conditional UPDATE of
``jobs.phase`` that exactly one caller wins.

A job held by a live runner (``run``/``resume`` in embedded mode, ``jobs.lifecycle.lease``)
is that runner's alone: a step delivered to anyone else is skipped, so a worker and an
embedded runner never send the same job's prompts.

A step that raises is handled here, the same for Celery redelivery and inline ``resume``:

* a generate step's claimed items go back to ``routed`` at once, their holds released,
  except the calls this process had handed to a provider, which are recorded as
  maybe-sent (so a lease expiry later never charges calls that were not made);
* the first time a chunk's step raises an error it raises again (a retry may help); the
  second time the same error comes back for that chunk, its open items end ``failed``
  with the reason and the job moves on instead of retrying forever;
* an ``--adapt`` job's ``adapt`` or ``judge`` step that raises the same error twice stops adapting: the
  rest of the job is routed as usual, with the error in its notes
  (``jobs.pipeline.adapt.adapt_failed``).

Errors that mean a server was briefly away (transient database errors, connection
errors) are not counted: they are the broker's retries to make.
"""

from __future__ import annotations

import logging

from jobs.pipeline.adapt import adapt_failed, adapt_step, adapt_when_sampled, judge_step
from jobs.pipeline.batch_poll import poll_batches
from jobs.pipeline.finalize import maybe_finalize
from jobs.pipeline.generate import generate_chunk
from jobs.pipeline.route import route_after_pilot, route_job
from jobs.pipeline.score import route_when_scored, score_chunk
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime

TASKS = ("score", "route", "adapt", "judge", "generate", "finalize", "poll")


log = logging.getLogger(__name__)


def run_task(rt: Runtime, queue: TaskQueue, task: str, job_id: str, chunk: int | None, runner_id: str | None = None) -> None:
    """Run one step; ``runner_id`` is the caller's lease (None for a worker)."""
    from jobs.lifecycle.expiry import expire_due
    from jobs.lifecycle.lease import held_by_other

    if task not in TASKS:
        raise ValueError(f"unknown pipeline step {task!r}")
    holder = held_by_other(rt.db_url, job_id, runner_id)
    if holder is not None:
        log.warning("skipping %s of job %s chunk %s: the job is held by runner %s", task, job_id, chunk, holder)
        return
    try:
        expire_due(rt, job_id)  # past its completion window: the job ends expired and this step starts no call
        _run(rt, queue, task, job_id, chunk)
    except Exception as exc:
        if _is_transient(exc):
            raise
        # both steps are the adapting's: judging raises in either (a resumed adapt step judges)
        if task in ("adapt", "judge") and not first_step_error(rt, "adapt", job_id, 0, exc):
            adapt_failed(rt, queue, job_id, error_signature(exc))
            return
        if task not in ("score", "generate"):
            raise
        if _chunk_failed(rt, queue, task, job_id, chunk or 0, exc):
            return
        raise


def _run(rt: Runtime, queue: TaskQueue, task: str, job_id: str, chunk: int | None) -> None:
    if task == "score":
        score_chunk(rt, queue, job_id, chunk or 0)
    elif task == "route":
        route_job(rt, queue, job_id)
    elif task == "adapt":
        adapt_step(rt, queue, job_id)
    elif task == "judge":
        judge_step(rt, queue, job_id)
    elif task == "generate":
        generate_chunk(rt, queue, job_id, chunk or 0)
    elif task == "poll":
        poll_batches(rt, queue, job_id)
    else:
        maybe_finalize(rt, job_id)


def _is_transient(exc: BaseException) -> bool:
    from jobs.ledger.transient import is_transient_db_error

    return is_transient_db_error(exc) or isinstance(exc, ConnectionError | TimeoutError)


def error_signature(exc: BaseException) -> str:
    """The error as one short line: what "the same error twice" compares."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def first_step_error(rt: Runtime, task: str, job_id: str, chunk: int, exc: BaseException) -> bool:
    """Record that the step raised ``exc``; True the first time this step of this chunk
    raised this error (a fluke is retried), False when it is the same error again."""
    import hashlib

    from jobs.ledger.session import session_scope
    from jobs.money.budgets import add_event

    reason = error_signature(exc)
    key = f"step_error:{job_id}:{task}:{chunk}:" + hashlib.sha256(reason.encode("utf-8", "replace")).hexdigest()[:16]
    with session_scope(rt.db_url) as s:
        return add_event(
            s,
            "step_error",
            f"{task} of chunk {chunk} raised {reason}",
            job_id=job_id,
            dedupe_key=key[:200],
            data={"step": task, "chunk": chunk},
        )


def _chunk_failed(rt: Runtime, queue: TaskQueue, task: str, job_id: str, chunk: int, exc: BaseException) -> bool:
    """Clean up after a raising step; True when the chunk's open items were failed (the
    same error a second time) and the step should not raise."""
    from sqlalchemy import update

    from jobs.ledger.models import Item
    from jobs.ledger.session import session_scope
    from jobs.ledger.types import utcnow
    from jobs.lifecycle.recovery import recover_lost, worst_case_estimator
    from jobs.lifecycle.states import ItemState
    from jobs.money.budgets import add_event
    from jobs.pipeline import inflight

    reason = error_signature(exc)
    claim = inflight.take_claim(job_id, chunk) if task == "generate" else None
    if claim is not None:  # the items this step claimed, not those of its chunk another step took
        with session_scope(rt.db_url) as s:
            recover_lost(
                s,
                job_id=job_id,
                claim=claim,
                force=True,
                sent_ids=inflight.take(job_id, claim),
                estimate=worst_case_estimator(rt.config),
            )
    if first_step_error(rt, task, job_id, chunk, exc):
        log.warning("%s of job %s chunk %s raised %s (it fails the chunk if it happens again)", task, job_id, chunk, reason)
        return False
    states = [ItemState.PENDING] if task == "score" else [ItemState.ROUTED, ItemState.SCORED]
    with session_scope(rt.db_url) as s:
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.chunk == chunk, Item.state.in_(states))
            .values(state=ItemState.FAILED, error=f"{task} failed twice with the same error: {reason}", updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        add_event(s, "chunk_failed", f"{task} of chunk {chunk}: items failed after the same error twice: {reason}", job_id=job_id)
    log.warning("%s of job %s chunk %s raised the same error twice: its items are failed", task, job_id, chunk)
    if task == "score":
        route_when_scored(rt, queue, job_id)
    else:
        maybe_finalize(rt, job_id)
        route_after_pilot(rt, queue, job_id)  # a failed pilot chunk has ended too: route the rest
        adapt_when_sampled(rt, queue, job_id)  # the same for an adapt sample
    return True
