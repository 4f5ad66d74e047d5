"""The ledger on the real Postgres: migrations, COPY ingestion, a whole embedded run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from jobs.ledger.migrate import current_revision, head_revision, upgrade
from jobs.ledger.models import Attempt, InvalidRow, Item
from jobs.ledger.session import get_engine, session_scope
from jobs.ledger.ingest import ingest_rows
from jobs.datasets import read_rows
from jobs.lifecycle.service import JobSpec, run, status

pytestmark = pytest.mark.integration


def test_migrations_create_the_ledger(pg_url: str) -> None:
    assert upgrade(pg_url) == head_revision(pg_url)
    names = set(inspect(get_engine(pg_url)).get_table_names())
    assert {"jobs", "items", "attempts", "invalid_rows", "prices", "alembic_version"} <= names
    uniques = inspect(get_engine(pg_url)).get_unique_constraints("items")
    assert any(u["column_names"] == ["job_id", "custom_id"] for u in uniques)
    cols = {c["name"]: c for c in inspect(get_engine(pg_url)).get_columns("attempts")}
    assert str(cols["cost_micro_usd"]["type"]) == "BIGINT"
    assert upgrade(pg_url) == current_revision(pg_url)  # idempotent


def test_migrations_on_sqlite(sqlite_url: str) -> None:
    assert upgrade(sqlite_url) == head_revision(sqlite_url)


def test_copy_ingest_flags_duplicates_and_keeps_order(tmp_path: Path, pg_url: str) -> None:
    upgrade(pg_url)
    data = tmp_path / "in.jsonl"
    with data.open("w") as fh:
        for i in range(2500):
            fh.write(json.dumps({"custom_id": f"id-{i % 2400}", "prompt": f"p{i}\ttab \\ backslash ünïcode"}) + "\n")
        fh.write("{bad\n")
    with session_scope(pg_url) as s:
        s.execute(
            text(
                "INSERT INTO jobs (id, created_at, input_file, input_format, spec, router, strong_model, weak_model, state) "
                "VALUES ('j1', now(), 'x', 'jsonl', '{}', 'length', 's', 'w', 'validating')"
            )
        )
    report = ingest_rows(get_engine(pg_url), "j1", read_rows(data), chunk_size=1000, batch_size=700)
    assert (report.valid, report.invalid, report.chunks) == (2400, 101, 3)
    with session_scope(pg_url) as s:
        first = s.scalars(select(Item).where(Item.job_id == "j1").order_by(Item.line_no).limit(1)).one()
        assert first.prompt == "p0\ttab \\ backslash ünïcode"
        dups = s.scalars(select(InvalidRow.line_no).where(InvalidRow.field == "custom_id").order_by(InvalidRow.line_no)).all()
        assert dups == list(range(2401, 2501))
        bad = s.scalars(select(InvalidRow).where(InvalidRow.field.is_(None))).one()
        assert bad.line_no == 2501 and "malformed JSON" in bad.reason


def test_embedded_run_on_postgres(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    data = tmp_path / "in.jsonl"
    with data.open("w") as fh:
        for i in range(300):
            fh.write(json.dumps({"prompt": f"question {i} " + "more " * (i % 17)}) + "\n")
            if i % 100 == 0:
                fh.write('{"prompt": null}\n')
    rt = runtime_factory(pg_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.25, chunk_size=64))
    assert st.status == "completed"
    assert (st.total, st.succeeded, st.invalid) == (300, 300, 3)
    with session_scope(pg_url) as s:
        at_or_above = s.scalar(select(func.count()).select_from(Item).where(Item.score >= st.threshold))
        assert st.strong_calls == 75 and at_or_above >= 75  # ties at the threshold are broken so the share holds
        assert s.scalar(select(func.sum(Attempt.cost_micro_usd))) == st.cost_micro_usd
        assert s.scalar(select(func.count()).select_from(Attempt).where(Attempt.price_id.is_(None))) == 0
    again = status(rt, st.job_id)
    assert again.timestamps["validating"] <= again.timestamps["in_progress"] <= again.timestamps["completed"]
