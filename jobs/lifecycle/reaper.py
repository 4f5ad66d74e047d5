"""The reaper: finds work that a crash left behind and puts it back on the queue.

Three things can be lost when a process or a server dies, and each has one rule here:

* an item marked ``sent`` whose worker died before recording the answer: once its lease
  has expired it gets a ``LostInFlight`` attempt (the call may or may not have reached the
  provider, so a possible duplicate stays visible in the ledger) and goes back to
  ``routed`` (``cancelled`` if its job is no longer running), and its chunk is enqueued;
* a message lost with Redis (a restart without persistence) or with a killed worker: a
  job with open items, nothing in flight, nothing waiting in its queue, and no progress
  for ``Settings.stall_after_s()`` (longer than any task may live) is enqueued again;
* budget reservations of dead workers: ``jobs.lifecycle.recovery.recover_lost`` settles the hold of
  a lost item at its reserved amount and releases holds of items never sent; the floor
  shares that released holds keep for a job are given back once the job has ended
  (``jobs.money.budgets.release_kept_of_ended_jobs``, for a release that raced the end).

It also applies the completion window (``jobs.lifecycle.expiry``) to jobs whose deadline
passed while no step of theirs ran (all messages waiting, or lost), and closes expired jobs
once their calls in flight are recorded or lost.

Only jobs whose messages reached a broker (``jobs.enqueued``) are the reaper's: a job
submitted without a broker ("run it later with resume"), one whose ``submit`` could not
enqueue, and an embedded ``run`` are left alone until someone resumes them.

Every tick is idempotent and runs under a Postgres advisory lock, so any number of workers
may run it on a timer and only one does the work at a time. Re-enqueued chunks are safe
because every task skips items already past its step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from jobs.ledger.models import Item, Job
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import transitions as lifecycle
from jobs.lifecycle.expiry import due_job_ids, expire_if_due
from jobs.lifecycle.recovery import Enqueue, LostCounts, open_work, recover_lost
from jobs.lifecycle.states import ITEM_OPEN, ItemState, JobState, Phase
from jobs.money.budgets import release_kept_of_ended_jobs
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime

log = logging.getLogger(__name__)

LOCK_KEY = 0x726F_7574_6562_6174 & 0x7FFF_FFFF_FFFF_FFFF  # "routebat": one reaper at a time


@dataclass
class ReapReport:
    skipped: bool = False  # another reaper holds the lock
    lost_in_flight: int = 0
    expired: list[str] = field(default_factory=list)
    cancelled: int = 0
    reservations: int = 0
    rekicked: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    enqueued: int = 0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def tick(rt: Runtime, queue: TaskQueue, now: datetime | None = None, deep: bool | None = None) -> ReapReport:
    """One pass of the reaper; enqueues only after its transaction has committed.

    ``deep`` forces (or skips) the stall check's one expensive query; by default it runs
    at most every stall/4 seconds (60 s at most) per runtime.
    """
    from jobs.ledger.migrate import ensure_schema

    ensure_schema(rt.db_url)
    now = now or utcnow()
    report = ReapReport()
    todo: list[Enqueue] = []
    finalize: list[str] = []
    with session_scope(rt.db_url) as s:
        # first and alone: the main pass below locks windows before holds (settling lost
        # calls), this one holds before windows, as a late admission of an ended job does
        kept = release_kept_of_ended_jobs(s)
    with session_scope(rt.db_url) as s:
        if not _try_lock(s):
            report.skipped = True
            report.reservations = kept
            return report
        report.expired = expire_overdue(s, now, finalize)
        report.lost_in_flight, report.cancelled, report.reservations = reap_expired_leases(s, rt, now, todo, finalize)
        report.reservations += kept
        report.rekicked = rekick_stalled(s, rt, queue, now, todo, finalize, deep)
        rekick_polls(s, now, todo)
    for item in dict.fromkeys(todo):
        queue.enqueue(*item)
        report.enqueued += 1
    from jobs.pipeline.finalize import maybe_finalize

    for job_id in dict.fromkeys(finalize):
        if maybe_finalize(rt, job_id):
            report.finalized.append(job_id)
    return report


def _try_lock(s: Session) -> bool:
    if s.get_bind().dialect.name != "postgresql":
        return True  # SQLite: one writer at a time anyway
    return bool(s.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY}))


def expire_overdue(s: Session, now: datetime, finalize: list[str]) -> list[str]:
    """Jobs past their completion window end ``expired`` (one rule: ``expire_if_due``);
    ``finalize`` closes those with nothing in flight after the commit."""
    expired = [job_id for job_id in due_job_ids(s, now) if expire_if_due(s, job_id, now)]
    finalize.extend(expired)
    if expired:
        log.warning("reaper: completion window ended for jobs %s", ", ".join(expired))
    return expired


def reap_expired_leases(s: Session, rt: Runtime, now: datetime, todo: list[Enqueue], finalize: list[str]) -> tuple[int, int, int]:
    """Items sent by a worker that died: ``jobs.lifecycle.recovery.recover_lost`` records the unknown
    outcome (settling its budget hold at the reserved amount) and puts the item back to
    ``routed``; here its chunk is enqueued again, or, if its job is no longer running
    (cancelling), the item ends cancelled and the job is closed.

    Returns (items lost in flight, items cancelled, reservations settled or released).
    """
    provider_of = lambda m: rt.config.model(m).provider if m in rt.config.models else ""
    counts: LostCounts = {"lost_items": 0, "settled_at_reserved": 0, "released": 0, "jobs": set()}
    for job_id in _active_job_ids(s):  # per job: the (job_id, state) index, not a table scan
        got = recover_lost(s, job_id=job_id, now=now, provider_of=provider_of)
        counts["lost_items"] += got["lost_items"]
        counts["settled_at_reserved"] += got["settled_at_reserved"]
        counts["released"] += got["released"]
        counts["jobs"] |= got["jobs"]
    cancelled = 0
    for job_id in sorted(counts["jobs"]):
        if s.scalar(select(Job.state).where(Job.id == job_id)) == JobState.IN_PROGRESS:
            chunks = s.scalars(select(Item.chunk).where(Item.job_id == job_id, Item.state == ItemState.ROUTED).distinct()).all()
            todo.extend(("generate", job_id, c) for c in sorted(chunks))
        else:
            cancelled += _cancel_leftovers(s, job_id, now)
            finalize.append(job_id)
    lost = counts["lost_items"]
    if lost:
        log.warning("reaper: %d items lost in flight in jobs %s", lost, ", ".join(sorted(counts["jobs"])))
    return lost, cancelled, counts["settled_at_reserved"] + counts["released"]


def _watched():
    """Jobs the reaper looks after: running or cancelling, and expired ones not yet closed
    (calls in flight at the deadline, whose answers or loss still have to be recorded)."""
    return or_(
        Job.state.in_([JobState.IN_PROGRESS, JobState.CANCELLING]),
        and_(Job.state == JobState.EXPIRED, Job.phase != Phase.DONE),
    )


def _active_job_ids(s: Session) -> list[str]:
    return list(s.scalars(select(Job.id).where(_watched(), Job.enqueued.is_(True))))


def rekick_stalled(
    s: Session, rt: Runtime, queue: TaskQueue, now: datetime, todo: list[Enqueue], finalize: list[str], deep: bool | None = None
) -> list[str]:
    """Enqueue again the open work of jobs that stopped moving (their messages were lost)."""
    stall = timedelta(seconds=rt.settings.stall_after_s())
    active = s.execute(select(Job.id, Job.state, Job.phase, Job.in_progress_at).where(_watched(), Job.enqueued.is_(True))).all()
    if not active:
        return []
    open_states = [st.value for st in ITEM_OPEN]
    if deep is None:
        deep = _stall_check_due(rt, now, stall)
    kicked: list[str] = []
    for job in active:
        mine = Item.job_id == job.id
        # Cheap, index-backed checks every tick: something in flight, or nothing left open.
        if s.scalar(select(select(Item.id).where(mine, Item.state == ItemState.SENT, Item.lease_until >= now).exists())):
            continue
        if not s.scalar(select(select(Item.id).where(mine, Item.state.in_(open_states)).exists())):
            finalize.append(job.id)  # everything is terminal: only the finalize step was lost
            continue
        if not deep:
            continue
        # The last change reads every item of the job: done at most every stall/4 (<= 60 s).
        last_item = s.scalar(select(func.max(Item.updated_at)).where(mine))
        moments = [t for t in (last_item, job.in_progress_at) if t is not None]
        if moments and now - max(moments) < stall:
            continue
        if job.state in (JobState.CANCELLING, JobState.EXPIRED):
            _cancel_leftovers(s, job.id, now)
            finalize.append(job.id)
            kicked.append(job.id)
            continue
        step = "score" if job.phase == Phase.SCORING else "generate"
        backlog = getattr(queue, "backlog", None)
        if backlog is not None:
            try:
                if backlog(step) > 0:
                    continue  # its messages may still be waiting behind other jobs' work
            except Exception:
                log.warning("reaper: cannot read the %s queue length", step, exc_info=True)
                continue
        kicked.append(job.id)
        todo.extend(open_work(s, job.id, job.phase))
        # Touch one open item: the job counts as moving again, so the next tick waits a full
        # stall period before kicking it a second time (cheap even for a million items).
        first_open = select(func.min(Item.id)).where(Item.job_id == job.id, Item.state.in_(open_states)).scalar_subquery()
        s.execute(
            update(Item).where(Item.id == first_open).values(updated_at=now), execution_options={"synchronize_session": False}
        )
    if kicked:
        log.warning("reaper: re-enqueued stalled jobs %s", ", ".join(kicked))
    return kicked


POLL_OVERDUE = timedelta(seconds=120)
"""A provider batch this late for its poll lost its poll chain (the worker died holding it)."""


def rekick_polls(s: Session, now: datetime, todo: list[Enqueue]) -> None:
    """Queue a ``poll`` for each job whose provider batches are overdue: submitted ones past
    their poll time, or preparing ones whose uploader's lease ran out (to be reconciled)."""
    from jobs.ledger.models import ProviderBatch

    late = now - POLL_OVERDUE
    overdue = or_(
        and_(ProviderBatch.state == "submitted", ProviderBatch.next_poll_at < late),
        and_(ProviderBatch.state == "preparing", ProviderBatch.lease_until < now),
    )
    jobs = s.scalars(select(ProviderBatch.job_id).where(overdue).distinct()).all()
    todo.extend(("poll", job_id, None) for job_id in sorted(jobs))


_last_deep_check: dict[int, datetime] = {}


def _stall_check_due(rt: Runtime, now: datetime, stall: timedelta) -> bool:
    """Throttle the one expensive query (max(updated_at) over a job's items) per runtime."""
    every = min(max(stall / 4, timedelta(seconds=1)), timedelta(seconds=60))
    last = _last_deep_check.get(id(rt))
    if last is not None and timedelta(0) <= now - last < every:
        return False
    _last_deep_check[id(rt)] = now
    return True


def _cancel_leftovers(s: Session, job_id: str, now: datetime) -> int:
    """A cancelling (or expired) job whose workers are gone: its unsent items end cancelled
    (expired)."""
    job = s.get(Job, job_id)
    n = rowcount(
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state.in_(lifecycle.UNSENT_STATES))
            .values(lease_until=None, updated_at=now, **lifecycle.unsent_outcome(job))
        )
    )
    if job is not None and job.phase == Phase.SCORING:
        job.phase = Phase.GENERATING  # so that maybe_finalize may close it
    return n
