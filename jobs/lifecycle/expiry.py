"""The completion window: one rule for when a job's deadline passes, wherever it is noticed.

A job submitted with ``--completion-window 24h`` gets ``expires_at`` = ``created_at`` + 24 h.
Once that moment passes with items unfinished, the job ends ``expired`` (as OpenAI's Batch
API does) and every item not yet handed to a provider ends ``expired`` with an OpenAI-style
``batch_expired`` error in the export. Calls already in flight are recorded normally: the
answer of a call that was made is never thrown away.

The rule (``expire_if_due``) is applied where the pipeline would otherwise start a call:
before every pipeline step (``jobs.pipeline.runner``), in the generate step's state poll
(``jobs.pipeline.record.job_state``, read every ``cancel_poll_s`` by the fan-out, which then
stops), and by the reaper for jobs nobody is working on. So it holds in an embedded ``run``
and in distributed mode alike, and it is idempotent: whoever comes first expires the job.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs.ledger.models import Item, Job
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import transitions as lifecycle
from jobs.lifecycle.states import ItemState, JobState, Phase
from jobs.runtime import Runtime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")
MAX_WINDOW = timedelta(days=365)


def parse_window(text: str) -> timedelta:
    """``24h``, ``90m``, ``2d``, ``1h30m``, ``45s`` as a duration; ``ValueError`` with the
    accepted forms otherwise (a bare number is refused: minutes or hours would be a guess)."""
    raw = text.strip().lower().replace(" ", "")
    if not raw or _PART.sub("", raw) != "":
        raise ValueError(f"completion window {text!r} is not a duration; use e.g. 24h, 90m, 2d or 1h30m")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(raw))
    if seconds <= 0:
        raise ValueError(f"completion window {text!r} must be longer than zero")
    window = timedelta(seconds=seconds)
    if window > MAX_WINDOW:
        raise ValueError(f"completion window {text!r} is longer than {MAX_WINDOW.days} days")
    return window


def expire_if_due(s: Session, job_id: str, now: datetime | None = None) -> bool:
    """Apply the deadline to one job inside the caller's transaction.

    True when this call expired the job: it was ``in_progress`` past ``expires_at``; its
    unsent items are now ``expired`` and the job is ``expired``. Items ``sent`` stay as they
    are, so their answers are recorded; ``jobs.pipeline.finalize.maybe_finalize`` closes the
    job once they are (the phase is moved off ``scoring`` so it may). The job row is locked
    (``FOR UPDATE`` on Postgres) so a concurrent cancel or finalize sees one outcome.
    """
    now = now or utcnow()
    due = s.execute(select(Job.state, Job.expires_at).where(Job.id == job_id)).first()
    if due is None or due.expires_at is None or due.state != JobState.IN_PROGRESS or due.expires_at > now:
        return False  # the common case: one indexed read, nothing locked
    job = s.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None or job.state != JobState.IN_PROGRESS:
        return False
    lifecycle.transition(job, JobState.EXPIRED)
    if job.phase == Phase.SCORING:
        job.phase = Phase.GENERATING  # so that maybe_finalize may close it
    n = rowcount(
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state.in_(lifecycle.UNSENT_STATES))
            .values(state=ItemState.EXPIRED, error=lifecycle.expired_message(job), lease_until=None, updated_at=now),
            execution_options={"synchronize_session": False},
        )
    )
    from jobs.money.budgets import add_event

    add_event(
        s,
        "job_expired",
        f"completion window {job.completion_window} ended: {n} unsent items expired",
        job_id=job_id,
        data={"expired_items": n, "expires_at": job.expires_at.isoformat() if job.expires_at else None},
    )
    return True


def expire_due(rt: Runtime, job_id: str, now: datetime | None = None) -> bool:
    """``expire_if_due`` in its own transaction, then close the job if nothing is in flight
    (which also writes its ``--out`` files). Cheap when the job has no deadline or it has not
    passed: called before every pipeline step and on every state poll of the fan-out."""
    with session_scope(rt.db_url) as s:
        expired = expire_if_due(s, job_id, now)
    if expired:
        from jobs.pipeline.finalize import maybe_finalize

        maybe_finalize(rt, job_id)
    return expired


def due_job_ids(s: Session, now: datetime) -> list[str]:
    """Jobs in progress whose deadline has passed (for the reaper)."""
    return list(
        s.scalars(select(Job.id).where(Job.state == JobState.IN_PROGRESS, Job.expires_at.is_not(None), Job.expires_at <= now))
    )
