"""Issue 10 items 10 and 13: a failed enqueue leaves a marked job the reaper ignores; exit codes; Ctrl-C."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from jobs.errors import InfrastructureError
from jobs.ledger.models import Attempt, Item, Job
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import reaper, service
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import ItemState, JobState
from jobs.pipeline import inflight
from jobs.pipeline.tasks import InlineQueue


class BrokerDown:
    """A broker queue whose server is away (as Celery's send_task with Redis down)."""

    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


class Recording:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None:
        self.sent.append((task, job_id, chunk))


def _data(tmp_path: Path, n: int = 30) -> Path:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"q {i}"}) + "\n" for i in range(n)))
    return data


def _spec(data: Path) -> JobSpec:
    return JobSpec(input_file=str(data), router="length", chunk_size=10)


def test_a_submit_the_broker_refuses_is_marked_and_names_the_job(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    with pytest.raises(InfrastructureError) as err:
        service.submit(rt, _spec(_data(tmp_path)), BrokerDown())
    with session_scope(sqlite_url) as s:
        job = s.scalars(select(Job)).one()
        assert not job.enqueued and job.total == 30
        job_id = job.id
    assert job_id in str(err.value) and f"routebatch resume {job_id}" in str(err.value)
    queue = Recording()
    rep = reaper.tick(rt, queue, now=utcnow() + timedelta(days=1), deep=True)
    assert queue.sent == [] and job_id not in rep.rekicked  # the reaper never runs it behind the user's back
    service.resume(rt, job_id, queue)  # the hint works once the broker is back
    assert {t for t, _, _ in queue.sent} == {"score"}
    with session_scope(sqlite_url) as s:
        assert s.get_one(Job, job_id).enqueued


def test_a_job_submitted_without_a_broker_is_left_to_resume(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = service.submit(rt, _spec(_data(tmp_path)), InlineQueue())
    queue = Recording()
    rep = reaper.tick(rt, queue, now=utcnow() + timedelta(days=1), deep=True)
    assert queue.sent == [] and job_id not in rep.rekicked


def test_an_enqueued_job_that_stalled_is_still_rekicked(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = service.submit(rt, _spec(_data(tmp_path)), Recording())  # messages "lost" with Redis
    queue = Recording()
    rep = reaper.tick(rt, queue, now=utcnow() + timedelta(days=1), deep=True)
    assert job_id in rep.rekicked and queue.sent


def test_cli_submit_with_the_broker_down_is_one_line_with_the_id(tmp_path: Path) -> None:
    from tests.unit.cli.helpers import one_line_error, rb

    done = rb(
        ["submit", str(_data(tmp_path)), "--router", "length"],
        tmp_path,
        ROUTEBATCH_BROKER_URL="redis://127.0.0.1:1/0",
    )
    err = one_line_error(done)
    assert "batch_" in err and "routebatch resume batch_" in err


@pytest.mark.parametrize(
    ("state", "failed", "ok"),
    [
        (JobState.COMPLETED, 0, True),
        (JobState.COMPLETED, 3, True),
        (JobState.COMPLETED, 30, False),  # every item failed
        (JobState.FAILED, 0, False),
        (JobState.CANCELLED, 0, False),
        (JobState.BUDGET_EXHAUSTED, 0, False),
    ],
)
def test_outcome_ok(tmp_path: Path, sqlite_url: str, runtime_factory, state, failed, ok) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = service.submit(rt, _spec(_data(tmp_path)), InlineQueue())
    with session_scope(sqlite_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(state=state))
        ids = list(s.scalars(select(Item.id).where(Item.job_id == job_id).limit(failed)))
        s.execute(update(Item).where(Item.id.in_(ids)).values(state=ItemState.FAILED))
    assert service.status(rt, job_id).outcome_ok is ok


def test_cli_exit_codes_follow_the_outcome(tmp_path: Path) -> None:
    from tests.unit.cli.helpers import rb

    data = _data(tmp_path, 5)
    done = rb(["run", str(data), "--router", "length", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    assert rb(["status", job_id, "--watch", "--json"], tmp_path).returncode == 0
    cancelled = rb(["submit", str(data), "--router", "length", "--json"], tmp_path)
    other = json.loads(cancelled.stdout)["job_id"]
    assert rb(["cancel", other], tmp_path).returncode == 0
    assert rb(["status", other, "--watch", "--interval", "0.1"], tmp_path).returncode == 1
    assert rb(["status", other, "--watch", "--json"], tmp_path).returncode == 1
    assert rb(["status", other], tmp_path).returncode == 0  # a plain look is not an outcome


def test_ctrl_c_records_calls_in_flight_as_maybe_sent(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = service.submit(rt, _spec(_data(tmp_path, 10)), InlineQueue())
    with session_scope(sqlite_url) as s:  # routed and claimed (as generate_chunk does), no budget
        s.execute(
            update(Item)
            .where(Item.job_id == job_id)
            .values(state=ItemState.SENT, route="weak", model="sim-weak", score=0.1, lease_until=utcnow() + timedelta(hours=1))
        )
        ids = sorted(s.scalars(select(Item.id).where(Item.job_id == job_id)))
    for item_id in ids[:3]:
        inflight.mark(job_id, item_id)  # handed to the provider when Ctrl-C came
    assert service.record_interrupted(rt, job_id) == 3
    with session_scope(sqlite_url) as s:
        lost = s.execute(select(Attempt.item_id, Attempt.cost_micro_usd).where(Attempt.error_class == "LostInFlight")).all()
        states = set(s.scalars(select(Item.state).where(Item.job_id == job_id)))
    assert sorted(i for i, _ in lost) == ids[:3]
    assert all(cost > 0 for _, cost in lost)  # counted at the worst case, not 0
    assert states == {ItemState.ROUTED}  # all of them will be sent again by resume


def test_cli_ctrl_c_during_run_prints_the_resume_command(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"q {i}"}) + "\n" for i in range(3000)))
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTEBATCH_BROKER_URL", "ROUTEBATCH_CONFIG")}
    env["ROUTEBATCH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'rb.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli.__main__", "run", str(data), "--router", "length", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = env["ROUTEBATCH_DATABASE_URL"]
    deadline = time.monotonic() + 60
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    try:
        while time.monotonic() < deadline:
            try:
                with eng.connect() as c:
                    n = c.execute(text("SELECT count(*) FROM attempts")).scalar()
            except Exception:
                n = 0
            if n and n > 50:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        eng.dispose()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    got = json.loads(out.strip().splitlines()[-1])
    assert got["interrupted"] and got["resume"] == f"routebatch resume {got['job_id']}"
    assert "Traceback" not in err
