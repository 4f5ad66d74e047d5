"""Ingest's fast path on the real Postgres (COPY straight into ``items``) against the staging
path it falls back to: the same items, the same invalid rows and duplicates, the same
progress, and nothing of a batch that was cut short is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

import jobs.ledger.ingest as ingest_mod
from jobs.datasets import read_rows
from jobs.ledger.ingest import IngestReport, ingest_rows
from jobs.ledger.migrate import upgrade
from jobs.ledger.models import InvalidRow, Item, Job
from jobs.ledger.session import get_engine, session_scope
from tests.unit.datasets.test_reader_properties import new_job

pytestmark = pytest.mark.integration


def _write(path: Path, n: int, dup_of: dict[int, int] | None = None) -> Path:
    """``n`` lines; line ``k`` (1-based) reuses line ``dup_of[k]``'s custom_id. Messages,
    params and awkward text (tab, backslash, newline, non-ASCII) go through COPY's escaping."""
    dup_of = dup_of or {}
    with path.open("w") as fh:
        for k in range(1, n + 1):
            cid = f"id-{dup_of.get(k, k)}"
            if k % 3 == 0:
                obj = {
                    "custom_id": cid,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "messages": [{"role": "user", "content": f"q{k}\nzweite Zeile ünï \\ \t"}],
                        "temperature": 0.5,
                        "metadata": {"k": "v\u2028"},
                        "max_tokens": 7,
                    },
                }
            elif k % 3 == 1:
                obj = {"custom_id": cid, "prompt": f"p{k}\ttab \\ backslash ünïcode \r\n end", "max_tokens": k}
            else:
                obj = {"prompt": f"no id {k}"} if k % 7 == 0 and k not in dup_of else {"custom_id": cid, "prompt": f"p{k}"}
            fh.write(json.dumps(obj) + "\n")
            if k % 50 == 0:
                fh.write('{"prompt": ""}\n')  # an invalid row between the good ones
    return path


def _snapshot(url: str, job_id: str) -> tuple[list[tuple], list[tuple], tuple]:
    with session_scope(url) as s:
        items = [
            (i.line_no, i.chunk, i.custom_id, i.prompt, i.messages, i.params, i.max_tokens, i.state)
            for i in s.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.id))
        ]
        bad = [
            (b.line_no, b.custom_id, b.field, b.reason)
            for b in s.scalars(select(InvalidRow).where(InvalidRow.job_id == job_id).order_by(InvalidRow.line_no))
        ]
        job = s.get_one(Job, job_id)
        progress = (job.ingest_line, job.ingest_offset, job.ingest_bytes, job.ingest_seq, job.total, job.invalid, job.chunks)
    return items, bad, progress


def _both_paths(url: str, data: Path, batch_size: int) -> tuple[tuple, tuple]:
    fast, staged = new_job(url, "jsonl"), new_job(url, "jsonl")
    r1 = ingest_rows(get_engine(url), fast, read_rows(data), chunk_size=10, batch_size=batch_size)
    r2 = ingest_rows(get_engine(url), staged, read_rows(data), chunk_size=10, batch_size=batch_size, direct_copy=False)
    assert r1 == r2
    return _snapshot(url, fast), _snapshot(url, staged)


def test_direct_copy_stores_exactly_what_the_staging_path_stores(tmp_path: Path, pg_url: str) -> None:
    upgrade(pg_url)
    data = _write(tmp_path / "in.jsonl", 1000)
    fast, staged = _both_paths(pg_url, data, batch_size=128)
    assert fast == staged
    items, bad, progress = fast
    assert [i[0] for i in items] == sorted(i[0] for i in items)  # ids follow the input order
    assert len(items) == 1000 and len(bad) == 20
    assert items[2][4] == [{"role": "user", "content": "q3\nzweite Zeile ünï \\ \t"}]
    assert items[2][5] == {"temperature": 0.5, "metadata": {"k": "v\u2028"}}
    assert items[0][3] == "p1\ttab \\ backslash ünïcode \r\n end"
    assert items[13][2] == "line-14"  # no custom_id: named after its line
    assert progress[0] == 1020 and progress[1] == data.stat().st_size and progress[4:] == (1000, 20, 100)


@pytest.mark.parametrize(
    "dups",
    [
        {40: 10},  # within one batch
        {300: 5, 301: 5, 302: 301},  # against an earlier batch, twice, and a chain
        {k: 1 for k in range(2, 1001)},  # every line repeats the first one
    ],
    ids=["same-batch", "earlier-batch", "all-duplicates"],
)
def test_duplicates_fall_back_to_the_staging_path_with_the_same_result(tmp_path: Path, pg_url: str, dups: dict[int, int]) -> None:
    upgrade(pg_url)
    data = _write(tmp_path / "in.jsonl", 1000, dups)
    fast, staged = _both_paths(pg_url, data, batch_size=100)
    assert fast == staged
    items, bad, _ = fast
    dup_rows = [b for b in bad if b[2] == "custom_id"]
    assert all(b[3].startswith("duplicate custom_id 'id-") for b in dup_rows)
    assert len({i[2] for i in items}) == len(items)  # custom_ids unique
    every = sorted([i[0] for i in items] + [b[0] for b in bad])
    assert every == list(range(1, len(every) + 1))  # every line exactly once


def test_after_duplicates_the_staging_path_is_used_for_a_doubling_run_of_batches(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(pg_url)
    # 4,000 lines in batches of 100 (plus invalid rows): every line repeats line 1's id
    data = _write(tmp_path / "in.jsonl", 4000, {k: 1 for k in range(2, 4001)})
    staged_calls: list[int] = []
    copies: list[int] = []
    real_stage, real_open = ingest_mod._Stager._write_staged, ingest_mod._Stager._open_copy

    def stage(self, valid, custom_ids):  # type: ignore[no-untyped-def]
        staged_calls.append(len(valid))
        return real_stage(self, valid, custom_ids)

    def open_copy(self):  # type: ignore[no-untyped-def]
        copies.append(1)
        return real_open(self)

    monkeypatch.setattr(ingest_mod._Stager, "_write_staged", stage)
    monkeypatch.setattr(ingest_mod._Stager, "_open_copy", open_copy)
    job = new_job(pg_url, "jsonl")
    report = ingest_rows(get_engine(pg_url), job, read_rows(data), chunk_size=10, batch_size=100)
    assert report.valid == 1 and report.invalid == 4000 + 80 - 1  # one item; the rest duplicates or invalid
    batches = len(staged_calls)
    assert batches >= 40  # every batch with a valid row was written through the stage
    # fast attempts: 1, then after runs of 1, 2, 4, 8, 16 staged batches: 6 in ~41 batches, not one per batch
    assert len(copies) <= 8


@pytest.mark.parametrize("read_ahead", [True, False])
def test_an_input_that_stops_mid_batch_leaves_only_committed_batches(tmp_path: Path, pg_url: str, read_ahead: bool) -> None:
    upgrade(pg_url)
    data = _write(tmp_path / "in.jsonl", 1000)
    job = new_job(pg_url, "jsonl")

    def stops_at_line_450():  # type: ignore[no-untyped-def]
        for row in read_rows(data):
            if row.line_no == 450:
                raise KeyboardInterrupt
            yield row

    with pytest.raises(KeyboardInterrupt):
        ingest_rows(get_engine(pg_url), job, stops_at_line_450(), chunk_size=10, batch_size=100, read_ahead=read_ahead)
    items, bad, progress = _snapshot(pg_url, job)
    assert progress[0] == 400  # four batches of 100 rows (lines); the COPY open for the fifth left nothing
    assert max(i[0] for i in items) <= 400 and len(items) + len(bad) == 400

    line, offset, _bytes, seq, total, invalid, chunks = progress
    start = IngestReport(valid=total, invalid=invalid, chunks=chunks, seq=seq, line=line, offset=offset)
    rows = read_rows(data, start_offset=offset, start_line=line + 1)
    ingest_rows(get_engine(pg_url), job, rows, chunk_size=10, batch_size=100, start=start, read_ahead=read_ahead)
    resumed = _snapshot(pg_url, job)
    fresh = new_job(pg_url, "jsonl")
    ingest_rows(get_engine(pg_url), fresh, read_rows(data), chunk_size=10, batch_size=100)
    assert resumed[:2] == _snapshot(pg_url, fresh)[:2]  # the same items and invalid rows as one clean run


def test_a_reader_error_after_a_duplicate_fallback_still_commits_nothing_partial(tmp_path: Path, pg_url: str) -> None:
    upgrade(pg_url)
    data = _write(tmp_path / "in.jsonl", 300, {120: 110})
    job = new_job(pg_url, "jsonl")

    def breaks():  # type: ignore[no-untyped-def]
        for row in read_rows(data):
            if row.line_no == 250:
                raise RuntimeError("reader bug")
            yield row

    with pytest.raises(RuntimeError, match="reader bug"):
        ingest_rows(get_engine(pg_url), job, breaks(), chunk_size=10, batch_size=100)
    items, bad, progress = _snapshot(pg_url, job)
    assert progress[0] == 200 and len(items) + len(bad) == 200
    assert [b[1] for b in bad if b[2] == "custom_id"] == ["id-110"]  # the duplicate in batch 2 was committed
