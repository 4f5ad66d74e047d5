"""Job state transitions as small named functions, each stamping its timestamp.

Illegal transitions raise, so a bug cannot move a completed job back to validating; the
legal moves are the table in ``jobs.states``.
"""

from __future__ import annotations

from sqlalchemy import update

from jobs.db.models import Item, Job
from jobs.db.session import session_scope
from jobs.db.types import utcnow
from jobs.states import JOB_TRANSITIONS, ItemState, JobState


class IllegalTransition(RuntimeError):
    pass


def transition(job: Job, target: JobState) -> None:
    current = JobState(job.state)
    if current == target:
        return
    if target not in JOB_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"job {job.id}: cannot go from {current} to {target}")
    job.state = target
    setattr(job, f"{target.value}_at", utcnow())


def fail(job: Job, error: str) -> None:
    transition(job, JobState.FAILED)
    job.error = error


def cancel_unsent_items(db_url: str, job_id: str, item_ids: list[int]) -> int:
    """Items marked sent but never handed to a provider (the job was cancelled first)."""
    if not item_ids:
        return 0
    with session_scope(db_url) as s:
        return s.execute(
            update(Item)
            .where(Item.id.in_(item_ids), Item.state == ItemState.SENT)
            .values(state=ItemState.CANCELLED, lease_until=None, updated_at=utcnow())
        ).rowcount


UNSENT_STATES = (ItemState.PENDING, ItemState.SCORED, ItemState.ROUTED, ItemState.RESERVED)
