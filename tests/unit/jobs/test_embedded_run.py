"""A whole job in-process on SQLite against the simulated provider over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.errors import IllegalTransition
from jobs.ledger.models import Attempt, InvalidRow, Item
from jobs.ledger.session import session_scope
from jobs.ledger.export import export_job
from jobs.pipeline.tasks import InlineQueue
from jobs.lifecycle.service import JobSpec, cancel, drain_inline, resume, run, status, submit

BAD_LINES = [
    "{broken json",
    '{"prompt": ""}',
    '{"custom_id": "only-id"}',
    '{"prompt": 42}',
    '{"prompt": "dup", "custom_id": "c-0005"}',
    '{"messages": "not a list"}',
    '{"prompt": "x", "max_tokens": -1}',
    '{"prompt": "x", "custom_id": ["list"]}',
    b'{"prompt": "\xff\xfe"}',
    '{"messages": [{"role": "assistant", "content": "no user"}]}',
]


def write_dataset(path: Path, good: int, bad_every: int | None = None) -> list[int]:
    """``good`` valid prompts; with ``bad_every``, one bad line after every n-th good one."""
    bad_line_numbers = []
    line = 0
    bad_iter = iter(BAD_LINES)
    with path.open("wb") as fh:
        for i in range(good):
            line += 1
            fh.write(json.dumps({"custom_id": f"c-{i:04d}", "prompt": f"question {i}: " + "word " * (i % 40)}).encode() + b"\n")
            if bad_every and (i + 1) % bad_every == 0:
                bad = next(bad_iter, None)
                if bad is not None:
                    line += 1
                    fh.write((bad if isinstance(bad, bytes) else bad.encode()) + b"\n")
                    bad_line_numbers.append(line)
    return bad_line_numbers


def test_run_with_bad_lines_keeps_every_valid_row(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = tmp_path / "in.jsonl"
    bad_lines = write_dataset(data, 1000, bad_every=100)
    assert len(bad_lines) == 10
    rt = runtime_factory(sqlite_url)

    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.3, chunk_size=250))

    assert st.status == "completed"
    assert st.total == 1000 and st.succeeded == 1000 and st.failed == 0
    assert st.invalid == 10
    assert sorted(r.line for r in st.invalid_rows) == bad_lines
    assert st.strong_calls == 300 and st.weak_calls == 700
    with session_scope(sqlite_url) as s:
        attempt_cost = s.scalar(select(func.sum(Attempt.cost_micro_usd)))
        item_cost = s.scalar(select(func.sum(Item.cost_micro_usd)))
        assert s.scalar(select(func.count()).select_from(InvalidRow)) == 10
        dup = s.scalars(select(InvalidRow).where(InvalidRow.field == "custom_id")).all()
    assert attempt_cost == item_cost == st.cost_micro_usd > 0
    assert 0 < st.cost_usd < st.all_strong_cost_usd
    assert st.savings_pct > 0
    assert any("duplicate custom_id 'c-0005'" in d.reason for d in dup)

    out, errors = tmp_path / "results.jsonl", tmp_path / "errors.jsonl"
    counts = export_job(sqlite_url, st.job_id, out, errors)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert counts["results"] == len(lines) == 1000
    assert [x["custom_id"] for x in lines] == [f"c-{i:04d}" for i in range(1000)]
    first = lines[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    meta = first["routebatch"]
    assert "metadata" not in first["response"]["body"]  # the provider's body, untouched
    assert meta["route"] in ("strong", "weak") and meta["threshold"] == st.threshold
    assert first["response"]["body"]["choices"][0]["message"]["content"]
    err_lines = [json.loads(x) for x in errors.read_text().splitlines()]
    assert sorted(e["error"]["line"] for e in err_lines if e["error"]["code"] == "invalid_input") == bad_lines
    assert all(e["error"]["message"] for e in err_lines)


def test_rerun_creates_a_new_job_and_routes_identically(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = tmp_path / "in.jsonl"
    write_dataset(data, 60)
    rt = runtime_factory(sqlite_url)
    a = run(rt, JobSpec(input_file=str(data), router="random:seed=4", strong_share=0.5))
    b = run(rt, JobSpec(input_file=str(data), router="random:seed=4", strong_share=0.5))
    assert a.job_id != b.job_id
    assert a.status == b.status == "completed"
    with session_scope(sqlite_url) as s:
        routes = {}
        for job_id in (a.job_id, b.job_id):
            routes[job_id] = s.execute(select(Item.custom_id, Item.route, Item.response).where(Item.job_id == job_id).order_by(Item.custom_id)).all()
    ra, rb = routes[a.job_id], routes[b.job_id]
    assert [(c, r) for c, r, _ in ra] == [(c, r) for c, r, _ in rb]
    # the simulated provider is deterministic: same prompt and model, same answer
    assert [x[2]["choices"][0]["message"]["content"] for x in ra] == [x[2]["choices"][0]["message"]["content"] for x in rb]


def test_threshold_rule_and_all_invalid_file(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = tmp_path / "in.jsonl"
    write_dataset(data, 40)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", threshold=2.0))
    assert st.status == "completed" and st.strong_calls == 0 and st.weak_calls == 40
    assert st.savings_pct > 90

    junk = tmp_path / "junk.jsonl"
    junk.write_text("{x\n{y\n")
    st = run(rt, JobSpec(input_file=str(junk)))
    assert st.status == "failed" and st.invalid == 2 and "no valid rows" in st.error


def test_cancel_then_resume_finishes_every_item(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = tmp_path / "in.jsonl"
    write_dataset(data, 120)
    rt = runtime_factory(sqlite_url)
    queue = InlineQueue()
    job_id = submit(rt, JobSpec(input_file=str(data), router="length", chunk_size=50), queue)
    assert len(queue) == 3
    st = cancel(rt, job_id)
    assert st.status == "cancelled" and st.counts["cancelled"] == 120
    drain_inline(rt, queue, job_id)  # redelivered tasks of a cancelled job do nothing
    assert status(rt, job_id).counts["cancelled"] == 120

    queue = InlineQueue()
    with pytest.raises(IllegalTransition, match="--reopen"):  # a cancel is final (issue 15)...
        resume(rt, job_id, queue)
    resume(rt, job_id, queue, reopen=True)  # ...unless reopened
    drain_inline(rt, queue, job_id)
    st = status(rt, job_id)
    assert st.status == "completed" and st.succeeded == 120
    assert st.timestamps["cancelled"] and st.timestamps["completed"]


def test_resume_recovers_items_lost_in_flight(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    """A worker that died after marking items sent: resume records the unknown outcome and resends."""
    from sqlalchemy import update

    data = tmp_path / "in.jsonl"
    write_dataset(data, 30)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length"))
    job_id = st.job_id
    with session_scope(sqlite_url) as s:  # simulate the crash: 5 items back to 'sent', job back in progress
        ids = s.scalars(select(Item.id).where(Item.job_id == job_id).limit(5)).all()
        s.execute(update(Item).where(Item.id.in_(ids)).values(state="sent", lease_until=None))
        from jobs.ledger.models import Job

        s.execute(update(Job).where(Job.id == job_id).values(state="in_progress", phase="generating"))
    queue = InlineQueue()
    resume(rt, job_id, queue)
    drain_inline(rt, queue, job_id)
    st = status(rt, job_id)
    assert st.status == "completed" and st.succeeded == 30
    with session_scope(sqlite_url) as s:
        lost = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.error_class == "LostInFlight"))
    assert lost == 5
    assert st.attempts == 30 + 5 + 5


def test_parquet_export(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    import pyarrow.parquet as pq

    data = tmp_path / "in.jsonl"
    write_dataset(data, 25)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length"))
    out = tmp_path / "r.parquet"
    export_job(sqlite_url, st.job_id, out, fmt="parquet")
    table = pq.read_table(out)
    assert table.num_rows == 25
    assert set(table.column("state").to_pylist()) == {"succeeded"}
    assert sum(table.column("cost_micro_usd").to_pylist()) == st.cost_micro_usd
