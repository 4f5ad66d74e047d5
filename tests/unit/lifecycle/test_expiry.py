"""Issue 15 item 3: name, metadata, completion window and expiry; cancel/expiry are final
unless ``resume --reopen``; ``list`` filters; ``notes`` in the status."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update

from jobs.errors import ConfigError, IllegalTransition
from jobs.ledger.models import Attempt, Item, Job, LedgerEvent
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import reaper, service
from jobs.lifecycle.expiry import expire_due, parse_window
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import JobState, Phase
from jobs.money.budgets import add_event
from jobs.pipeline.finalize import maybe_finalize
from jobs.pipeline.tasks import InlineQueue
from jobs.settings import Settings


class Recording:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None:
        self.sent.append((task, job_id, chunk))


def _data(tmp_path: Path, n: int = 30) -> Path:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"q {i}"}) + "\n" for i in range(n)))
    return data


def _past_deadline(db_url: str, job_id: str, seconds: float = 1.0) -> None:
    with session_scope(db_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(expires_at=utcnow() - timedelta(seconds=seconds)))


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("90m", 5400), ("2d", 172800), ("1h30m", 5400), (" 45S ", 45)])
def test_parse_window_reads_durations(text: str, seconds: int) -> None:
    assert parse_window(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["24", "", "h", "0h", "5x", "1.5h", "-1h", "400d"])
def test_parse_window_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="completion window"):
        parse_window(text)


def test_metadata_limits_are_openais() -> None:
    ok = JobSpec(input_file="x", metadata=[f"k{i}=v" for i in range(16)])
    assert ok.metadata == {f"k{i}": "v" for i in range(16)}
    assert JobSpec(input_file="x", metadata=["a=b=c", "e="]).metadata == {"a": "b=c", "e": ""}
    assert JobSpec(input_file="x", metadata=[]).metadata is None
    assert JobSpec(input_file="x", metadata={"team": "a"}).metadata == {"team": "a"}
    cases = {
        "at most 16": [f"k{i}=v" for i in range(17)],
        "at most 64": ["k" * 65 + "=v"],
        "at most 512": ["k=" + "v" * 513],
        "not key=value": ["novalue"],
        "given twice": ["a=1", "a=2"],
        "key is empty": ["=v"],
    }
    for message, value in cases.items():
        with pytest.raises(ValidationError, match=message):
            JobSpec(input_file="x", metadata=value)
    with pytest.raises(ValidationError, match="strings"):
        JobSpec(input_file="x", metadata={"a": 1})
    assert JobSpec(input_file="x", metadata=["k" * 64 + "=" + "v" * 512]).metadata  # the limits themselves pass
    with pytest.raises(ValidationError, match="not a duration"):
        JobSpec(input_file="x", completion_window="tomorrow")


def test_the_job_stores_name_metadata_and_its_deadline(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    spec = JobSpec(input_file=str(_data(tmp_path)), router="length", name="nightly", metadata=["team=a"], completion_window="24h")
    st = service.run(rt, spec)
    out = st.to_json()
    assert out["name"] == "nightly" and out["metadata"] == {"team": "a"} and out["completion_window"] == "24h"
    assert out["expires_at"] - out["openai_timestamps"]["created_at"] in (86399, 86400)
    assert out["status"] == "completed" and out["counts"]["expired"] == 0
    plain = service.run(rt, JobSpec(input_file=str(_data(tmp_path)), router="length")).to_json()
    assert plain["name"] is None and plain["metadata"] is None and plain["expires_at"] is None


def test_a_job_past_its_deadline_while_scoring_expires_every_item(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    queue = InlineQueue()
    job_id = service.submit(
        rt, JobSpec(input_file=str(_data(tmp_path)), router="length", chunk_size=10, completion_window="1h"), queue
    )
    assert not expire_due(rt, job_id)  # not due yet: nothing happens
    _past_deadline(sqlite_url, job_id)
    service.drain_inline(rt, queue, job_id)  # the first step notices the deadline; no call is made
    st = service.status(rt, job_id)
    assert st.status == JobState.EXPIRED and st.phase == Phase.DONE
    assert st.counts["expired"] == 30 and st.attempts == 0
    assert st.request_counts == {"total": 30, "completed": 0, "failed": 30}
    assert st.openai_timestamps["expired_at"] is not None and not st.outcome_ok
    with session_scope(sqlite_url) as s:
        errors = set(s.scalars(select(Item.error).where(Item.job_id == job_id)))
        events = s.scalars(select(LedgerEvent.kind).where(LedgerEvent.job_id == job_id)).all()
    assert errors == {"the batch's 1h completion window ended before this request was sent"}
    assert "job_expired" in events
    assert not expire_due(rt, job_id)  # idempotent


def test_a_run_that_outlives_its_window_ends_expired_and_exports_batch_expired(
    tmp_path: Path, sqlite_url: str, runtime_factory
) -> None:
    rt = runtime_factory(sqlite_url, {"providers.sim.simulated.latency_ms": 40, "providers.sim.concurrency": 2})
    rt.settings = Settings(database_url=sqlite_url, broker_url=None, cancel_poll_s=0.05)
    out, errs = tmp_path / "r.jsonl", tmp_path / "e.jsonl"
    spec = JobSpec(
        input_file=str(_data(tmp_path, 600)),
        router="length",
        chunk_size=40,
        completion_window="5s",
        out=str(out),
        errors_out=str(errs),
    )
    st = service.run(rt, spec)
    assert st.status == JobState.EXPIRED and st.phase == Phase.DONE
    assert st.counts["expired"] > 0 and st.succeeded > 0  # 600 calls at 40 ms, 2 at a time: ~12 s of work
    assert st.succeeded + st.failed + st.counts["expired"] == 600
    with session_scope(sqlite_url) as s:
        deadline = s.get_one(Job, st.job_id).expires_at
        last_start = s.scalar(select(func.max(Attempt.started_at)).where(Attempt.job_id == st.job_id))
        expired_with_attempts = s.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.job_id == st.job_id, Item.state == "expired", Item.attempts_count > 0)
        )
    # The fan-out polls the job every cancel_poll_s: no call starts later than that after the deadline.
    assert last_start is not None and last_start <= deadline + timedelta(seconds=0.05 + 0.25)
    assert expired_with_attempts == 0  # an item that reached a provider is recorded, not expired
    results = [json.loads(x) for x in out.read_text().splitlines()]
    errors = [json.loads(x) for x in errs.read_text().splitlines()]
    assert len(results) == st.succeeded
    assert len(errors) == st.counts["expired"] + st.failed
    assert sum(e["error"]["code"] == "batch_expired" for e in errors) == st.counts["expired"]


def test_calls_in_flight_at_the_deadline_are_recorded_and_then_the_job_closes(
    tmp_path: Path, sqlite_url: str, runtime_factory
) -> None:
    rt = runtime_factory(sqlite_url)
    queue = InlineQueue()
    job_id = service.submit(rt, JobSpec(input_file=str(_data(tmp_path, 20)), router="length", completion_window="1h"), queue)
    with session_scope(sqlite_url) as s:  # as if scored, routed and 5 calls in flight
        ids = s.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.id)).all()
        s.execute(update(Item).where(Item.job_id == job_id).values(state="routed", route="weak", model="sim-weak", score=0.1))
        s.execute(update(Item).where(Item.id.in_(ids[:5])).values(state="sent", lease_until=utcnow() + timedelta(minutes=5)))
        s.execute(update(Job).where(Job.id == job_id).values(phase="generating"))
    _past_deadline(sqlite_url, job_id)
    assert expire_due(rt, job_id)
    st = service.status(rt, job_id)
    assert st.status == JobState.EXPIRED and st.counts == {**st.counts, "sent": 5, "expired": 15}
    assert st.phase == Phase.GENERATING  # still open: the 5 answers have to be recorded
    with session_scope(sqlite_url) as s:  # the answers come back and are recorded as usual
        s.execute(update(Item).where(Item.id.in_(ids[:5])).values(state="succeeded"))
    assert maybe_finalize(rt, job_id)
    st = service.status(rt, job_id)
    assert st.status == JobState.EXPIRED and st.phase == Phase.DONE and st.succeeded == 5


def test_the_reaper_expires_overdue_jobs_and_closes_them(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    queue = Recording()
    job_id = service.submit(
        rt, JobSpec(input_file=str(_data(tmp_path)), router="length", chunk_size=10, completion_window="2h"), queue
    )
    rep = reaper.tick(rt, queue, deep=True)
    assert rep.expired == []
    rep = reaper.tick(rt, queue, now=utcnow() + timedelta(hours=2, seconds=1), deep=True)
    assert rep.expired == [job_id] and job_id in rep.finalized
    st = service.status(rt, job_id)
    assert st.status == JobState.EXPIRED and st.phase == Phase.DONE and st.counts["expired"] == 30


def test_the_reaper_expires_items_lost_in_flight_in_an_expired_job(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    queue = Recording()
    job_id = service.submit(rt, JobSpec(input_file=str(_data(tmp_path, 10)), router="length", completion_window="1h"), queue)
    with session_scope(sqlite_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(enqueued=True))
        s.execute(update(Item).where(Item.job_id == job_id).values(state="routed", route="weak", model="sim-weak", score=0.1))
        s.execute(update(Item).where(Item.job_id == job_id).values(state="sent", lease_until=utcnow() + timedelta(seconds=30)))
        s.execute(update(Job).where(Job.id == job_id).values(phase="generating"))
    _past_deadline(sqlite_url, job_id)
    assert expire_due(rt, job_id)  # nothing unsent: the 10 calls are in flight, the job is expired but open
    assert service.status(rt, job_id).counts["sent"] == 10
    rep = reaper.tick(rt, queue, now=utcnow() + timedelta(minutes=2), deep=True)  # their worker died
    assert rep.lost_in_flight == 10 and job_id in rep.finalized
    st = service.status(rt, job_id)
    assert st.status == JobState.EXPIRED and st.phase == Phase.DONE and st.counts["expired"] == 10
    assert [t for t in queue.sent if t[0] == "generate"] == []  # nothing of an expired job is sent again


def test_cancel_is_final_until_reopen(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    queue = InlineQueue()
    job_id = service.submit(rt, JobSpec(input_file=str(_data(tmp_path)), router="length"), queue)
    assert service.cancel(rt, job_id).status == JobState.CANCELLED
    with pytest.raises(IllegalTransition, match="--reopen") as err:
        service.resume(rt, job_id, InlineQueue())
    assert "cancel is final" in str(err.value) and "\n" not in str(err.value)
    assert service.status(rt, job_id).counts["cancelled"] == 30
    with session_scope(sqlite_url) as s:  # a poll step had marked some for a synchronous send
        s.execute(update(Item).where(Item.job_id == job_id, Item.id % 2 == 0).values(dispatch="sync"))
    queue = InlineQueue()
    service.resume(rt, job_id, queue, reopen=True)
    with session_scope(sqlite_url) as s:
        marked = s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.dispatch.is_not(None)))
    assert marked == 0, "a reopened item is sent as the configuration says now"
    service.drain_inline(rt, queue, job_id)
    st = service.status(rt, job_id)
    assert st.status == JobState.COMPLETED and st.succeeded == 30
    with session_scope(sqlite_url) as s:
        event = s.scalars(select(LedgerEvent).where(LedgerEvent.job_id == job_id, LedgerEvent.kind == "job_reopened")).one()
    assert event.data["from"] == "cancelled" and event.data["items"] == 30


def test_an_expired_job_reopens_with_a_fresh_window(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    queue = InlineQueue()
    job_id = service.submit(rt, JobSpec(input_file=str(_data(tmp_path)), router="length", completion_window="1h"), queue)
    _past_deadline(sqlite_url, job_id)
    service.drain_inline(rt, queue, job_id)
    assert service.status(rt, job_id).status == JobState.EXPIRED
    with pytest.raises(IllegalTransition, match="expiry is final.*--reopen"):
        service.resume(rt, job_id, InlineQueue())
    queue = InlineQueue()
    service.resume(rt, job_id, queue, reopen=True)
    service.drain_inline(rt, queue, job_id)
    st = service.status(rt, job_id)
    assert st.status == JobState.COMPLETED and st.succeeded == 30 and st.counts["expired"] == 0
    assert st.expires_at is not None and st.expires_at > int(utcnow().timestamp()) + 3000


def test_resume_finishes_a_cancel_a_crash_interrupted(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = service.submit(rt, JobSpec(input_file=str(_data(tmp_path, 10)), router="length"), InlineQueue())
    with session_scope(sqlite_url) as s:  # cancel began, 3 calls in flight, then the process died
        ids = s.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.id)).all()
        s.execute(update(Item).where(Item.job_id == job_id).values(state="cancelled"))
        s.execute(
            update(Item)
            .where(Item.id.in_(ids[:3]))
            .values(state="sent", route="weak", model="sim-weak", score=0.1, lease_until=utcnow() - timedelta(seconds=1))
        )
        s.execute(update(Job).where(Job.id == job_id).values(state="cancelling", phase="generating"))
    queue = InlineQueue()
    service.resume(rt, job_id, queue, force=True)
    service.drain_inline(rt, queue, job_id)
    st = service.status(rt, job_id)
    assert st.status == JobState.CANCELLED and st.counts["cancelled"] == 10 and st.succeeded == 0


def test_list_filters_by_name_and_state(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    data = str(_data(tmp_path, 5))
    a = service.run(rt, JobSpec(input_file=data, router="length", name="nightly")).job_id
    b = service.submit(rt, JobSpec(input_file=data, router="length", name="nightly"), Recording())
    c = service.run(rt, JobSpec(input_file=data, router="length", name="other")).job_id
    assert [j["job_id"] for j in service.list_jobs(rt, name="nightly")] == [b, a]
    assert [j["job_id"] for j in service.list_jobs(rt, state="completed")] == [c, a]
    assert [j["job_id"] for j in service.list_jobs(rt, name="nightly", state="in_progress")] == [b]
    assert service.list_jobs(rt, name="nobody") == []
    assert service.list_jobs(rt)[0]["name"] == "other"
    with pytest.raises(ConfigError, match="unknown job state 'done'.*expired"):
        service.list_jobs(rt, state="done")


def test_notes_are_the_jobs_job_note_events_oldest_first(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = service.run(rt, JobSpec(input_file=str(_data(tmp_path, 5)), router="length")).job_id
    other = service.run(rt, JobSpec(input_file=str(_data(tmp_path, 5)), router="length")).job_id
    own, others = service.status(rt, job_id).notes, service.status(rt, other).notes  # what the pipeline noted itself
    with session_scope(sqlite_url) as s:
        add_event(s, "job_note", "template: 1,091 chars shared prefix stripped", job_id=job_id, data={"chars": 1091})
        add_event(s, "budget_alert", "not a note", job_id=job_id)
        add_event(s, "job_note", "streaming: generation starts as chunks are scored", job_id=job_id)
        add_event(s, "job_note", "someone else's", job_id=other)
    notes = service.status(rt, job_id).to_json()["notes"]
    assert notes == [*own, "template: 1,091 chars shared prefix stripped", "streaming: generation starts as chunks are scored"]
    assert service.status(rt, other).notes == [*others, "someone else's"]
