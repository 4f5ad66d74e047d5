"""``--allocate budget`` on estimated costs: a pilot first on an empty ledger, then the rest
routed on what it learned; admission (the weak floor, worst-case holds) keeps the cap.

Before, the allocation was sized on worst cases (every answer at ``max_tokens``): on the
issue's case it answered every item but spent about 18% of the cap."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.ledger.models import Item, Job, LedgerEvent
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, drain_inline, resume, run, status, submit
from jobs.lifecycle.states import ItemState, Phase
from jobs.pipeline import generate as generate_module
from jobs.pipeline.finalize import maybe_finalize
from jobs.pipeline.route import choose_pilot, pilot_size, route_after_pilot
from jobs.pipeline.runner import run_task
from jobs.pipeline.tasks import InlineQueue


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} " + "detail " * (i % 30)}) + "\n")
    return path


class Collect:
    """A queue that only records what was enqueued (the test runs the steps)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str, int | None]] = []
        self.lock = threading.Lock()

    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None:
        with self.lock:
            self.tasks.append((task, job_id, chunk))


def _cap(tmp_path: Path, runtime_factory, data: Path, share: float = 0.3) -> float:
    rt = runtime_factory(f"sqlite:///{tmp_path / 'all_strong.db'}")
    return round(share * run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0)).cost_usd, 6)


def _reasons(url: str, job_id: str) -> dict[str, int]:
    with session_scope(url) as s:
        return dict(
            s.execute(select(Item.route_reason, func.count()).where(Item.job_id == job_id).group_by(Item.route_reason)).all()
        )


def _score_and_route(rt, queue: Collect, job_id: str) -> None:
    """Run the queued score (and route) steps; leave the generate steps queued."""
    while any(t != "generate" for t, *_ in queue.tasks):
        step = next(x for x in queue.tasks if x[0] != "generate")
        queue.tasks.remove(step)
        run_task(rt, queue, *step)


def test_pilot_strata_spread_over_prompt_lengths() -> None:
    assert pilot_size(400) == 20 and pilot_size(10_000) == 24 and pilot_size(40) == 5
    sizes = [(i * 37) % 400 for i in range(400)]  # every length 0..399 once, shuffled
    picks = choose_pilot(sizes, ["s", "w"])
    assert len(picks) == 40
    assert sum(1 for m in picks.values() if m == "s") == sum(1 for m in picks.values() if m == "w") == 20
    for model in ("s", "w"):
        lengths = sorted(sizes[i] for i, m in picks.items() if m == model)
        assert lengths[0] < 40 and lengths[-1] > 360, "each model answers short and long prompts"
    assert choose_pilot(sizes, ["s", "w"]) == picks, "deterministic"
    assert choose_pilot(list(range(15)), ["s", "w"]) == {}, "too small for a pilot: allocated on worst cases"
    assert len(choose_pilot(sizes, ["w"])) == 20


def test_history_in_the_ledger_skips_the_pilot(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 200)
    cap = _cap(tmp_path, runtime_factory, data)
    rt = runtime_factory(sqlite_url)
    run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.5))  # 100 answers of each model
    st = run(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=cap))
    assert st.succeeded == 200 and st.cost_usd <= cap and st.cost_usd >= 0.85 * cap
    assert "budget_pilot" not in _reasons(sqlite_url, st.job_id)
    with session_scope(sqlite_url) as s:
        alloc = s.get_one(Job, st.job_id).spec["allocation"]
    assert alloc["basis"] == "history" and "pilot" not in alloc


def test_small_job_without_history_is_allocated_on_worst_cases(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 12)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=0.01))
    assert st.status == "completed" and st.succeeded == 12
    with session_scope(sqlite_url) as s:
        alloc = s.get_one(Job, st.job_id).spec["allocation"]
    assert alloc["basis"] == "worst_case" and alloc["planned_micro_usd"] == alloc["planned_worst_case_micro_usd"]


def test_second_route_waits_for_the_pilot_and_happens_once(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 100)
    cap = _cap(tmp_path, runtime_factory, data)
    rt = runtime_factory(sqlite_url)
    queue = Collect()
    job_id = submit(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=cap, chunk_size=25), queue)
    _score_and_route(rt, queue, job_id)
    pilot_chunks = sorted({c for t, _, c in queue.tasks if t == "generate"})
    assert pilot_chunks and len(queue.tasks) == len(pilot_chunks)
    with session_scope(sqlite_url) as s:
        job = s.get_one(Job, job_id)
        assert job.phase == Phase.SCORING and job.spec["allocation"]["stage"] == "pilot"
        states = dict(s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all())
    assert states == {ItemState.ROUTED: 10, ItemState.SCORED: 90}
    # the pilot has not ended: no second route, and the job cannot be closed
    assert route_after_pilot(rt, queue, job_id) is False
    assert maybe_finalize(rt, job_id) is False
    # a redelivered route step does not choose another pilot
    run_task(rt, queue, "route", job_id, None)
    assert _reasons(sqlite_url, job_id)["budget_pilot"] == 10
    assert len(queue.tasks) == len(pilot_chunks)
    # generate the pilot; the last generate step's hook routes the rest
    for _, _, chunk in list(queue.tasks):
        queue.tasks.remove(("generate", job_id, chunk))
        run_task(rt, queue, "generate", job_id, chunk)
    later = list(queue.tasks)
    assert ("finalize", job_id, None) in later and any(t == "generate" for t, *_ in later)
    assert route_after_pilot(rt, queue, job_id) is False, "done once"
    assert queue.tasks == later
    with session_scope(sqlite_url) as s:
        assert s.scalar(select(func.count()).where(Item.job_id == job_id, Item.state == ItemState.SCORED)) == 0
        assert s.get_one(Job, job_id).phase == Phase.GENERATING
    while queue.tasks:
        run_task(rt, queue, *queue.tasks.pop(0))
    st = status(rt, job_id)
    assert st.status == "completed" and st.succeeded == 100 and st.cost_usd <= cap


def test_resume_after_a_crash_between_pilot_and_second_route(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 100)
    cap = _cap(tmp_path, runtime_factory, data)
    rt = runtime_factory(sqlite_url)
    queue = Collect()
    job_id = submit(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=cap), queue)
    _score_and_route(rt, queue, job_id)
    monkeypatch.setattr(generate_module, "route_after_pilot", lambda *a: False)  # the worker dies before the hook
    for _, _, chunk in queue.tasks:
        run_task(rt, Collect(), "generate", job_id, chunk)
    monkeypatch.undo()
    with session_scope(sqlite_url) as s:
        assert s.get_one(Job, job_id).phase == Phase.SCORING
        assert s.scalar(select(func.count()).where(Item.job_id == job_id, Item.state == ItemState.SCORED)) == 90
    inline = InlineQueue()
    resume(rt, job_id, inline)
    drain_inline(rt, inline, job_id)
    st = status(rt, job_id)
    assert st.status == "completed" and st.succeeded == 100 and st.cost_usd <= cap
    assert _reasons(sqlite_url, job_id)["budget_pilot"] == 10


def test_cancel_during_the_pilot_closes_the_job(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    from sqlalchemy import update

    from jobs.lifecycle.service import cancel
    from jobs.lifecycle.states import JobState

    data = write_prompts(tmp_path / "in.jsonl", 100)
    rt = runtime_factory(sqlite_url)
    queue = Collect()
    job_id = submit(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=0.05), queue)
    _score_and_route(rt, queue, job_id)
    with session_scope(sqlite_url) as s:  # one pilot item is in flight when the cancel comes
        first = s.scalar(select(Item.id).where(Item.job_id == job_id, Item.route_reason == "budget_pilot").limit(1))
        s.execute(update(Item).where(Item.id == first).values(state=ItemState.SENT))
    cancel(rt, job_id)
    assert status(rt, job_id).status == "cancelling"
    with session_scope(sqlite_url) as s:  # the call ends
        s.execute(update(Item).where(Item.id == first).values(state=ItemState.SUCCEEDED))
    assert route_after_pilot(rt, queue, job_id) is True
    while queue.tasks:
        run_task(rt, queue, *queue.tasks.pop(0))
    assert status(rt, job_id).status == JobState.CANCELLED


def test_concurrent_callers_route_the_rest_once(
    pg_url: str, tmp_path: Path, runtime_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several generate workers ending the pilot at once: exactly one routes the rest."""
    from jobs.ledger.migrate import upgrade

    upgrade(pg_url)
    data = write_prompts(tmp_path / "in.jsonl", 100)
    rt = runtime_factory(pg_url)
    queue = Collect()
    job_id = submit(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=0.2, chunk_size=25), queue)
    # scorers finishing at once: one budget_route decision, one pilot
    scores = list(queue.tasks)
    queue.tasks.clear()
    threads = [threading.Thread(target=run_task, args=(rt, queue, *step)) for step in scores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session_scope(pg_url) as s:
        assert s.scalar(select(func.count()).where(LedgerEvent.job_id == job_id, LedgerEvent.kind == "budget_route")) == 1
    assert _reasons(pg_url, job_id)["budget_pilot"] == 10
    pilot = sorted({c for t, _, c in queue.tasks if t == "generate"})
    queue.tasks.clear()
    # answer the pilot without the hook, then let 8 callers race for the second route
    monkeypatch.setattr(generate_module, "route_after_pilot", lambda *a: False)
    for chunk in pilot:
        run_task(rt, Collect(), "generate", job_id, chunk)
    monkeypatch.undo()
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        results.append(route_after_pilot(rt, queue, job_id))

    racers = [threading.Thread(target=race) for _ in range(8)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert results.count(True) == 1
    assert queue.tasks.count(("finalize", job_id, None)) == 1
    with session_scope(pg_url) as s:
        assert s.scalar(select(func.count()).where(Item.job_id == job_id, Item.state == ItemState.SCORED)) == 0
        assert (
            s.scalar(
                select(func.count()).where(
                    LedgerEvent.job_id == job_id, LedgerEvent.dedupe_key == f"job_note:budget_allocation:{job_id}"
                )
            )
            == 1
        )
    while queue.tasks:
        run_task(rt, queue, *queue.tasks.pop(0))
    st = status(rt, job_id)
    assert st.status == "completed" and st.succeeded == 100 and st.cost_usd <= 0.2
