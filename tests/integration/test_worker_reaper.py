"""The reaper and the at-least-once guards, in one process, on SQLite and the real Postgres.

Crashes are staged by editing the ledger the way a dead worker leaves it (items 'sent'
with an old lease, messages that never arrive), then one reaper tick must repair it.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from jobs.lifecycle import reaper
from jobs.pipeline import generate, record, runner
from jobs.ledger.models import Attempt, Item, Job
from jobs.ledger.session import get_engine, session_scope
from jobs.ledger.types import utcnow
from jobs.pipeline.tasks import InlineQueue
from jobs.lifecycle.service import JobSpec, cancel, drain_inline, submit
from jobs.settings import Settings
from tests.chaos.harness import check_ledger, write_prompts

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def rt(db_url, runtime_factory):
    runtime = runtime_factory(db_url)
    runtime.settings = Settings(database_url=db_url, broker_url=None, stall_s=5, send_lease_s=60)
    return runtime


def _submit_routed(rt, tmp_path, n: int = 60, chunk: int = 20) -> tuple[str, InlineQueue]:
    """A job scored and routed, its generate messages still waiting in ``queue``."""
    q = InlineQueue()
    job_id = submit(rt, JobSpec(input_file=str(write_prompts(tmp_path / "p.jsonl", n)), router="length", chunk_size=chunk), q)
    _as_if_brokered(rt, job_id)
    while len(q) and q._pending[0][0] == "score":
        task, jid, c = q._pending.popleft()
        runner.run_task(rt, q, task, jid, c)
    return job_id, q


def _as_if_brokered(rt, job_id: str) -> None:
    """The InlineQueue stands in for a broker here: the reaper only re-enqueues enqueued jobs."""
    with session_scope(rt.db_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(enqueued=True))


def _lose_chunk_in_flight(rt, job_id: str, chunk: int) -> None:
    """What a worker killed after marking its chunk sent leaves behind: an expired lease."""
    with session_scope(rt.db_url) as s:
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.chunk == chunk)
            .values(state="sent", lease_until=utcnow() - timedelta(seconds=1))
        )


def test_expired_lease_is_recorded_and_resent(rt, tmp_path):
    job_id, q = _submit_routed(rt, tmp_path)
    q._pending.clear()  # the dead worker's messages are gone too
    for c in range(3):
        _lose_chunk_in_flight(rt, job_id, c)
    report = reaper.tick(rt, q)
    assert report.lost_in_flight == 60 and report.enqueued == 3
    drain_inline(rt, q, job_id)
    ledger = check_ledger(rt.db_url, job_id)
    assert ledger["lost_in_flight"] == 60 and ledger["succeeded"] == 60


def test_expired_lease_of_a_cancelling_job_ends_cancelled(rt, tmp_path):
    job_id, q = _submit_routed(rt, tmp_path)
    q._pending.clear()
    _lose_chunk_in_flight(rt, job_id, 0)
    assert cancel(rt, job_id).status == "cancelling"  # 20 items still 'sent'
    report = reaper.tick(rt, q)
    assert report.lost_in_flight == 20 and report.cancelled == 20 and report.finalized == [job_id]
    check_ledger(rt.db_url, job_id, expect_state="cancelled")


def test_stalled_job_is_reenqueued_only_after_the_stall_period(rt, tmp_path):
    job_id, q = _submit_routed(rt, tmp_path)
    q._pending.clear()  # Redis restarted empty: the generate messages are lost
    assert reaper.tick(rt, q, deep=True).rekicked == []  # still within the stall period
    later = utcnow() + timedelta(seconds=10)
    report = reaper.tick(rt, q, now=later, deep=True)
    assert report.rekicked == [job_id]
    assert sorted(t for t, *_ in q._pending) == ["finalize", "generate", "generate", "generate"]
    assert reaper.tick(rt, InlineQueue(), now=later + timedelta(seconds=1), deep=True).rekicked == []  # not twice in a row
    drain_inline(rt, q, job_id)
    check_ledger(rt.db_url, job_id)


def test_stalled_job_waits_while_its_queue_has_messages(rt, tmp_path):
    job_id, q = _submit_routed(rt, tmp_path)

    class Busy(InlineQueue):
        def backlog(self, task: str) -> int:
            return 5

    assert reaper.tick(rt, Busy(), now=utcnow() + timedelta(seconds=10), deep=True).rekicked == []


def test_lost_score_messages_and_lost_route_step(rt, tmp_path):
    q = InlineQueue()
    job_id = submit(rt, JobSpec(input_file=str(write_prompts(tmp_path / "p.jsonl", 40)), router="length", chunk_size=20), q)
    _as_if_brokered(rt, job_id)
    q._pending.clear()
    report = reaper.tick(rt, q, now=utcnow() + timedelta(seconds=10), deep=True)
    assert report.rekicked == [job_id] and [t for t, *_ in q._pending] == ["score", "score"]
    # Both chunks scored, but the worker died before routing: only "route" is missing.
    q._pending.clear()
    with session_scope(rt.db_url) as s:
        s.execute(update(Item).where(Item.job_id == job_id).values(state="scored", score=0.5, updated_at=utcnow()))
    report = reaper.tick(rt, q, now=utcnow() + timedelta(seconds=10), deep=True)
    assert [t for t, *_ in q._pending] == ["route"]
    drain_inline(rt, q, job_id)
    check_ledger(rt.db_url, job_id)


def test_stall_check_is_throttled(rt, tmp_path):
    job_id, q = _submit_routed(rt, tmp_path)
    q._pending.clear()
    later = utcnow() + timedelta(seconds=10)
    assert reaper.tick(rt, q, now=later).rekicked == [job_id]  # first check in this runtime
    q._pending.clear()
    with session_scope(rt.db_url) as s:  # stalled again, but the next deep check is not due
        s.execute(update(Item).where(Item.job_id == job_id).values(updated_at=utcnow() - timedelta(hours=1)))
    assert reaper.tick(rt, q, now=later + timedelta(seconds=0.5)).rekicked == []
    assert reaper.tick(rt, q, now=later + timedelta(seconds=2)).rekicked == [job_id]


def test_lost_finalize_is_done_by_the_reaper(rt, tmp_path):
    job_id, q = _submit_routed(rt, tmp_path)
    drain_inline(rt, q, job_id)
    with session_scope(rt.db_url) as s:  # as if the worker died right before closing the job
        s.execute(update(Job).where(Job.id == job_id).values(state="in_progress", phase="generating", completed_at=None))
    report = reaper.tick(rt, InlineQueue())
    assert report.finalized == [job_id]
    check_ledger(rt.db_url, job_id)


def test_duplicate_delivery_of_a_chunk_sends_each_item_once(rt, tmp_path, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("concurrent writers: Postgres only")
    job_id, q = _submit_routed(rt, tmp_path, n=40, chunk=40)
    barrier = threading.Barrier(2)
    sent = []

    def deliver():
        barrier.wait()
        sent.append(generate.generate_chunk(rt, InlineQueue(), job_id, 0))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(sent) == 40, sent
    ledger = check_ledger(rt.db_url, job_id)
    assert ledger["attempts"] == 40


def test_late_answer_after_the_reaper_resent_is_a_recorded_duplicate(rt, tmp_path):
    """A worker that outlived its lease records a duplicate attempt; the outcome stays the resend's."""
    job_id, q = _submit_routed(rt, tmp_path, n=20, chunk=20)
    with session_scope(rt.db_url) as s:
        item_id = s.scalar(select(func.min(Item.id)).where(Item.job_id == job_id))
    old_lease = utcnow() - timedelta(seconds=1)
    with session_scope(rt.db_url) as s:
        s.execute(update(Item).where(Item.id == item_id).values(state="sent", lease_until=old_lease))
    assert reaper.tick(rt, q).lost_in_flight == 1
    drain_inline(rt, q, job_id)  # the resend succeeds and the job completes
    with session_scope(rt.db_url) as s:
        first = s.execute(select(Item.response, Item.cost_micro_usd).where(Item.id == item_id)).one()

    from jobs.providers.types import Attempt as CallAttempt, CallResult, ChatRequest
    from jobs.money.pricing import sync_prices

    now = utcnow()
    attempt = CallAttempt(
        attempt_id="late-attempt", model="sim-weak", provider="sim", attempt_no=1, status_code=200, error_class=None,
        error_message=None, request_id="r", latency_ms=5, prompt_tokens=10, completion_tokens=10, cached_tokens=0,
        usage_estimated=False, started_at=now, finished_at=now,
    )
    request = ChatRequest(custom_id="late", model="sim-weak", messages=[{"role": "user", "content": "x"}], max_tokens=8)
    late = CallResult(request=request, ok=True, attempts=[attempt], body={"late": True}, model="sim-weak", status_code=200, error=None)
    with session_scope(rt.db_url) as s:
        prices = sync_prices(s, rt.config, ["sim-weak", "sim-strong"])
    record.record_results(rt, job_id, [(item_id, late, None)], prices, old_lease)
    with session_scope(rt.db_url) as s:
        after = s.execute(select(Item.response, Item.cost_micro_usd, Item.state).where(Item.id == item_id)).one()
        n_attempts = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.item_id == item_id))
    assert after.response == first.response and after.state == "succeeded"
    assert after.cost_micro_usd > first.cost_micro_usd and n_attempts == 3  # resend, LostInFlight, late
    with session_scope(rt.db_url) as s:  # the duplicate is paid for and in the ledger
        attempts_cost = s.scalar(select(func.sum(Attempt.cost_micro_usd)).where(Attempt.job_id == job_id))
        items_cost = s.scalar(select(func.sum(Item.cost_micro_usd)).where(Item.job_id == job_id))
    assert attempts_cost == items_cost


def test_only_one_reaper_at_a_time_on_postgres(rt, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("advisory locks are Postgres only")
    from jobs.ledger.migrate import ensure_schema

    ensure_schema(db_url)
    with get_engine(db_url).connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": reaper.LOCK_KEY})
        try:
            assert reaper.tick(rt, InlineQueue()).skipped
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": reaper.LOCK_KEY})
    assert not reaper.tick(rt, InlineQueue()).skipped
