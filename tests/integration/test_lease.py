"""Issue 10 items 2, 6, 10 on Postgres: the runner lease, ingest progress (COPY path), not-enqueued jobs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.errors import InfrastructureError, JobBusy
from jobs.ledger.models import InvalidRow, Item, Job
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import lease as leases
from jobs.lifecycle import reaper, service
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import JobState
from jobs.pipeline.tasks import InlineQueue

pytestmark = pytest.mark.integration


def _data(tmp_path: Path, n: int) -> Path:
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(
            ("{bad\n" if i % 777 == 0 else json.dumps({"custom_id": f"k{i}", "prompt": f"q {i}"}) + "\n") for i in range(1, n + 1)
        )
    )
    return data


def test_lease_is_exclusive_on_postgres(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    rt = runtime_factory(pg_url)
    job_id = service.submit(rt, JobSpec(input_file=str(_data(tmp_path, 10)), router="length"), InlineQueue())
    with leases.acquire(pg_url, job_id, heartbeat=False):
        with pytest.raises(JobBusy, match="pid"):
            leases.acquire(pg_url, job_id, heartbeat=False)
    expired = leases.acquire(pg_url, job_id, heartbeat=False, ttl_s=1, now=utcnow() - timedelta(seconds=30))
    leases.acquire(pg_url, job_id, heartbeat=False).release()
    assert not leases.renew(pg_url, job_id, expired.runner_id)


def test_interrupted_ingest_resumes_exactly_on_postgres(tmp_path: Path, pg_url: str, runtime_factory, monkeypatch) -> None:
    rt = runtime_factory(pg_url)
    data = _data(tmp_path, 12_000)
    real = service.read_rows

    def reader(*args, **kwargs):
        rows = real(*args, **kwargs)

        def gen():
            for k, row in enumerate(rows, start=1):
                if k > 8_000:
                    raise KeyboardInterrupt
                yield row

        return gen()

    monkeypatch.setattr(service, "read_rows", reader)
    with pytest.raises(KeyboardInterrupt):
        service.submit(rt, JobSpec(input_file=str(data), router="length"), InlineQueue())
    monkeypatch.undo()
    with session_scope(pg_url) as s:
        job = s.scalars(select(Job)).one()
        assert job.state == JobState.VALIDATING and job.ingest_line == 5_000
        job_id = job.id
    service.resume(rt, job_id, InlineQueue())
    with session_scope(pg_url) as s:
        lines = list(s.scalars(select(Item.line_no).where(Item.job_id == job_id))) + list(
            s.scalars(select(InvalidRow.line_no).where(InvalidRow.job_id == job_id))
        )
        assert s.get_one(Job, job_id).state == JobState.IN_PROGRESS
    assert sorted(lines) == list(range(1, 12_001))


def test_not_enqueued_job_is_left_alone_by_the_reaper_on_postgres(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    class Down:
        def enqueue(self, *a) -> None:
            raise ConnectionError("connection refused")

    class Rec:
        sent: list = []

        def enqueue(self, *a) -> None:
            self.sent.append(a)

    rt = runtime_factory(pg_url)
    with pytest.raises(InfrastructureError, match="resume"):
        service.submit(rt, JobSpec(input_file=str(_data(tmp_path, 30)), router="length"), Down())
    queue = Rec()
    reaper.tick(rt, queue, now=utcnow() + timedelta(days=1), deep=True)
    assert queue.sent == []
