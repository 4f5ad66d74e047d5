"""Property tests: any mix of good and hostile rows is read (and ingested) without losing one.

For every generated file (JSONL plain or compressed, CSV, Parquet): each line or record is
reported exactly once, as a PromptRow or a BadRow with its line number; no exception
escapes; the good rows are exactly the ones generated good, with their prompts. Ingested
into SQLite, items + invalid rows equal the reported lines and items the good ones.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from jobs.datasets import BadRow, PromptRow, read_rows
from jobs.datasets.validate import TRANSPORT_FIELDS
from jobs.ledger.ingest import ingest_rows
from jobs.ledger.migrate import ensure_schema
from jobs.ledger.models import InvalidRow, Item, Job
from jobs.ledger.session import get_engine, session_scope
from jobs.ledger.types import utcnow
from tests.unit.datasets.hostile import LIMITS, SECRET, Case, any_case, csv_cases, jsonl_cases, parquet_cases

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_rows(case: Case, rows: list) -> None:
    assert all(isinstance(r, PromptRow | BadRow) for r in rows)
    lines = [r.line_no for r in rows]
    assert lines == sorted(case.expected), "each line once, in order, none missing"
    for r in rows:
        want = case.expected[r.line_no]
        if want is None:
            assert isinstance(r, BadRow), f"line {r.line_no} should be invalid, got {r}"
            assert r.reason
            assert SECRET not in (r.raw or "") and SECRET not in r.reason
            for text in (r.reason, r.field or "", r.custom_id or "", r.raw or ""):
                text.encode("utf-8")  # storable: no lone surrogate
                assert "\x00" not in text
        else:
            assert isinstance(r, PromptRow), f"line {r.line_no} should be valid, got {r}"
            assert r.prompt == want
            assert not set(r.params or {}) & TRANSPORT_FIELDS
    assert sum(isinstance(r, PromptRow) for r in rows) == case.good


def _read(case: Case) -> list:
    with tempfile.TemporaryDirectory() as d:
        path = case.write(Path(d))
        return list(read_rows(path, limits=LIMITS))


@SETTINGS
@given(jsonl_cases())
def test_jsonl_property(case: Case) -> None:
    check_rows(case, _read(case))


@SETTINGS
@given(csv_cases())
def test_csv_property(case: Case) -> None:
    check_rows(case, _read(case))


@SETTINGS
@given(parquet_cases())
def test_parquet_property(case: Case) -> None:
    check_rows(case, _read(case))


def new_job(db_url: str, fmt: str) -> str:
    job_id = "batch_" + uuid.uuid4().hex[:24]
    with session_scope(db_url) as s:
        s.add(
            Job(
                id=job_id,
                created_at=utcnow(),
                input_file="generated",
                input_format=fmt,
                spec={},
                router="length",
                strong_model="s",
                weak_model="w",
                state="validating",
            )
        )
    return job_id


def ingest_and_count(db_url: str, case: Case) -> None:
    """Ingest ``case`` (small batches, so several flushes) and check nothing was lost."""
    job_id = new_job(db_url, case.fmt)
    with tempfile.TemporaryDirectory() as d:
        path = case.write(Path(d))
        report = ingest_rows(get_engine(db_url), job_id, read_rows(path, limits=LIMITS), chunk_size=3, batch_size=4)
    with session_scope(db_url) as s:
        items = s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id))
        invalid = s.scalar(select(func.count()).select_from(InvalidRow).where(InvalidRow.job_id == job_id))
        lines = sorted(
            [
                *s.scalars(select(Item.line_no).where(Item.job_id == job_id)),
                *s.scalars(select(InvalidRow.line_no).where(InvalidRow.job_id == job_id)),
            ]
        )
        params = [p for p in s.scalars(select(Item.params).where(Item.job_id == job_id)) if p]
    assert items == case.good == report.valid
    assert items + invalid == len(case.expected) == report.valid + report.invalid
    assert lines == sorted(case.expected)
    assert not any(set(p) & TRANSPORT_FIELDS for p in params)


@pytest.fixture(scope="module")
def sqlite_ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('prop') / 'ledger.db'}"
    ensure_schema(url)
    return url


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=any_case)
def test_ingest_into_sqlite_property(sqlite_ledger: str, case: Case) -> None:
    ingest_and_count(sqlite_ledger, case)
