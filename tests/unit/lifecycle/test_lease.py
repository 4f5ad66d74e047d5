"""Issue 10 item 6: one runner per job (a row lease with a heartbeat)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.errors import JobBusy
from jobs.ledger.models import Item, Job
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import lease as leases
from jobs.lifecycle import service
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import ItemState
from jobs.pipeline import runner
from jobs.pipeline.tasks import InlineQueue


def _job(tmp_path: Path, rt, n: int = 20) -> str:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"q {i}"}) + "\n" for i in range(n)))
    return service.submit(rt, JobSpec(input_file=str(data), router="length"), InlineQueue())


def test_a_second_runner_is_refused_with_the_holder(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = _job(tmp_path, rt)
    with leases.acquire(sqlite_url, job_id):
        with pytest.raises(JobBusy) as err:
            leases.acquire(sqlite_url, job_id)
        msg = str(err.value)
        assert socket.gethostname() in msg and f"pid {os.getpid()}" in msg and "since" in msg
        with pytest.raises(JobBusy):  # resume too: it must not send what the holder is sending
            service.resume(rt, job_id, InlineQueue(), force=True)
        assert service.status(rt, job_id).runner is not None
    leases.acquire(sqlite_url, job_id, heartbeat=False).release()  # released: free again


def test_an_expired_lease_is_taken_over(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = _job(tmp_path, rt)
    old = leases.acquire(sqlite_url, job_id, ttl_s=5, heartbeat=False, now=utcnow() - timedelta(seconds=60))
    new = leases.acquire(sqlite_url, job_id, heartbeat=False)
    assert new.runner_id != old.runner_id
    assert not leases.renew(sqlite_url, job_id, old.runner_id)  # the old holder learns it lost the job
    old.release()  # does not free the new holder's lease
    with pytest.raises(JobBusy):
        leases.acquire(sqlite_url, job_id, heartbeat=False)
    new.release()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = _job(tmp_path, rt)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with session_scope(sqlite_url) as s:
        job = s.get_one(Job, job_id)
        job.runner_id, job.runner_host, job.runner_pid = "x:1:dead", socket.gethostname(), int(dead.stdout)
        job.runner_since, job.lease_until = utcnow(), utcnow() + timedelta(minutes=10)
    leases.acquire(sqlite_url, job_id, heartbeat=False).release()


def test_the_heartbeat_keeps_the_lease_alive(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    import time

    rt = runtime_factory(sqlite_url)
    job_id = _job(tmp_path, rt)
    with leases.acquire(sqlite_url, job_id, ttl_s=0.6):
        time.sleep(1.5)  # > ttl: only the heartbeat keeps it
        with pytest.raises(JobBusy):
            leases.acquire(sqlite_url, job_id, heartbeat=False)


def test_steps_of_a_held_job_are_skipped_by_everyone_else(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = _job(tmp_path, rt)
    with leases.acquire(sqlite_url, job_id, heartbeat=False) as held:
        runner.run_task(rt, InlineQueue(), "score", job_id, 0)  # a worker: skipped
        with session_scope(sqlite_url) as s:
            states = set(s.scalars(select(Item.state).where(Item.job_id == job_id)))
        assert states == {ItemState.PENDING}
        runner.run_task(rt, InlineQueue(), "score", job_id, 0, runner_id=held.runner_id)  # the holder: runs
        with session_scope(sqlite_url) as s:
            states = set(s.scalars(select(Item.state).where(Item.job_id == job_id)))
        assert ItemState.PENDING not in states


def test_cli_resume_of_a_live_run_exits_non_zero(tmp_path: Path) -> None:
    from tests.unit.cli.helpers import one_line_error, rb

    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"q {i}"}) + "\n" for i in range(5)))
    done = rb(["submit", str(data), "--router", "length", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    url = f"sqlite:///{tmp_path / 'rb.db'}"
    holder = leases.acquire(url, job_id, heartbeat=False)  # "another run", alive (this test's pid)
    try:
        err = one_line_error(rb(["resume", job_id], tmp_path))
        assert "being run by another process" in err and str(os.getpid()) in err
    finally:
        holder.release()
    assert rb(["resume", job_id, "--json"], tmp_path).returncode == 0
