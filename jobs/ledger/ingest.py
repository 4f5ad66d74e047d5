"""Bulk ingestion of a dataset into ``items`` and ``invalid_rows``.

Rows go through a staging table in batches: COPY into it on Postgres (executemany on
SQLite), then one ``INSERT ... SELECT ... ON CONFLICT (job_id, custom_id) DO NOTHING
RETURNING line_no``. A staged line the insert did not return is a duplicate custom_id and
becomes an invalid row. Memory stays flat: only one batch is held, and duplicates are
found by the database's unique index instead of a growing set in Python.

Each batch commits together with the job's progress (``jobs.ingest_line``,
``ingest_offset``, ``ingest_seq``, ``total``, ``invalid``, ``chunks``), in one transaction:
after a crash the job row says exactly which rows are in, so ``resume`` continues after
``ingest_line`` and no row is read twice or lost. Rows without a ``custom_id`` get
``line-<n>``, a function of the line alone, so even a re-read line could not add an item twice.
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


_PROGRESS_UPDATE = (
    "UPDATE jobs SET ingest_line = {p}, ingest_offset = {p}, ingest_bytes = {p}, ingest_seq = {p}, "
    "total = {p}, invalid = {p}, chunks = {p} WHERE id = {p}"
)


@dataclass
class IngestReport:
    """Totals for the job so far (including batches committed by an earlier, interrupted run)."""

    valid: int = 0
    invalid: int = 0
    chunks: int = 0
    seq: int = 0  # valid rows staged (duplicates included): chunk numbers continue from here
    line: int = 0  # last line of the last committed row (a CSV record may span lines)
    offset: int | None = None  # byte offset (decoded stream) after it, when the reader reports one
    bytes_read: int | None = None  # bytes of the file on disk read so far, when the reader reports it


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
        self.progress_sql = _PROGRESS_UPDATE.format(p=placeholder)

    def write(
        self,
        valid: list[tuple],
        invalid: list[BadRow],
        custom_ids: dict[int, str],
        report: IngestReport,
        chunk_size: int,
    ) -> None:
        """Stage and insert one batch, its duplicates as invalid rows and the job's progress,
        in one transaction; ``report`` (already advanced to this batch's end) gets the counts."""
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
        bad = invalid + [BadRow(n, "custom_id", f"duplicate custom_id {custom_ids[n]!r}", custom_ids[n]) for n in duplicates]
        if bad:
            cur.executemany(
                self.invalid_sql,
                [(self.job_id, b.line_no, b.custom_id, b.field, b.reason, b.raw) for b in bad],
            )
        valid_n = report.valid + len(valid) - len(duplicates)
        invalid_n = report.invalid + len(bad)
        chunks = (report.seq + chunk_size - 1) // chunk_size
        cur.execute(
            self.progress_sql,
            (report.line, report.offset, report.bytes_read, report.seq, valid_n, invalid_n, chunks, self.job_id),
        )
        self.raw.commit()
        report.valid, report.invalid, report.chunks = valid_n, invalid_n, chunks

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
    start: IngestReport | None = None,
) -> IngestReport:
    """Write ``rows`` for ``job_id``; valid rows get chunk numbers in input order.

    ``start`` is the progress an interrupted ingest committed (from the job row): rows at
    or before ``start.line`` are skipped, counts and chunk numbers continue from it.
    """
    report = IngestReport(**(start.__dict__ if start else {}))
    skip_to = report.line
    stager = _Stager(engine, job_id)
    valid: list[tuple] = []
    invalid: list[BadRow] = []
    custom_ids: dict[int, str] = {}

    def flush() -> None:
        stager.write(valid, invalid, custom_ids, report, chunk_size)
        valid.clear()
        invalid.clear()
        custom_ids.clear()
        if on_progress:
            on_progress(report.valid, report.invalid)

    try:
        for row in rows:
            if row.line_no <= skip_to:
                continue  # committed by an earlier run
            if isinstance(row, BadRow):
                invalid.append(row)
            else:
                cid = row.custom_id if row.custom_id is not None else f"line-{row.line_no}"
                custom_ids[row.line_no] = cid
                valid.append(
                    (
                        row.line_no,
                        report.seq // chunk_size,
                        cid,
                        row.prompt,
                        json.dumps(row.messages, ensure_ascii=False) if row.messages is not None else None,
                        json.dumps(row.params, ensure_ascii=False) if row.params is not None else None,
                        row.max_tokens,
                    )
                )
                report.seq += 1
            next_line = getattr(row, "next_line", None)
            report.line = next_line - 1 if next_line else row.line_no
            report.offset = getattr(row, "end_offset", None)
            if len(valid) + len(invalid) >= batch_size:
                report.bytes_read = getattr(rows, "position", None)
                flush()
        report.bytes_read = getattr(rows, "position", None)
        flush()
    finally:
        stager.close()
    return report
