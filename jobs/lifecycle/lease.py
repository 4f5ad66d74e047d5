"""One runner per job: a row lease on ``jobs`` (runner id, host, pid, since, lease_until).

``run`` and ``resume`` take the lease before they touch a job and keep it alive with a
heartbeat thread; the pipeline steps (``jobs.pipeline.runner.run_task``) skip a job whose
live lease belongs to someone else, so an embedded runner and Celery workers never work
the same job at once. The lease is one conditional ``UPDATE`` (the same on SQLite and
Postgres): it is taken when nobody holds it, the holder's lease expired, or the holder is
a process on this host that no longer exists (a SIGKILLed ``run`` need not wait out the
lease).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from jobs.errors import JobBusy
from jobs.ledger.models import Job
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.status import get_job

log = logging.getLogger(__name__)

LEASE_TTL_S = 30.0
"""How long a lease lives without a heartbeat; the heartbeat renews it every third of it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lease:
    """A held lease; ``release()`` (or the context manager) gives it back."""

    db_url: str
    job_id: str
    runner_id: str
    ttl_s: float = LEASE_TTL_S
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: bool = False

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.job_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not renew(self.db_url, self.job_id, self.runner_id, self.ttl_s):
                    self.lost = True
                    log.warning("lease on job %s was taken over by another runner", self.job_id)
                    return
            except Exception:  # a database blip: try again at the next beat
                log.warning("cannot renew the lease on job %s", self.job_id, exc_info=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with session_scope(self.db_url) as s:
                s.execute(
                    update(Job)
                    .where(Job.id == self.job_id, Job.runner_id == self.runner_id)
                    .values(runner_id=None, runner_host=None, runner_pid=None, runner_since=None, lease_until=None)
                )
        except Exception:  # it expires on its own
            log.warning("cannot release the lease on job %s", self.job_id, exc_info=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_text(job: Job) -> str:
    since = job.runner_since.isoformat(timespec="seconds") if job.runner_since else "?"
    until = job.lease_until.isoformat(timespec="seconds") if job.lease_until else "?"
    return f"host {job.runner_host}, pid {job.runner_pid}, since {since} (lease until {until})"


def acquire(
    db_url: str, job_id: str, *, ttl_s: float = LEASE_TTL_S, heartbeat: bool = True, now: datetime | None = None
) -> Lease:
    """Take the job's lease or raise ``JobBusy`` naming the live holder."""
    now = now or utcnow()
    host, pid = socket.gethostname(), os.getpid()
    runner_id = f"{host}:{pid}:{uuid.uuid4().hex[:8]}"
    with session_scope(db_url) as s:
        job = get_job(s, job_id)
        takeover = or_(Job.runner_id.is_(None), Job.lease_until.is_(None), Job.lease_until < now)
        if job.runner_id and job.runner_host == host and job.runner_pid is not None and not _pid_alive(job.runner_pid):
            takeover = or_(takeover, Job.runner_id == job.runner_id)  # the holder died on this host
        got = rowcount(
            s.execute(
                update(Job)
                .where(Job.id == job_id, takeover)
                .values(
                    runner_id=runner_id,
                    runner_host=host,
                    runner_pid=pid,
                    runner_since=now,
                    lease_until=now + timedelta(seconds=ttl_s),
                ),
                execution_options={"synchronize_session": False},
            )
        )
        if not got:
            s.refresh(job)
            raise JobBusy(
                f"job {job_id} is being run by another process ({holder_text(job)}); "
                "wait for it, or stop it and resume once its lease has expired"
            )
    lease = Lease(db_url, job_id, runner_id, ttl_s)
    if heartbeat:
        lease.start_heartbeat()
    return lease


def renew(db_url: str, job_id: str, runner_id: str, ttl_s: float = LEASE_TTL_S) -> bool:
    with session_scope(db_url) as s:
        return bool(
            rowcount(
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.runner_id == runner_id)
                    .values(lease_until=utcnow() + timedelta(seconds=ttl_s))
                )
            )
        )


def held_by_other(db_url: str, job_id: str, runner_id: str | None = None, now: datetime | None = None) -> str | None:
    """The live holder's description when someone other than ``runner_id`` holds the job."""
    now = now or utcnow()
    with session_scope(db_url) as s:
        row = s.execute(
            select(Job.runner_id, Job.runner_host, Job.runner_pid, Job.runner_since, Job.lease_until).where(Job.id == job_id)
        ).first()
        if row is None or row.runner_id is None or row.runner_id == runner_id:
            return None
        if row.lease_until is None or row.lease_until < now:
            return None
        return f"{row.runner_host} pid {row.runner_pid}"
