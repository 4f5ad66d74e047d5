"""What a generate step that raised cleans up: the items it claimed, not its chunk's.

A generate step for models sent in provider batches also claims routed items of other chunks
(so that batches are as large as the provider allows). The cleanup of a step that raised
used to treat every ``sent`` item of its chunk as its own and, with none of them in this
process's in-flight set, as never sent: it released the holds of items another step had
claimed and was about to upload, and routed them again, so they were sent twice.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from jobs.ledger.models import Item, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState
from jobs.money.admission import admit, budget_plan
from jobs.money.pricing import sync_prices
from jobs.pipeline.runner import run_task
from jobs.pipeline.tasks import InlineQueue
from tests.unit.pipeline.test_fanout import submit_routed


def test_a_raising_generate_step_leaves_items_another_step_claimed(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch
) -> None:
    from jobs.ledger.models import Job
    from jobs.pipeline import generate

    rt = runtime_factory(sqlite_url)
    job_id = submit_routed(rt, tmp_path, 8, budget_usd=1.0, chunk_size=4)
    other_lease = utcnow() + timedelta(minutes=15)
    with session_scope(sqlite_url) as s:  # another step took chunk 1's items, admitted them, is uploading
        job = s.get_one(Job, job_id)
        taken = list(s.scalars(select(Item.id).where(Item.job_id == job_id, Item.chunk == 1)))
        s.execute(update(Item).where(Item.id.in_(taken)).values(state=ItemState.SENT, lease_until=other_lease))
        rows = s.execute(select(Item.id, Item.prompt, Item.messages, Item.max_tokens, Item.model).where(Item.id.in_(taken))).all()
        plan, prices = budget_plan(job), sync_prices(s, rt.config, ["sim-strong", "sim-weak"])
    held = admit(rt, job_id, rows, plan, prices, None, final=True)
    assert len(held.admitted) == len(taken)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug after the chunk's calls")

    monkeypatch.setattr(generate, "maybe_finalize", broken)
    with pytest.raises(RuntimeError):
        run_task(rt, InlineQueue(), "generate", job_id, 1)
    with session_scope(sqlite_url) as s:
        states = set(s.scalars(select(Item.state).where(Item.id.in_(taken))))
        still_held = s.scalar(select(Reservation.id).where(Reservation.item_id.in_(taken), Reservation.state == "open").limit(1))
    assert states == {ItemState.SENT}, "the other step's claim is left to it"
    assert still_held is not None


def test_steps_in_threads_keep_their_own_claims_and_marks() -> None:
    """``celery -P threads`` runs two deliveries of one chunk at once. The registry kept one
    claim per (job, chunk) and one mark set per job: the second delivery's claim replaced the
    first's, and the first's error handler took the second's calls in flight as its own."""
    import threading

    from jobs.pipeline import inflight

    mine, theirs = utcnow(), utcnow() + timedelta(seconds=1)
    ready, done = threading.Event(), threading.Event()

    def other_delivery() -> None:
        inflight.claimed("job-t", 0, theirs)
        inflight.mark("job-t", 3, theirs)
        ready.set()
        done.wait(5)

    t = threading.Thread(target=other_delivery)
    inflight.claimed("job-t", 0, mine)
    inflight.mark("job-t", 1, mine)
    inflight.mark("job-t", 2, mine)
    t.start()
    assert ready.wait(5)
    try:
        assert inflight.take_claim("job-t", 0) == mine
        assert inflight.take("job-t", mine) == {1, 2}
        assert inflight.take("job-t") == {3}, "the other step's call stays marked until it is taken"
    finally:
        done.set()
        t.join()
