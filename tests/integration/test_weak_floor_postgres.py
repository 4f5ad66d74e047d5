"""The weak floor on the real Postgres: chunks admitted by parallel workers, a named daily
budget shared with a second job, row locks on the budget windows and the floor row."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.ledger.migrate import upgrade
from jobs.ledger.models import BudgetWindow, Reservation
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run, status, submit
from jobs.pipeline.runner import run_task
from tests.unit.jobs.test_weak_floor import write_prompts

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

N = 240
CHUNK = 40


class Collect:
    """A queue that only records what is enqueued, so the test decides who runs it."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str, int | None]] = []

    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None:
        self.tasks.append((task, job_id, chunk))


def _run_in_parallel(rt, job_id: str, queue: Collect) -> None:
    """Score and route inline, then every chunk's generate step at once, one thread each
    (each its own event loop and database connections, as separate workers would be)."""
    while any(t != "generate" for t, *_ in queue.tasks):
        task, jid, chunk = next(x for x in queue.tasks if x[0] != "generate")
        queue.tasks.remove((task, jid, chunk))
        run_task(rt, queue, task, jid, chunk)
    gens = [x for x in queue.tasks if x[0] == "generate"]
    queue.tasks.clear()
    errors: list[BaseException] = []

    def worker(chunk: int | None) -> None:
        try:
            run_task(rt, Collect(), "generate", job_id, chunk)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,)) for _, _, c in gens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors
    # a streaming rule (--threshold) enqueues a chunk as it is scored and again when routing ends: steps are idempotent
    assert len(set(gens)) == N // CHUNK


def test_parallel_chunks_on_a_named_daily_budget_answer_every_item(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    from jobs.money.budgets import create_budget

    data = write_prompts(tmp_path / "in.jsonl", N)
    probe = runtime_factory(f"sqlite:///{tmp_path / 'probe.db'}")
    all_strong = run(probe, JobSpec(input_file=str(data), router="length", threshold=0.0)).cost_usd
    cap = round(0.3 * all_strong, 6)

    upgrade(pg_url)
    with session_scope(pg_url) as s:
        create_budget(s, "labeling", cap, "daily")
    rt = runtime_factory(pg_url)
    queue = Collect()
    job_id = submit(
        rt, JobSpec(input_file=str(data), router="length", strong_share=0.9, budget="labeling", chunk_size=CHUNK), queue
    )
    _run_in_parallel(rt, job_id, queue)
    st = status(rt, job_id)
    assert st.status == "completed", st
    assert st.succeeded == N and st.skipped_budget == 0
    with session_scope(pg_url) as s:
        w = s.scalars(select(BudgetWindow)).one()
        assert w.spent_micro_usd == st.cost_micro_usd <= w.cap_micro_usd
        assert w.reserved_micro_usd == 0
        assert s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open")) == 0
    assert st.cost_usd >= 0.85 * cap, f"only {st.cost_usd / cap:.1%} of the cap used"
    assert 0 < st.strong_calls < N


def test_a_second_job_on_the_same_budget_cannot_take_the_first_jobs_floor(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    """Job A holds its floor; job B, all strong on the same named budget at the same time,
    gets only what A's floor leaves: A still answers every item."""
    from jobs.money.budgets import create_budget

    data = write_prompts(tmp_path / "in.jsonl", N)
    probe = runtime_factory(f"sqlite:///{tmp_path / 'probe.db'}")
    all_strong = run(probe, JobSpec(input_file=str(data), router="length", threshold=0.0)).cost_usd
    upgrade(pg_url)
    with session_scope(pg_url) as s:
        create_budget(s, "shared", round(0.3 * all_strong, 6), "daily")
    rt = runtime_factory(pg_url)
    qa, qb = Collect(), Collect()
    a = submit(rt, JobSpec(input_file=str(data), router="length", strong_share=0.5, budget="shared", chunk_size=CHUNK), qa)
    b = submit(rt, JobSpec(input_file=str(data), router="length", threshold=0.0, budget="shared", chunk_size=CHUNK,
                           on_exhausted="skip"), qb)  # fmt: skip
    ta = threading.Thread(target=_run_in_parallel, args=(rt, a, qa))
    tb = threading.Thread(target=_run_in_parallel, args=(rt, b, qb))
    ta.start()
    tb.start()
    ta.join(280)
    tb.join(280)
    sa, sb = status(rt, a), status(rt, b)
    assert sa.succeeded + sa.skipped_budget == N and sb.succeeded + sb.skipped_budget == N
    with session_scope(pg_url) as s:
        w = s.scalars(select(BudgetWindow)).one()
        assert w.spent_micro_usd + w.reserved_micro_usd <= w.cap_micro_usd and w.reserved_micro_usd == 0
    # a job whose floor was covered answers every item, whatever the other job does
    covered = [st for st in (sa, sb) if any(n.startswith("budget: weak floor $") for n in st.notes)]
    assert covered, (sa.notes, sb.notes)
    for st in covered:
        assert st.skipped_budget == 0 and st.succeeded == N
