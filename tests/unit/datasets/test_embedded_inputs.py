"""Whole embedded runs on SQLite: hostile rows and streamed inputs no longer abort or lose rows."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from jobs.datasets.validate import TRANSPORT_FIELDS
from jobs.ledger.models import InvalidRow, Item
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run

GOOD = 4
SECRET = "sk-live-operator-key-0123456789"
MSG = [{"role": "user", "content": "hi"}]


def _good_lines() -> list[bytes]:
    return [json.dumps({"custom_id": f"g{i}", "prompt": f"good prompt {i}"}).encode() for i in range(GOOD)]


HOSTILE_JSONL = {
    "surrogate_prompt": b'{"prompt": "a\\ud800b"}',
    "surrogate_messages": b'{"messages": [{"role": "user", "content": "x\\udfff"}]}',
    "deep_5000": b'{"prompt": "x", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "deep_100000": b'{"prompt": "x", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "max_tokens_1e20": b'{"prompt": "x", "max_tokens": 100000000000000000000}',
    "max_tokens_2_40": b'{"prompt": "x", "max_tokens": 1099511627776}',
    "nul_prompt": b'{"prompt": "a\\u0000b"}',
    "nan_param": b'{"custom_id": "n", "body": {"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}}',
    "infinity_param": b'{"custom_id": "n", "body": {"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}}',
    "n_20": json.dumps({"custom_id": "n", "body": {"messages": MSG, "n": 20}}).encode(),
    "headers": json.dumps(
        {"custom_id": "h", "body": {"messages": MSG, "_headers": {"Authorization": f"Bearer {SECRET}"}}}
    ).encode(),
    "headers_not_a_dict": json.dumps({"custom_id": "h", "body": {"messages": MSG, "_headers": "notadict"}}).encode(),
}


def _run(rt, path: Path, fmt: str | None = None):
    return run(rt, JobSpec(input_file=str(path), format=fmt, router="length", strong_share=0.5))


@pytest.mark.parametrize("case", sorted(HOSTILE_JSONL))
def test_one_hostile_jsonl_row_among_good_ones(tmp_path: Path, sqlite_url: str, runtime_factory, case: str) -> None:
    lines = _good_lines()
    lines.insert(2, HOSTILE_JSONL[case])
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    st = _run(runtime_factory(sqlite_url), path)
    assert st.status == "completed"
    assert (st.total, st.succeeded, st.invalid) == (GOOD, GOOD, 1)
    (bad,) = st.invalid_rows
    assert bad.line == 3 and bad.reason
    with session_scope(sqlite_url) as s:
        params = [p for p in s.scalars(select(Item.params)).all() if p]
        raws = s.scalars(select(InvalidRow.raw)).all()
    assert not any(set(p) & TRANSPORT_FIELDS for p in params)
    assert not any(SECRET in (r or "") for r in raws), "a key given in _headers is never stored"


@pytest.mark.parametrize("cell", [b"nul\x00inside", b"\xff\xfe"])
def test_one_hostile_csv_row_among_good_ones(tmp_path: Path, sqlite_url: str, runtime_factory, cell: bytes) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"custom_id,prompt,max_tokens\na,one,\nb," + cell + b",\nc,three,1099511627776\nd,four,\ne,five,5\n")
    st = _run(runtime_factory(sqlite_url), path)
    assert st.status == "completed"
    assert (st.total, st.succeeded, st.invalid) == (3, 3, 2)
    assert sorted(r.line for r in st.invalid_rows) == [3, 4]


def test_one_hostile_parquet_row_among_good_ones(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"prompt": ["one", "nul\x00", "three", "four"], "max_tokens": pa.array([None, None, 2**40, 8], pa.int64())}),
        path,
    )
    st = _run(runtime_factory(sqlite_url), path)
    assert st.status == "completed"
    assert (st.total, st.succeeded, st.invalid) == (2, 2, 2)
    assert sorted(r.line for r in st.invalid_rows) == [2, 3]


def test_run_from_a_pipe_reads_every_row(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    """``routebatch run <(cat examples/prompts.jsonl) --format jsonl`` ran 11 of 50 rows."""
    data = Path(__file__).resolve().parents[3] / "examples" / "prompts.jsonl"
    expected = sum(1 for line in data.read_bytes().splitlines() if line.strip())
    r, w = os.pipe()

    def write() -> None:
        with os.fdopen(w, "wb") as fh:
            fh.write(data.read_bytes())

    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        st = _run(runtime_factory(sqlite_url), Path(f"/dev/fd/{r}"), "jsonl")
    finally:
        os.close(r)
    t.join(5)
    assert st.status == "completed"
    assert st.total + st.invalid == expected == 50
    assert st.total == 50


def test_run_from_stdin(tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(line + b"\n" for line in _good_lines())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    st = _run(runtime_factory(sqlite_url), Path("-"), "jsonl")
    assert st.status == "completed" and st.total == GOOD
