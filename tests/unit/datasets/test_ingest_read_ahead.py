"""Reading rows on a thread ahead of the writer (jobs.ledger.prefetch) changes nothing the
writer sees: the same rows in order, the same batch boundaries and positions, exceptions at
the same point; and ingest with it stores exactly what ingest without it stores."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from jobs.datasets import read_rows
from jobs.ledger.ingest import ingest_rows
from jobs.ledger.migrate import upgrade
from jobs.ledger.models import InvalidRow, Item, Job
from jobs.ledger.prefetch import Prefetcher
from jobs.ledger.session import get_engine, session_scope
from tests.unit.datasets.test_reader_properties import new_job


@dataclass
class _Row:
    line_no: int


class _Rows:
    """Rows with a ``position`` that advances as they are read, like a RowStream."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.position = n, fail_at, 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for k in range(1, self.n + 1):
            if k == self.fail_at:
                raise ValueError(f"broken at {k}")
            self.position = k * 10
            yield _Row(k)


def _plain(rows: _Rows, batch_size: int, skip_to: int) -> list[tuple[list[int], int]]:
    """The batches (line numbers, position at the flush) of the loop the prefetcher replaces."""
    out, cur, pending = [], [], 0
    for row in rows:
        if row.line_no <= skip_to:
            continue
        cur.append(row.line_no)
        pending += 1
        if pending >= batch_size:
            out.append((cur, rows.position))
            cur, pending = [], 0
    out.append((cur, rows.position))
    return out


def _prefetched(rows: _Rows, batch_size: int, skip_to: int, parcel: int) -> list[tuple[list[int], int]]:
    out, cur = [], []
    with Prefetcher(rows, batch_size=batch_size, skip_to=skip_to, parcel=parcel, depth=2) as parcels:
        for p in parcels:
            cur.extend(r.line_no for r in p.rows if r.line_no > skip_to)
            if p.batch_end:
                out.append((cur, p.position))
                cur = []
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    batch_size=st.integers(1, 40),
    skip_to=st.integers(0, 320),
    parcel=st.integers(1, 50),
)
def test_parcels_give_the_same_batches_and_positions_as_a_plain_loop(n: int, batch_size: int, skip_to: int, parcel: int) -> None:
    assert _prefetched(_Rows(n), batch_size, skip_to, parcel) == _plain(_Rows(n), batch_size, skip_to)


def test_an_exception_arrives_after_the_rows_before_it() -> None:
    seen: list[int] = []
    with pytest.raises(ValueError, match="broken at 58"):
        with Prefetcher(_Rows(100, fail_at=58), batch_size=10, parcel=4) as parcels:
            for p in parcels:
                seen.extend(r.line_no for r in p.rows)
    assert seen == list(range(1, 58))


def test_keyboard_interrupt_in_the_reader_reaches_the_writer() -> None:
    def rows():  # type: ignore[no-untyped-def]
        yield _Row(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with Prefetcher(rows(), batch_size=10) as parcels:
            list(parcels)


def test_close_stops_a_reader_that_is_far_ahead() -> None:
    produced = []

    def endless():  # type: ignore[no-untyped-def]
        k = 0
        while True:
            k += 1
            produced.append(k)
            yield _Row(k)

    before = threading.active_count()
    p = Prefetcher(endless(), batch_size=5, parcel=5, depth=2)
    next(iter(p))
    time.sleep(0.2)  # the reader fills the queue and blocks
    ahead = len(produced)
    assert ahead < 100  # bounded: a few parcels, not the whole input
    t0 = time.monotonic()
    p.close()
    assert time.monotonic() - t0 < 2
    assert threading.active_count() <= before


def _dataset(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for k in range(n):
            fh.write(json.dumps({"custom_id": f"c{k % 900}", "prompt": f"p {k}\t\\"}) + "\n")
            if k % 97 == 0:
                fh.write("{not json\n")
    return path


def _stored(url: str, job_id: str) -> tuple[list, list, tuple]:
    with session_scope(url) as s:
        items = [
            (i.line_no, i.chunk, i.custom_id, i.prompt)
            for i in s.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.id))
        ]
        bad = [
            (b.line_no, b.field, b.reason)
            for b in s.scalars(select(InvalidRow).where(InvalidRow.job_id == job_id).order_by(InvalidRow.line_no))
        ]
        j = s.get_one(Job, job_id)
        return items, bad, (j.ingest_line, j.ingest_offset, j.ingest_bytes, j.ingest_seq, j.total, j.invalid, j.chunks)


def test_sqlite_ingest_with_and_without_read_ahead_stores_the_same(tmp_path: Path, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    data = _dataset(tmp_path / "in.jsonl", 1000)
    a, b = new_job(sqlite_url, "jsonl"), new_job(sqlite_url, "jsonl")
    ra = ingest_rows(get_engine(sqlite_url), a, read_rows(data), chunk_size=7, batch_size=64, read_ahead=True)
    rb = ingest_rows(get_engine(sqlite_url), b, read_rows(data), chunk_size=7, batch_size=64, read_ahead=False)
    assert ra == rb and (ra.valid, ra.invalid) == (900, 100 + 11)
    assert _stored(sqlite_url, a) == _stored(sqlite_url, b)
