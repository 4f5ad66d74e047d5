"""Bulk ingestion of a dataset into ``items`` and ``invalid_rows``.

Rows go through a staging table in batches: COPY into it on Postgres (executemany on
SQLite), then one ``INSERT ... SELECT ... ON CONFLICT (job_id, custom_id) DO NOTHING
RETURNING line_no``. A staged line the insert did not return is a duplicate custom_id and
becomes an invalid row. Memory stays flat: only one batch is held, and duplicates are
found by the database's unique index instead of a growing set in Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Engine

from jobs.datasets.rows import BadRow, PromptRow
from jobs.ledger.types import utcnow

STAGE_COLUMNS = ("line_no", "chunk", "custom_id", "prompt", "messages", "params", "max_tokens")
_PG_STAGE = """CREATE TEMP TABLE IF NOT EXISTS rb_ingest_stage (
    line_no integer, chunk integer, custom_id text, prompt text, messages text, params text, max_tokens integer
) ON COMMIT DELETE ROWS"""
_SQLITE_STAGE = """CREATE TEMP TABLE IF NOT EXISTS rb_ingest_stage (
    line_no integer, chunk integer, custom_id text, prompt text, messages text, params text, max_tokens integer
)"""
_INVALID_INSERT = (
    "INSERT INTO invalid_rows (job_id, line_no, custom_id, field, reason, raw) VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
)


@dataclass
class IngestReport:
    valid: int = 0
    invalid: int = 0
    chunks: int = 0


def _insert_from_stage(dialect: str) -> str:
    json_cast = "::json" if dialect == "postgresql" else ""
    p = "%(job_id)s" if dialect == "postgresql" else ":job_id"
    ts = "%(now)s" if dialect == "postgresql" else ":now"
    return f"""
        INSERT INTO items (job_id, line_no, chunk, custom_id, prompt, messages, params, max_tokens, state, updated_at)
        SELECT {p}, line_no, chunk, custom_id, prompt, messages{json_cast}, params{json_cast}, max_tokens, 'pending', {ts}
        FROM rb_ingest_stage ORDER BY line_no
        ON CONFLICT (job_id, custom_id) DO NOTHING
        RETURNING line_no"""


class _Stager:
    """Holds the open DBAPI connection and writes one batch at a time."""

    def __init__(self, engine: Engine, job_id: str) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.job_id = job_id
        self.raw = engine.raw_connection()
        self.cur = self.raw.cursor()
        self.cur.execute(_PG_STAGE if self.dialect == "postgresql" else _SQLITE_STAGE)
        self.insert_sql = _insert_from_stage(self.dialect)
        placeholder = "%s" if self.dialect == "postgresql" else "?"
        self.invalid_sql = _INVALID_INSERT.format(p=placeholder)

    def write(self, valid: list[tuple], invalid: list[BadRow]) -> list[int]:
        """Stage and insert one batch; returns the line numbers that were duplicates."""
        cur = self.cur
        duplicates: list[int] = []
        if valid:
            if self.dialect == "postgresql":
                with cur.copy(f"COPY rb_ingest_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
                    for row in valid:
                        copy.write_row(row)
                cur.execute(self.insert_sql, {"job_id": self.job_id, "now": utcnow()})
            else:
                cur.execute("DELETE FROM rb_ingest_stage")
                cur.executemany(f"INSERT INTO rb_ingest_stage VALUES ({', '.join('?' * len(STAGE_COLUMNS))})", valid)
                cur.execute(
                    self.insert_sql.replace(":job_id", "?").replace(":now", "?"),
                    (self.job_id, utcnow().isoformat(sep=" ")),
                )
            inserted = {r[0] for r in cur.fetchall()}
            duplicates = [row[0] for row in valid if row[0] not in inserted]
        if invalid:
            cur.executemany(
                self.invalid_sql,
                [(self.job_id, b.line_no, b.custom_id, b.field, b.reason, b.raw) for b in invalid],
            )
        self.raw.commit()
        return duplicates

    def close(self) -> None:
        try:
            self.cur.close()
        finally:
            self.raw.close()


def ingest_rows(
    engine: Engine,
    job_id: str,
    rows: Iterable[PromptRow | BadRow],
    *,
    chunk_size: int,
    batch_size: int = 5000,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Write ``rows`` for ``job_id``; valid rows get chunk numbers in input order."""
    report = IngestReport()
    stager = _Stager(engine, job_id)
    seq = 0
    valid: list[tuple] = []
    invalid: list[BadRow] = []
    custom_ids: dict[int, str] = {}

    def flush() -> None:
        duplicates = stager.write(valid, invalid)
        report.valid += len(valid) - len(duplicates)
        report.invalid += len(invalid)
        if duplicates:
            stager.write(
                [],
                [BadRow(n, "custom_id", f"duplicate custom_id {custom_ids[n]!r}", custom_ids[n]) for n in duplicates],
            )
            report.invalid += len(duplicates)
        valid.clear()
        invalid.clear()
        custom_ids.clear()
        if on_progress:
            on_progress(report.valid, report.invalid)

    try:
        for row in rows:
            if isinstance(row, BadRow):
                invalid.append(row)
            else:
                cid = row.custom_id if row.custom_id is not None else f"line-{row.line_no}"
                custom_ids[row.line_no] = cid
                valid.append(
                    (
                        row.line_no,
                        seq // chunk_size,
                        cid,
                        row.prompt,
                        json.dumps(row.messages, ensure_ascii=False) if row.messages is not None else None,
                        json.dumps(row.params, ensure_ascii=False) if row.params is not None else None,
                        row.max_tokens,
                    )
                )
                seq += 1
            if len(valid) + len(invalid) >= batch_size:
                flush()
        flush()
    finally:
        stager.close()
    report.chunks = (seq + chunk_size - 1) // chunk_size
    return report
