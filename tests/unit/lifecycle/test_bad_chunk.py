"""Issue 10 item 3: a step that raises the same error twice fails its chunk's items instead of
retrying forever, and the holds of calls never made are released, not charged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.errors import JobFailed
from jobs.ledger.models import Attempt, BudgetWindow, Item, Reservation
from jobs.ledger.session import session_scope
from jobs.lifecycle import service
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import ItemState, JobState
from jobs.pipeline import fanout
from jobs.pipeline.tasks import InlineQueue

BAD = "k5"


@pytest.fixture
def broken_row(monkeypatch):
    """A step that raises for one item: a bug in the provider layer, not a bad request
    (a request that cannot be built fails its item alone, see tests/unit/pipeline)."""
    from jobs.providers import ProviderPool

    real = ProviderPool.complete

    async def complete(self, req, before_send=None):
        if req.custom_id == BAD:
            raise TypeError("'_headers' must be a mapping, got str")
        return await real(self, req, before_send)

    monkeypatch.setattr(ProviderPool, "complete", complete)


def _spec(tmp_path: Path) -> JobSpec:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"question {i}"}) + "\n" for i in range(60)))
    return JobSpec(input_file=str(data), router="length", chunk_size=20, budget_usd=1.0)


def _money(url: str, job_id: str) -> tuple[int, int, int, int]:
    with session_scope(url) as s:
        spent, reserved = s.execute(select(BudgetWindow.spent_micro_usd, BudgetWindow.reserved_micro_usd)).one()
        attempts = int(s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)).where(Attempt.job_id == job_id)))
        open_holds = s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open")) or 0
    return spent, reserved, attempts, open_holds


def test_same_error_twice_fails_the_chunk_and_the_job_goes_on(
    tmp_path: Path, sqlite_url: str, runtime_factory, broken_row
) -> None:
    rt = runtime_factory(sqlite_url)
    with pytest.raises(JobFailed, match="_headers"):
        service.run(rt, _spec(tmp_path))
    with session_scope(sqlite_url) as s:
        job_id = s.scalar(select(Item.job_id))
        sent = s.scalar(select(func.count()).select_from(Item).where(Item.state == ItemState.SENT))
    assert sent == 0  # nothing left "sent" for a lease expiry to charge
    spent, reserved, attempts, open_holds = _money(sqlite_url, job_id)
    assert reserved == 0 and open_holds == 0 and spent == attempts  # claimed-but-unsent holds released

    queue = InlineQueue()  # resume: the same error for the same chunk a second time
    service.resume(rt, job_id, queue, force=True)
    service.drain_inline(rt, queue, job_id)
    st = service.status(rt, job_id)
    assert st.status == JobState.COMPLETED
    with session_scope(sqlite_url) as s:
        rows = s.execute(select(Item.custom_id, Item.chunk, Item.state, Item.error).where(Item.job_id == job_id)).all()
    bad = next(r for r in rows if r.custom_id == BAD)
    assert bad.state == ItemState.FAILED and "failed twice with the same error" in bad.error and "_headers" in bad.error
    assert all(r.state == ItemState.SUCCEEDED for r in rows if r.chunk != bad.chunk)  # other chunks are unharmed
    spent, reserved, attempts, open_holds = _money(sqlite_url, job_id)
    assert reserved == 0 and open_holds == 0 and spent == attempts


def test_a_first_error_still_raises(tmp_path: Path, sqlite_url: str, runtime_factory, broken_row) -> None:
    from jobs.pipeline.runner import run_task

    rt = runtime_factory(sqlite_url)
    queue = InlineQueue()
    job_id = service.submit(rt, _spec(tmp_path), queue)
    queue.drain(lambda t, j, c: run_task(rt, queue, t, j, c) if t != "generate" else None)  # score and route only
    with pytest.raises(TypeError):
        run_task(rt, InlineQueue(), "generate", job_id, 0)
    run_task(rt, InlineQueue(), "generate", job_id, 0)  # the second time: no raise, items failed
    with session_scope(sqlite_url) as s:
        states = set(s.scalars(select(Item.state).where(Item.job_id == job_id, Item.chunk == 0)))
    assert ItemState.FAILED in states and ItemState.ROUTED not in states and ItemState.SENT not in states
