"""Issue 10 item 2 and 16: ingest records how far it got; resume continues it; a changing input is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.errors import JobFailed
from jobs.ledger.models import InvalidRow, Item, Job, LedgerEvent
from jobs.ledger.session import session_scope
from jobs.lifecycle import service
from jobs.lifecycle.service import JobSpec
from jobs.lifecycle.states import JobState
from jobs.pipeline.tasks import InlineQueue

N = 12_345  # 3 batches of 5,000 and a partial one


def _dataset(path: Path, n: int = N) -> Path:
    lines = []
    for i in range(1, n + 1):
        if i % 1000 == 7:
            lines.append("{not json\n")
        elif i % 3 == 0:
            lines.append(json.dumps({"prompt": f"no id {i}"}) + "\n")  # gets a generated id
        else:
            lines.append(json.dumps({"custom_id": f"c{i}", "prompt": f"question {i}"}) + "\n")
    path.write_text("".join(lines))
    return path


def _spec(path: Path) -> JobSpec:
    return JobSpec(input_file=str(path), router="length", chunk_size=1000)


def _stop_after(monkeypatch, n: int, exc: BaseException) -> None:
    """Make the input's reader raise ``exc`` after ``n`` rows (a crash, Ctrl-C, a reader bug)."""
    real = service.read_rows

    def reader(*args, **kwargs):
        rows = real(*args, **kwargs)

        def gen():
            for k, row in enumerate(rows, start=1):
                if k > n:
                    raise exc
                yield row

        return gen()

    monkeypatch.setattr(service, "read_rows", reader)


def _only_job(url: str) -> Job:
    with session_scope(url) as s:
        job = s.scalars(select(Job)).one()
        s.expunge(job)
        return job


def _assert_every_line_once(url: str, job_id: str, n: int = N) -> None:
    with session_scope(url) as s:
        item_lines = list(s.scalars(select(Item.line_no).where(Item.job_id == job_id)))
        bad_lines = list(s.scalars(select(InvalidRow.line_no).where(InvalidRow.job_id == job_id)))
        ids = list(s.scalars(select(Item.custom_id).where(Item.job_id == job_id)))
        job = s.get_one(Job, job_id)
        assert sorted(item_lines + bad_lines) == list(range(1, n + 1))  # every line exactly once
        assert len(set(ids)) == len(ids)
        assert job.total == len(item_lines) and job.invalid == len(bad_lines)
        assert job.ingest_complete and job.state == JobState.IN_PROGRESS
        assert s.scalar(select(func.max(Item.chunk)).where(Item.job_id == job_id)) == job.chunks - 1


def test_killed_mid_ingest_stays_validating_and_resume_reads_the_rest(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch
) -> None:
    rt = runtime_factory(sqlite_url)
    data = _dataset(tmp_path / "in.jsonl")
    _stop_after(monkeypatch, 7_500, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        service.run(rt, _spec(data))
    job = _only_job(sqlite_url)
    assert job.state == JobState.VALIDATING and not job.ingest_complete
    assert job.ingest_line == 5_000  # the one committed batch
    assert job.ingest_offset is not None and 0 < job.ingest_offset < data.stat().st_size
    st = service.status(rt, job.id)
    assert not st.ingest_complete and st.ingest_line == 5_000 and st.input_size == data.stat().st_size

    monkeypatch.undo()
    queue = InlineQueue()
    service.resume(rt, job.id, queue)
    _assert_every_line_once(sqlite_url, job.id)
    assert {t for t, _, _ in queue._pending} == {"score"}
    assert len(queue) == _only_job(sqlite_url).chunks
    again = service.resume(rt, job.id, InlineQueue())  # a second resume reads nothing again
    assert again.total == _only_job(sqlite_url).total
    _assert_every_line_once(sqlite_url, job.id)


def test_an_exception_mid_ingest_fails_the_job_and_resume_continues(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch
) -> None:
    rt = runtime_factory(sqlite_url)
    data = _dataset(tmp_path / "in.jsonl")
    _stop_after(monkeypatch, 11_000, RecursionError("maximum recursion depth exceeded"))
    with pytest.raises(JobFailed, match="ingest stopped after line 10000"):
        service.run(rt, _spec(data))
    job = _only_job(sqlite_url)
    assert job.state == JobState.FAILED and not job.ingest_complete  # never "completed" with half the rows
    assert "RecursionError" in (job.error or "")
    monkeypatch.undo()
    service.resume(rt, job.id, InlineQueue())
    _assert_every_line_once(sqlite_url, job.id)


def test_resume_of_a_non_seekable_input_fails_with_the_reason(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch
) -> None:
    rt = runtime_factory(sqlite_url)
    data = _dataset(tmp_path / "in.jsonl")
    _stop_after(monkeypatch, 6_000, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        service.submit(rt, _spec(data), InlineQueue())
    job = _only_job(sqlite_url)
    with session_scope(sqlite_url) as s:
        s.get_one(Job, job.id).input_seekable = False  # as for `-`, a pipe or a FIFO
    monkeypatch.undo()
    st = service.resume(rt, job.id, InlineQueue())
    assert st.status == JobState.FAILED
    assert "cannot be read again" in (st.error or "") and "line 5000" in (st.error or "")


def test_a_fifo_is_recorded_as_not_seekable(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    assert service.fingerprint(fifo).seekable is False
    assert service.fingerprint(Path("-")).seekable is False
    regular = _dataset(tmp_path / "r.jsonl", 3)
    fp = service.fingerprint(regular)
    assert fp.seekable and fp.size == regular.stat().st_size and fp.mtime_ns


def test_generated_ids_are_a_function_of_the_line(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    data = _dataset(tmp_path / "in.jsonl", 10)
    job_id = service.submit(rt, _spec(data), InlineQueue())
    with session_scope(sqlite_url) as s:
        got = dict(s.execute(select(Item.line_no, Item.custom_id).where(Item.job_id == job_id)).all())
    assert got[3] == "line-3" and got[6] == "line-6" and got[1] == "c1"


def test_a_file_that_grows_while_read_is_flagged(tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch) -> None:
    rt = runtime_factory(sqlite_url)
    data = _dataset(tmp_path / "in.jsonl", 600)
    real = service.read_rows

    def reader(*args, **kwargs):
        rows = real(*args, **kwargs)

        def gen():
            for k, row in enumerate(rows, start=1):
                if k == 134:
                    with data.open("a") as fh:  # the producer is still writing
                        fh.write(json.dumps({"custom_id": "late", "prompt": "late row"}) + "\n")
                yield row

        return gen()

    monkeypatch.setattr(service, "read_rows", reader)
    job_id = service.submit(rt, _spec(data), InlineQueue())
    st = service.status(rt, job_id)
    assert st.input_changed
    with session_scope(sqlite_url) as s:
        kinds = list(s.scalars(select(LedgerEvent.kind).where(LedgerEvent.job_id == job_id)))
    assert "input_changed" in kinds


def test_an_unchanged_file_is_not_flagged(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = service.submit(rt, _spec(_dataset(tmp_path / "in.jsonl", 50)), InlineQueue())
    assert not service.status(rt, job_id).input_changed
