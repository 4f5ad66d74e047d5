"""Hostile datasets into the real Postgres: NUL, surrogates, huge integers and NaN never abort
ingest (Postgres rejects them in text, json and integer columns); every line is an item or an
invalid row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from jobs.datasets import read_rows
from jobs.ledger.ingest import ingest_rows
from jobs.ledger.migrate import upgrade
from jobs.ledger.models import InvalidRow, Item
from jobs.ledger.session import get_engine, session_scope
from jobs.lifecycle.service import JobSpec, run
from tests.unit.datasets.hostile import Case, any_case
from tests.unit.datasets.test_reader_properties import ingest_and_count, new_job

pytestmark = pytest.mark.integration

HOSTILE = [
    b'{"prompt": "nul \\u0000 inside"}',
    b'{"prompt": "lone \\ud800"}',
    b'{"messages": [{"role": "user", "content": "lone \\udfff"}]}',
    b'{"prompt": "x", "max_tokens": 1099511627776}',
    b'{"prompt": "x", "max_tokens": 100000000000000000000}',
    b'{"custom_id": "n", "body": {"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}}',
    b'{"custom_id": "i", "body": {"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": Infinity}}}',
    b'{"custom_id": "d", "body": {"messages": [{"role": "user", "content": "hi"}], "metadata": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}}",
    b'{"custom_id": "h", "body": {"messages": [{"role": "user", "content": "hi"}], "_headers": {"Authorization": "Bearer sk-x"}}}',
    b'{"custom_id": "m", "body": {"messages": [{"role": "user", "content": "hi"}], "n": 20}}',
    b"\x00\xff not json",
]


def _mixed_jsonl(path: Path, good: int) -> int:
    lines = [json.dumps({"custom_id": f"g{i}", "prompt": f"good {i} \t tab \\ backslash"}).encode() for i in range(good)]
    for k, bad in enumerate(HOSTILE):
        lines.insert(1 + 2 * k, bad)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def _counts(pg_url: str, job_id: str) -> tuple[int, int]:
    with session_scope(pg_url) as s:
        items = s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id))
        invalid = s.scalar(select(func.count()).select_from(InvalidRow).where(InvalidRow.job_id == job_id))
    return items, invalid


def test_hostile_jsonl_ingests_into_postgres(tmp_path: Path, pg_url: str) -> None:
    upgrade(pg_url)
    path = tmp_path / "in.jsonl"
    total = _mixed_jsonl(path, 30)
    job_id = new_job(pg_url, "jsonl")
    report = ingest_rows(get_engine(pg_url), job_id, read_rows(path), chunk_size=10, batch_size=7)
    assert (report.valid, report.invalid) == (30, len(HOSTILE)) == _counts(pg_url, job_id)
    assert total == 30 + len(HOSTILE)


def test_hostile_csv_and_parquet_ingest_into_postgres(tmp_path: Path, pg_url: str) -> None:
    upgrade(pg_url)
    csv_path = tmp_path / "in.csv"
    csv_path.write_bytes(b"custom_id,prompt,max_tokens\na,one,\nb,nul\x00x,\nc,\xff,\nd,big,1099511627776\ne,five,5\n")
    job_id = new_job(pg_url, "csv")
    ingest_rows(get_engine(pg_url), job_id, read_rows(csv_path), chunk_size=10)
    assert _counts(pg_url, job_id) == (2, 3)

    pq_path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"prompt": ["one", "nul\x00", "three", "four"], "max_tokens": pa.array([None, None, 2**40, 8], pa.int64())}),
        pq_path,
    )
    job_id = new_job(pg_url, "parquet")
    ingest_rows(get_engine(pg_url), job_id, read_rows(pq_path), chunk_size=10)
    assert _counts(pg_url, job_id) == (2, 2)


def test_embedded_run_on_postgres_with_hostile_rows(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    path = tmp_path / "in.jsonl"
    _mixed_jsonl(path, 12)
    st = run(runtime_factory(pg_url), JobSpec(input_file=str(path), router="length", strong_share=0.5))
    assert st.status == "completed"
    assert (st.total, st.succeeded, st.invalid) == (12, 12, len(HOSTILE))


@pytest.fixture
def pg_ledger(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=any_case)
def test_ingest_into_postgres_property(pg_ledger: str, case: Case) -> None:
    ingest_and_count(pg_ledger, case)
