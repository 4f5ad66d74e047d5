"""Expiry in distributed mode: the reaper on the real Postgres applies the completion window
to a job whose workers are busy elsewhere, and closes it once its calls in flight are lost."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from jobs.ledger.models import Item, Job, LedgerEvent
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import reaper, service
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import JobState, Phase
from jobs.pipeline import runner
from jobs.pipeline.tasks import InlineQueue

pytestmark = pytest.mark.integration


class Recording:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None:
        self.sent.append((task, job_id, chunk))


def test_the_reaper_expires_a_job_on_postgres_and_workers_then_send_nothing(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    rt = runtime_factory(pg_url)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"q {i}"}) + "\n" for i in range(60)))
    queue = InlineQueue()
    job_id = service.submit(rt, JobSpec(input_file=str(data), router="length", chunk_size=20, completion_window="30m"), queue)
    with session_scope(pg_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(enqueued=True))  # as if on a broker
    while len(queue) and queue._pending[0][0] == "score":  # the score workers ran; generate messages wait
        task, jid, chunk = queue._pending.popleft()
        runner.run_task(rt, queue, task, jid, chunk)
    later = utcnow() + timedelta(minutes=31)
    with session_scope(pg_url) as s:  # one chunk's worker marked its items sent, then died
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.chunk == 0)
            .values(state="sent", lease_until=later + timedelta(minutes=1))
        )
    other = Recording()
    assert reaper.tick(rt, other, deep=True).expired == []  # not due: nothing happens
    rep = reaper.tick(rt, other, now=later, deep=True)
    assert rep.expired == [job_id] and not rep.skipped
    st = service.status(rt, job_id)
    assert st.status == JobState.EXPIRED and st.counts["expired"] == 40 and st.counts["sent"] == 20
    assert st.phase == Phase.GENERATING  # open until the 20 calls in flight are recorded or lost
    while len(queue):  # the waiting generate messages are delivered after the deadline: no call starts
        task, jid, chunk = queue._pending.popleft()
        runner.run_task(rt, queue, task, jid, chunk)
    assert service.status(rt, job_id).attempts == 0
    rep = reaper.tick(rt, other, now=later + timedelta(minutes=2), deep=True)  # the dead worker's lease ran out
    assert rep.lost_in_flight == 20 and job_id in rep.finalized
    st = service.status(rt, job_id)
    assert st.status == JobState.EXPIRED and st.phase == Phase.DONE
    assert st.counts["expired"] == 60 and st.request_counts == {"total": 60, "completed": 0, "failed": 60}
    assert [m for m in other.sent if m[0] == "generate"] == []
    with session_scope(pg_url) as s:
        kinds = s.scalars(select(LedgerEvent.kind).where(LedgerEvent.job_id == job_id)).all()
    assert kinds.count("job_expired") == 1
