"""Issue 12 item 3: chunks go to ``generate`` as soon as they are scored when the rule allows
it (a fixed threshold, or a strong share whose threshold is held from a first sample);
an exact strong share and ``--allocate budget`` still score everything first, and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from jobs.ledger.models import Attempt, Item, Job, LedgerEvent
from jobs.ledger.session import session_scope
from jobs.lifecycle import service
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import ItemState, JobState
from jobs.pipeline import runner
from jobs.pipeline.route import decide, routing_rule
from jobs.pipeline.tasks import InlineQueue

N, CHUNK = 100, 20


def _data(tmp_path: Path, n: int = N, same_length: bool = False) -> Path:
    path = tmp_path / "in.jsonl"
    with path.open("w") as fh:
        for i in range(n):
            prompt = f"q{i:05d}" if same_length else f"question {i}: " + "w " * (i * 7 % 41)
            fh.write(json.dumps({"custom_id": f"k{i}", "prompt": prompt}) + "\n")
    return path


@pytest.fixture
def steps(monkeypatch):
    """Every step the embedded runner runs, with the number of items still pending then."""
    seen: list[tuple[str, int | None, int]] = []
    real = runner.run_task

    def run_task(rt, queue, task, job_id, chunk, runner_id=None):
        with session_scope(rt.db_url) as s:
            pending = s.scalar(
                select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state == ItemState.PENDING)
            )
        seen.append((task, chunk, int(pending or 0)))
        return real(rt, queue, task, job_id, chunk, runner_id=runner_id)

    monkeypatch.setattr(runner, "run_task", run_task)
    return seen


def _notes(url: str, job_id: str) -> list[str]:
    with session_scope(url) as s:
        return list(
            s.scalars(
                select(LedgerEvent.message)
                .where(LedgerEvent.job_id == job_id, LedgerEvent.kind == "job_note")
                .order_by(LedgerEvent.id)
            )
        )


def _items(url: str, job_id: str) -> list[Item]:
    with session_scope(url) as s:
        items = list(s.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.id)))
        s.expunge_all()
    return items


# ------------------------------------------------------------------ the decision, in isolation


def test_decide_splits_ties_at_a_held_threshold_by_the_sample_fraction() -> None:
    assert [s for s, _ in decide([0.1, 0.5, 0.9], 0.5, None)] == [False, True, True]
    got = decide([0.3] * 10, 0.3, 0.25)  # floor(0.25 * 10 + 0.5) = 3 of the tied go strong, in order
    assert [s for s, _ in got] == [True] * 3 + [False] * 7
    assert {r for _, r in got} == {"score=threshold:tie_break_strong", "score=threshold:tie_break_weak"}
    mixed = decide([0.9, 0.3, 0.1, 0.3], 0.3, 0.5)  # one of the two tied goes strong: the first
    assert [s for s, _ in mixed] == [True, True, False, False]
    assert not any(s for s, _ in decide([0.99, 1.0], 0.5, None, strong_share=0.0))
    assert all(s for s, _ in decide([0.0, 0.1], 0.5, None, strong_share=1.0))


def test_routing_rule_streams_only_when_no_score_is_needed_from_every_item() -> None:
    def job(**kw) -> Job:
        base = {"allocate": "threshold", "threshold": None, "strong_share": None, "spec": {"chunk_size": 500}, "chunks": 10}
        return Job(**{**base, **kw})

    assert routing_rule(job(threshold=0.4)).held
    sample = routing_rule(job(strong_share=0.3, spec={"chunk_size": 500, "share_from_sample": 1200}))
    assert sample.streams and not sample.held and sample.sample_chunks == 3 and sample.sample_items == 1500
    assert "held" in sample.note() and "generated as they are scored" in sample.note()
    exact = routing_rule(job(strong_share=0.3))
    assert not exact.streams and exact.note() == "routing: exact strong share 0.3, generation starts after all items are scored"
    budget = routing_rule(job(strong_share=0.3, allocate="budget"))
    assert not budget.streams and "after all items are scored" in budget.note()


def test_inline_queue_runs_other_steps_before_the_next_score() -> None:
    q = InlineQueue()
    for c in range(3):
        q.enqueue("score", "j", c)
    q.enqueue("generate", "j", 0)
    q.enqueue("generate", "j", 1)
    assert q.pop() == ("generate", "j", 0)
    q.enqueue("finalize", "j", None)  # after the generate still waiting, before any score
    assert [q.pop() for _ in range(len(q))] == [
        ("generate", "j", 1),
        ("finalize", "j", None),
        ("score", "j", 0),
        ("score", "j", 1),
        ("score", "j", 2),
    ]


def test_share_from_sample_goes_with_a_strong_share_only() -> None:
    with pytest.raises(ValidationError, match="share-from-sample"):
        JobSpec(input_file="x.jsonl", threshold=0.5, share_from_sample=100)
    with pytest.raises(ValidationError, match="share-from-sample"):
        JobSpec(input_file="x.jsonl", allocate="budget", budget_usd=1.0, share_from_sample=100)
    with pytest.raises(ValidationError):
        JobSpec(input_file="x.jsonl", share_from_sample=0)


# ------------------------------------------------------------------ end to end, embedded


def test_fixed_threshold_generates_a_chunk_while_others_still_wait_to_be_scored(
    tmp_path: Path, sqlite_url: str, runtime_factory, steps
) -> None:
    rt = runtime_factory(sqlite_url)
    st = service.run(rt, JobSpec(input_file=str(_data(tmp_path)), router="length", threshold=0.2, chunk_size=CHUNK))
    assert st.status == JobState.COMPLETED and st.counts.get("succeeded") == N
    generates = [(c, pending) for task, c, pending in steps if task == "generate"]
    assert generates[0] == (0, N - CHUNK)  # chunk 0 is generated right after it is scored
    assert [t for t, _, _ in steps[:4]] == ["score", "generate", "score", "generate"]
    with session_scope(sqlite_url) as s:
        first_call = s.scalar(select(func.min(Attempt.started_at)).where(Attempt.job_id == st.job_id))
        last_chunk = s.scalar(select(func.min(Item.updated_at)).where(Item.job_id == st.job_id, Item.chunk == N // CHUNK - 1))
    assert first_call is not None and last_chunk is not None and first_call < last_chunk
    items = _items(sqlite_url, st.job_id)
    assert all(i.threshold == 0.2 and i.route == ("strong" if i.score >= 0.2 else "weak") for i in items)
    assert _notes(sqlite_url, st.job_id) == ["streaming: fixed threshold 0.2, chunks are generated as they are scored"]


def test_exact_strong_share_still_scores_everything_first_and_says_so(
    tmp_path: Path, sqlite_url: str, runtime_factory, steps
) -> None:
    rt = runtime_factory(sqlite_url)
    st = service.run(rt, JobSpec(input_file=str(_data(tmp_path)), router="length", strong_share=0.3, chunk_size=CHUNK))
    assert st.status == JobState.COMPLETED
    assert all(pending == 0 for task, _, pending in steps if task == "generate")
    assert [t for t, _, _ in steps[: N // CHUNK]] == ["score"] * (N // CHUNK)
    assert sum(i.route == "strong" for i in _items(sqlite_url, st.job_id)) == 30
    assert _notes(sqlite_url, st.job_id) == ["routing: exact strong share 0.3, generation starts after all items are scored"]


def test_sample_share_holds_the_threshold_of_the_first_items_and_streams(
    tmp_path: Path, sqlite_url: str, runtime_factory, steps
) -> None:
    rt = runtime_factory(sqlite_url)
    spec = JobSpec(input_file=str(_data(tmp_path)), router="length", strong_share=0.25, share_from_sample=30, chunk_size=CHUNK)
    st = service.run(rt, spec)
    assert st.status == JobState.COMPLETED and st.counts.get("succeeded") == N
    # the sample is whole chunks: 30 items -> chunks 0 and 1; both are generated once chunk 1 is scored
    assert [(t, c) for t, c, _ in steps[:5]] == [("score", 0), ("score", 1), ("generate", 0), ("generate", 1), ("score", 2)]
    assert steps[2][2] == N - 2 * CHUNK
    items = _items(sqlite_url, st.job_id)
    from routing.thresholds import cut_for_strong_share

    sample = [i.score for i in items if i.chunk < 2]
    held = cut_for_strong_share(__import__("numpy").asarray(sample), 0.25).threshold
    assert {i.threshold for i in items} == {held}
    assert all(i.route == ("strong" if i.score >= held else "weak") for i in items)
    notes = _notes(sqlite_url, st.job_id)
    assert notes[0].startswith("streaming: strong share 0.25 from a threshold estimated on the first 40 items (2 chunks)")
    assert notes[1].startswith(f"streaming: threshold {held:.6g} held from the first 40 scored items")


def test_sample_share_keeps_the_share_when_every_score_is_tied(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    data = _data(tmp_path, same_length=True)  # the length router gives every item the same score
    spec = JobSpec(input_file=str(data), router="length", strong_share=0.1, share_from_sample=20, chunk_size=CHUNK)
    st = service.run(rt, spec)
    assert st.status == JobState.COMPLETED
    items = _items(sqlite_url, st.job_id)
    assert len({i.score for i in items}) == 1
    for c in range(N // CHUNK):  # 2 of each chunk's 20, the first ones: not all 100 strong
        strong = [i.custom_id for i in items if i.chunk == c and i.route == "strong"]
        assert strong == [i.custom_id for i in items if i.chunk == c][:2]
    assert {i.route_reason for i in items} == {"score=threshold:tie_break_strong", "score=threshold:tie_break_weak"}


def test_a_streaming_job_resumed_after_a_crash_mid_scoring_finishes_once(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch
) -> None:
    """Killed between scoring and generating: routed chunks wait with phase still 'scoring';
    resume scores the rest and route_job enqueues the routed chunks left behind."""
    rt = runtime_factory(sqlite_url)
    real = runner.run_task
    calls = {"n": 0}

    def dies_on_third_generate(rt_, queue, task, job_id, chunk, runner_id=None):
        if task == "generate":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(rt_, queue, task, job_id, chunk, runner_id=runner_id)

    monkeypatch.setattr(runner, "run_task", dies_on_third_generate)
    with pytest.raises(KeyboardInterrupt) as info:
        service.run(rt, JobSpec(input_file=str(_data(tmp_path)), router="length", threshold=0.2, chunk_size=CHUNK))
    job_id = info.value.job_id  # type: ignore[attr-defined]
    counts = service.status(rt, job_id).counts
    assert counts.get("routed") == CHUNK and counts.get("pending") == N - 3 * CHUNK and counts.get("succeeded") == 2 * CHUNK
    monkeypatch.setattr(runner, "run_task", real)
    queue = InlineQueue()
    service.resume(rt, job_id, queue)
    first = queue._pending[0]
    assert (first[0], first[2]) == ("generate", 2), "the routed chunk goes out first, not after the rest is scored"
    service.drain_inline(rt, queue, job_id)
    st = service.status(rt, job_id)
    assert st.status == JobState.COMPLETED and st.counts.get("succeeded") == N
    with session_scope(sqlite_url) as s:
        assert s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id == job_id)) == N  # one call each
