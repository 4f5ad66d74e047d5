"""Job state transitions as small named functions, each stamping its timestamp.

Illegal transitions raise, so a bug cannot move a completed job back to validating; the
legal moves are the table in ``jobs.lifecycle.states``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from jobs.errors import IllegalTransition
from jobs.ledger.models import Item, Job
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import JOB_TERMINAL, JOB_TRANSITIONS, ItemState, JobState


def transition(job: Job, target: JobState) -> None:
    current = JobState(job.state)
    if current == target:
        return
    if target not in JOB_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"job {job.id}: cannot go from {current} to {target}")
    job.state = target
    setattr(job, f"{target.value}_at", utcnow())
    if target in _NOTIFIED:
        _notify(job, _NOTIFIED[target], f"job {job.id} {target.value}")
    if target in JOB_TERMINAL:
        _release_floor(job)


def _release_floor(job: Job) -> None:
    """A job that ends gives back what its weak floor still holds (jobs.money.admission)."""
    from sqlalchemy.orm import object_session

    from jobs.money.budgets import release_floor

    s = object_session(job)
    if s is not None:
        release_floor(s, job.id, note=f"job {job.state}: floor released")


def fail(job: Job, error: str) -> None:
    transition(job, JobState.FAILED)
    job.error = error
    _notify(job, "job_failed", f"job {job.id} failed: {error}")


_NOTIFIED = {
    JobState.COMPLETED: "job_completed",
    JobState.CANCELLED: "job_cancelled",
    JobState.BUDGET_EXHAUSTED: "job_budget_exhausted",
    JobState.EXPIRED: "job_expired",
}


def _notify(job: Job, kind: str, message: str) -> None:
    """Webhooks hear of a job's outcome once its transaction commits (jobs.notify.webhooks)."""
    from sqlalchemy.orm import object_session

    from jobs.notify.webhooks import Notification, queue_after_commit

    s = object_session(job)
    if s is not None:
        queue_after_commit(s, Notification(kind, message, {"job_id": job.id, "state": str(job.state)}))


def cancel_unsent_items(db_url: str, job_id: str, item_ids: list[int], holds: list | None = None) -> int:
    """Items claimed but never handed to a provider because the job stopped first.

    They end ``cancelled`` (``skipped_budget`` when the budget stopped the job, ``expired``
    when its completion window ended), and
    any money held for them is released to zero: these calls provably were not made.
    """
    from jobs.money.budgets import release

    with session_scope(db_url) as s:
        for hold in holds or []:
            release(s, hold, note="job stopped before the call: released to zero")
        if not item_ids:
            return 0
        return rowcount(
            s.execute(
                update(Item)
                .where(Item.id.in_(item_ids), Item.state == ItemState.SENT)
                .values(lease_until=None, updated_at=utcnow(), **unsent_outcome(s.get(Job, job_id)))
            )
        )


def return_unsent_items(
    db_url: str, job_id: str, item_ids: list[int], holds: list | None = None, lease: datetime | None = None
) -> int:
    """Items claimed (under ``lease``) but never handed to a provider because their step ended
    on an error: their holds are released to zero and they go back to ``routed``, so the
    step's retry sends them at once (left claimed, they waited for the reaper's lease check).
    An item claimed again elsewhere since (another lease) is not touched.

    If the job stopped meanwhile (a cancel, the budget) they end as
    :func:`cancel_unsent_items` ends them. The job's state is read after the items are
    written: a stop that commits later waits for these rows and then finds them ``routed``,
    which it ends itself.
    """
    from jobs.money.budgets import release

    with session_scope(db_url) as s:
        for hold in holds or []:
            release(s, hold, note="step ended on an error before the call: released to zero")
        if not item_ids:
            return 0
        guard = [Item.id.in_(item_ids), Item.state == ItemState.SENT]
        if lease is not None:
            guard.append(Item.lease_until == lease)
        now = utcnow()
        back = list(
            s.scalars(
                update(Item).where(*guard).values(state=ItemState.ROUTED, lease_until=None, updated_at=now).returning(Item.id),
                execution_options={"synchronize_session": False},
            )
        )
        job = s.get(Job, job_id)
        if back and (job is None or job.state != JobState.IN_PROGRESS):
            s.execute(
                update(Item)
                .where(Item.id.in_(back), Item.state == ItemState.ROUTED)
                .values(updated_at=now, **unsent_outcome(job)),
                execution_options={"synchronize_session": False},
            )
        return len(back)


_UNSENT_TARGET = {JobState.BUDGET_EXHAUSTED: ItemState.SKIPPED_BUDGET, JobState.EXPIRED: ItemState.EXPIRED}


def expired_message(job: Job) -> str:
    window = job.completion_window or "completion"
    return f"the batch's {window} completion window ended before this request was sent"


def unsent_outcome(job: Job | None) -> dict:
    """How an item never handed to a provider ends when its job stopped (the one rule):
    ``cancelled``, ``skipped_budget`` after the budget stopped the job, or ``expired`` (with
    the reason) after its completion window ended."""
    target = _UNSENT_TARGET.get(JobState(job.state), ItemState.CANCELLED) if job is not None else ItemState.CANCELLED
    if target == ItemState.EXPIRED and job is not None:
        return {"state": target, "error": expired_message(job)}
    return {"state": target}


UNSENT_STATES = (ItemState.PENDING, ItemState.SCORED, ItemState.ROUTED, ItemState.RESERVED)
