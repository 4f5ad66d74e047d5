"""Bulk ingestion of a dataset into ``items`` and ``invalid_rows``.

Postgres, fast path: each batch is COPYed straight into ``items`` while it is being read,
so the server inserts (heap, indexes, foreign-key checks) on one core while this process
parses the next rows on the other. A duplicate ``custom_id`` (within the batch or against an
earlier one) makes the unique index refuse the COPY; the batch's transaction is then rolled
back as a whole and the batch is written again by the staging path below. Duplicates are
rare, and when a file has many, the staging path is used for the next batches too (doubling
up to ``_MAX_STAGED_RUN`` batches) before the fast path is tried again, so a file of
duplicates costs about what the staging path costs.

Staging path (Postgres when a batch has duplicates, SQLite always): COPY (executemany on
SQLite) into an unindexed temporary table, then one ``INSERT ... SELECT ... ON CONFLICT
(job_id, custom_id) DO NOTHING RETURNING line_no``; a staged line the insert did not return
is a duplicate and becomes an invalid row. Either way memory stays flat: only one batch is
held, and duplicates are found by the database's unique index instead of a growing set in
Python.

On Postgres the rows are read and validated on a second thread (``jobs.ledger.prefetch``),
a few parcels ahead, so parsing overlaps the server's work even between batches.

Each batch commits together with the job's progress (``jobs.ingest_line``,
``ingest_offset``, ``ingest_bytes``, ``ingest_seq``, ``total``, ``invalid``, ``chunks``),
in one transaction: after a crash the job row says exactly which rows are in, so ``resume``
continues after ``ingest_line`` and no row is read twice or lost. Rows without a
``custom_id`` get ``line-<n>``, a function of the line alone, so even a re-read line could
not add an item twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from jobs.datasets.rows import BadRow, PromptRow
from jobs.ledger.prefetch import Prefetcher
from jobs.ledger.types import utcnow

STAGE_COLUMNS = ("line_no", "chunk", "custom_id", "prompt", "messages", "params", "max_tokens")
_ITEM_COLUMNS = ("job_id", *STAGE_COLUMNS, "state", "updated_at")
_DIRECT_COPY = f"COPY items ({', '.join(_ITEM_COLUMNS)}) FROM STDIN"

_STAGE_COPY = f"COPY rb_ingest_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN"
_MAX_STAGED_RUN = 64
"""After a batch with duplicates, at most this many batches in a row take the staging path."""

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
    """Holds the open DBAPI connection and writes one batch at a time.

    Rows come in through ``add``; on the Postgres fast path each is also written at once
    into a COPY into ``items`` that stays open until ``write`` ends the batch.
    """

    def __init__(self, engine: Engine, job_id: str, *, direct: bool = True) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.job_id = job_id
        self.raw = engine.raw_connection()
        self.cur = self.raw.cursor()
        self.direct = direct and self.dialect == "postgresql"
        self.insert_sql = _insert_from_stage(self.dialect)
        placeholder = "%s" if self.dialect == "postgresql" else "?"
        self.invalid_sql = _INVALID_INSERT.format(p=placeholder)
        self.progress_sql = _PROGRESS_UPDATE.format(p=placeholder)
        self.valid: list[tuple] = []
        self._stage_ready = False
        self._copy_cm: Any = None  # the open COPY's context manager (fast path)
        self._copy: Any = None
        self._copy_failed = False  # this batch's COPY hit a duplicate: redo it through the stage
        self._staged_left = 0  # batches still to take the staging path after duplicates
        self._staged_run = 0  # how many the last fallback sent there (doubles while duplicates recur)
        self._now: str | None = None  # the batch's updated_at, as COPY text (cheaper than a datetime per row)

    # -- adding rows -----------------------------------------------------------------------

    def add(self, row: tuple) -> None:
        self.valid.append(row)
        if not self.direct or self._copy_failed or self._staged_left:
            return
        if self._copy is None:
            self._open_copy()
        try:
            self._copy.write_row((self.job_id, *row, "pending", self._now))
        except Exception as exc:
            if not self._is_duplicate(exc):
                raise
            self._abandon_copy(exc)

    def _open_copy(self) -> None:
        self._now = utcnow().isoformat()
        self._copy_cm = self.cur.copy(_DIRECT_COPY)
        self._copy = self._copy_cm.__enter__()

    def _finish_copy(self) -> bool:
        """End the open COPY; False when the unique index refused it (a duplicate)."""
        cm, self._copy_cm, self._copy = self._copy_cm, None, None
        try:
            cm.__exit__(None, None, None)
        except Exception as exc:
            if not self._is_duplicate(exc):
                raise
            self._rollback_after_duplicate()
            return False
        return True

    def _abandon_copy(self, exc: BaseException | None) -> None:
        cm, self._copy_cm, self._copy = self._copy_cm, None, None
        if cm is not None:
            try:
                cm.__exit__(type(exc) if exc else None, exc, None)
            except Exception:
                pass
        self._rollback_after_duplicate()

    def _rollback_after_duplicate(self) -> None:
        self.raw.rollback()  # nothing else of this batch was written yet
        self._copy_failed = True
        self._staged_run = min(max(1, 2 * self._staged_run), _MAX_STAGED_RUN)
        self._staged_left = self._staged_run

    @staticmethod
    def _is_duplicate(exc: BaseException) -> bool:
        import psycopg.errors

        return isinstance(exc, psycopg.errors.UniqueViolation)

    # -- one batch -------------------------------------------------------------------------

    def write(self, invalid: list[BadRow], custom_ids: dict[int, str], report: IngestReport, chunk_size: int) -> None:
        """Insert the batch's rows, its duplicates as invalid rows and the job's progress,
        in one transaction; ``report`` (already advanced to this batch's end) gets the counts."""
        cur = self.cur
        valid = self.valid
        duplicates: list[int] = []
        if self._copy is not None and self._finish_copy():
            self._staged_run = 0  # the fast path works again: a later duplicate starts the backoff anew
        elif valid:
            if self._staged_left and not self._copy_failed:
                self._staged_left -= 1
            duplicates = self._write_staged(valid, custom_ids)
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
        self.valid = []
        self._copy_failed = False

    def _write_staged(self, valid: list[tuple], custom_ids: dict[int, str]) -> list[int]:
        """Stage the batch, insert what is new, return the line numbers of duplicates."""
        cur = self.cur
        if self.dialect == "postgresql":
            if not self._stage_ready:
                cur.execute(_PG_STAGE)  # in this batch's transaction: a rollback cannot lose it later
                self._stage_ready = True
            with cur.copy(_STAGE_COPY) as copy:
                for row in valid:
                    copy.write_row(row)
            cur.execute(self.insert_sql, {"job_id": self.job_id, "now": utcnow()})
        else:
            if not self._stage_ready:
                cur.execute(_SQLITE_STAGE)
                self._stage_ready = True
            cur.execute("DELETE FROM rb_ingest_stage")
            cur.executemany(f"INSERT INTO rb_ingest_stage VALUES ({', '.join('?' * len(STAGE_COLUMNS))})", valid)
            cur.execute(
                self.insert_sql.replace(":job_id", "?").replace(":now", "?"),
                (self.job_id, utcnow().isoformat(sep=" ")),
            )
        inserted = {r[0] for r in cur.fetchall()}
        return [row[0] for row in valid if row[0] not in inserted]

    def close(self) -> None:
        try:
            if self._copy_cm is not None:  # the rows stopped mid-batch: give the COPY up, commit nothing
                cm, self._copy_cm, self._copy = self._copy_cm, None, None
                try:
                    cm.__exit__(RuntimeError, RuntimeError("ingest stopped"), None)
                except Exception:
                    pass
                self.raw.rollback()
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
    direct_copy: bool = True,
    read_ahead: bool | None = None,
) -> IngestReport:
    """Write ``rows`` for ``job_id``; valid rows get chunk numbers in input order.

    ``start`` is the progress an interrupted ingest committed (from the job row): rows at
    or before ``start.line`` are skipped, counts and chunk numbers continue from it.
    ``direct_copy=False`` forces the staging path on Postgres (benchmarks and tests compare
    the two; SQLite always stages). ``read_ahead``: parse rows on a second thread while the
    database stores the previous ones (``jobs.ledger.prefetch``); default on for Postgres,
    where storing is the database's work and the writer mostly waits.
    """
    report = IngestReport(**(start.__dict__ if start else {}))
    skip_to = report.line
    stager = _Stager(engine, job_id, direct=direct_copy)
    if read_ahead is None:
        read_ahead = stager.dialect == "postgresql"
    invalid: list[BadRow] = []
    custom_ids: dict[int, str] = {}
    add = stager.add
    dumps = json.dumps

    def flush() -> None:
        stager.write(invalid, custom_ids, report, chunk_size)
        invalid.clear()
        custom_ids.clear()
        if on_progress:
            on_progress(report.valid, report.invalid)

    def take(row: PromptRow | BadRow) -> None:
        line_no = row.line_no
        if isinstance(row, BadRow):
            invalid.append(row)
        else:
            cid = row.custom_id if row.custom_id is not None else f"line-{line_no}"
            custom_ids[line_no] = cid
            messages, params = row.messages, row.params
            add(
                (
                    line_no,
                    report.seq // chunk_size,
                    cid,
                    row.prompt,
                    dumps(messages, ensure_ascii=False) if messages is not None else None,
                    dumps(params, ensure_ascii=False) if params is not None else None,
                    row.max_tokens,
                )
            )
            report.seq += 1
        next_line = getattr(row, "next_line", None)
        report.line = next_line - 1 if next_line else line_no
        report.offset = getattr(row, "end_offset", None)

    try:
        if read_ahead:
            with Prefetcher(rows, batch_size=batch_size, skip_to=skip_to) as parcels:
                for parcel in parcels:
                    for row in parcel.rows:
                        if row.line_no > skip_to:  # else: committed by an earlier run
                            take(row)
                    if parcel.batch_end:
                        report.bytes_read = parcel.position
                        flush()
        else:
            pending = 0  # rows (valid and invalid) in the current batch
            for row in rows:
                if row.line_no <= skip_to:
                    continue  # committed by an earlier run
                take(row)
                pending += 1
                if pending >= batch_size:
                    report.bytes_read = getattr(rows, "position", None)
                    flush()
                    pending = 0
            report.bytes_read = getattr(rows, "position", None)
            flush()
    finally:
        stager.close()
    return report
