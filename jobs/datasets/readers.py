"""Streaming dataset readers: JSONL (plain, OpenAI Batch or Anthropic Message Batches), CSV, Parquet.

``read_rows`` yields one ``PromptRow`` or ``BadRow`` per input row, in input order, holding
only the current row (a million-line file is read in constant memory; a line longer than
``RowLimits.max_line_bytes`` is skipped without being held). A bad row never stops the
file: it is reported with its line number, field and reason, and reading goes on. Only a
problem with the whole input raises ``DatasetError``: it cannot be opened, has no prompt
column, or its compressed data is corrupt.

Inputs: a path, ``-`` for stdin, a pipe or process substitution (``<(...)``) or a named
FIFO, each opened once and read once. ``.gz`` and ``.zst`` inputs (by name, or by their
magic bytes on a pipe) are decompressed as they are read; the format comes from the suffix
before the compression suffix (``data.jsonl.gz`` is JSONL) or from ``fmt``. A UTF-8 BOM
at the start is ignored. A Parquet input that is not a plain file is spooled to a
temporary file first (Parquet needs random access).

Resuming (for ingest): every row carries ``end_offset``, the byte offset just after its
line or record in the decoded stream (the file offset for an uncompressed file; None for
Parquet), and ``next_line``, the line number at that offset (the next row number for
Parquet). ``read_rows(path, ..., start_offset=row.end_offset, start_line=row.next_line)``
continues right after ``row``: the CSV header is still read from the top, Parquet skips
``start_line - 1`` rows. Only a seekable input (``is_seekable(path)``, also
``RowStream.seekable``) can be continued; ``start_offset > 0`` on a pipe or stdin raises
``DatasetError``. ``RowStream.size`` and ``RowStream.position`` give the bytes on disk and
how far reading has got, for progress.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from jobs.datasets.rows import BadRow, DatasetError, PromptRow, RowError, RowLimits
from jobs.datasets.stream import COMPRESSION_SUFFIXES, InputStream, describe, is_seekable, is_stdin
from jobs.datasets.validate import (
    TRANSPORT_FIELDS,
    check_custom_id,
    check_max_tokens,
    check_prompt,
    is_transport_field,
    routing_text,
    row_from_object,
    safe_custom_id,
    safe_text,
)

__all__ = ["FORMATS", "Row", "RowLimits", "RowStream", "detect_format", "is_seekable", "read_rows"]

Row = PromptRow | BadRow
FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
RAW_KEEP = 500
MAX_REASON = 1000
BOM = b"\xef\xbb\xbf"
# An invalid row's raw text is kept only if it cannot carry a value meant for a transport field.
_SECRET_HINTS = ("headers", "extra_", "timeout", '"_')
# What one hostile row can raise inside validation (deep nesting, huge numbers, odd types).
_ROW_FAILURES = (RecursionError, ValueError, TypeError, OverflowError, UnicodeError, KeyError, AttributeError)


def detect_format(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise DatasetError(f"unknown format {safe_text(repr(explicit), 60)}; use one of {', '.join(FORMATS)}")
        return explicit
    if is_stdin(path):
        raise DatasetError(f"stdin: cannot tell the format; pass --format {'|'.join(FORMATS)}")
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() not in COMPRESSION_SUFFIXES]
    for suffix in reversed(suffixes):
        if suffix in _EXTENSIONS:
            return _EXTENSIONS[suffix]
    raise DatasetError(f"{safe_text(path, 300)}: cannot tell the format from the file name; pass --format {'|'.join(FORMATS)}")


class RowStream(Iterator[Row]):
    """The rows of one opened input (see the module docstring); also a context manager.

    ``seekable`` is False for stdin, pipes and FIFOs: an interrupted ingest cannot re-read
    them. The input is closed when the rows run out, on ``close()`` or on ``with`` exit.
    """

    def __init__(self, src: InputStream, fmt: str, rows: Iterator[Row]) -> None:
        self._src = src
        self._rows = rows
        self.format = fmt
        self.name = src.name
        self.seekable = src.seekable
        self.compression = src.compression
        self.size = src.size
        self._closed = False

    @property
    def position(self) -> int:
        """Bytes of the input on disk read so far (compressed bytes for a compressed file)."""
        return self._src.position

    def __iter__(self) -> RowStream:
        return self

    def __next__(self) -> Row:
        try:
            return next(self._rows)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self._rows, "close", None)
            if close is not None:
                close()
            self._src.close()

    def __enter__(self) -> RowStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def read_rows(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    prompt_column: str = "prompt",
    *,
    limits: RowLimits | None = None,
    start_offset: int = 0,
    start_line: int = 1,
) -> RowStream:
    """Rows of ``path`` (``-`` for stdin) in input order; raises DatasetError only for
    whole-input problems, and does so here (before a job exists) when the input cannot be
    opened, its format is unknown or it has no prompt column."""
    limits = limits or RowLimits()
    if not is_stdin(path):
        p = Path(path)
        if p.is_dir():
            raise DatasetError(f"{safe_text(p, 300)}: is a directory, not a dataset file")
        if not p.exists():
            raise DatasetError(f"{safe_text(p, 300)}: no such file")
    kind = detect_format(path, fmt)
    if start_line < 1:
        raise DatasetError(f"{describe(path)}: start_line must be >= 1, got {start_line}")
    src = InputStream(path, max_line_bytes=limits.max_line_bytes)
    try:
        if kind == "jsonl":
            src.skip_to(start_offset)
            rows = _jsonl_rows(src, limits, start_line)
        elif kind == "csv":
            rows = _csv_rows(src, prompt_column, limits, start_offset, start_line)
        else:
            rows = _parquet_rows(src, prompt_column, limits, start_line)
    except BaseException:
        src.close()
        raise
    return RowStream(src, kind, rows)


def read_jsonl(path: str | os.PathLike[str], limits: RowLimits | None = None) -> RowStream:
    return read_rows(path, "jsonl", limits=limits)


def read_csv(path: str | os.PathLike[str], prompt_column: str = "prompt", limits: RowLimits | None = None) -> RowStream:
    """CSV with a header; ``prompt_column`` holds the prompt, optional ``custom_id`` and ``max_tokens``."""
    return read_rows(path, "csv", prompt_column, limits=limits)


def read_parquet(path: str | os.PathLike[str], prompt_column: str = "prompt", limits: RowLimits | None = None) -> RowStream:
    return read_rows(path, "parquet", prompt_column, limits=limits)


# -- invalid rows ---------------------------------------------------------------------------


def _raw_excerpt(text: str | None, obj: Any = None) -> str | None:
    """The first characters of a bad line, safe to store; a line that may carry a header
    or another transport value is stored with those values blanked (or not at all)."""
    if text is None:
        return None
    lowered = text[: RAW_KEEP + 32].lower()  # only the stored excerpt matters: a key precedes its value
    if any(hint in lowered for hint in _SECRET_HINTS):
        if not isinstance(obj, dict):
            return None
        try:
            text = json.dumps(_blank_transport(obj), ensure_ascii=False, allow_nan=True)
        except _ROW_FAILURES:
            return None
    return safe_text(text, RAW_KEEP)


def _blank_transport(obj: dict) -> dict:
    out = {
        k: ("[removed]" if isinstance(k, str) and (is_transport_field(k) or k in TRANSPORT_FIELDS) else v) for k, v in obj.items()
    }
    for nested in ("body", "params"):  # an OpenAI Batch body, an Anthropic Message Batches params
        inner = out.get(nested)
        if isinstance(inner, dict):
            out[nested] = {k: ("[removed]" if isinstance(k, str) and is_transport_field(k) else v) for k, v in inner.items()}
    return out


def _bad(
    line_no: int,
    field: str | None,
    reason: str,
    custom_id: Any = None,
    raw: str | None = None,
    end_offset: int | None = None,
    next_line: int | None = None,
) -> BadRow:
    return BadRow(
        line_no,
        safe_text(field, 100) if field is not None else None,
        safe_text(reason, MAX_REASON),
        safe_custom_id(custom_id),
        raw,
        end_offset,
        next_line,
    )


def _validate(make: Callable[[], PromptRow]) -> PromptRow | tuple[str | None, str]:
    """``make()``, or the (field, reason) of why the row is invalid."""
    try:
        return make()
    except RowError as exc:
        return exc.field, exc.reason
    except _ROW_FAILURES as exc:
        return None, f"row could not be validated ({type(exc).__name__}: {safe_text(exc, 200)})"


# -- JSONL ----------------------------------------------------------------------------------


def _jsonl_rows(src: InputStream, limits: RowLimits, start_line: int) -> Iterator[Row]:
    line_no = start_line - 1
    while True:
        at = src.offset
        got = src.readline()
        if got is None:
            return
        raw, cut = got
        line_no += 1
        end, nxt = src.offset, line_no + 1
        if at == 0 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if cut:
            reason = f"line is longer than {limits.max_line_bytes:,} bytes (RowLimits.max_line_bytes)"
            yield _bad(
                line_no, None, reason, raw=_raw_excerpt(raw[:RAW_KEEP].decode("utf-8", "replace")), end_offset=end, next_line=nxt
            )
            continue
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            excerpt = _raw_excerpt(raw[:RAW_KEEP].decode("utf-8", "replace"))
            yield _bad(line_no, None, f"not valid UTF-8 (byte {exc.start})", raw=excerpt, end_offset=end, next_line=nxt)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield _bad(
                line_no,
                None,
                f"malformed JSON: {exc.msg} (column {exc.colno})",
                raw=_raw_excerpt(text),
                end_offset=end,
                next_line=nxt,
            )
            continue
        except RecursionError:
            yield _bad(
                line_no, None, "malformed JSON: nested too deeply to parse", raw=_raw_excerpt(text), end_offset=end, next_line=nxt
            )
            continue
        except ValueError as exc:  # e.g. an integer with more digits than Python converts
            yield _bad(line_no, None, f"malformed JSON: {exc}", raw=_raw_excerpt(text), end_offset=end, next_line=nxt)
            continue
        result = _validate(functools.partial(row_from_object, obj, line_no, limits))
        if isinstance(result, PromptRow):
            result.end_offset, result.next_line = end, nxt
            yield result
        else:
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            yield _bad(line_no, result[0], result[1], cid, _raw_excerpt(text, obj), end, nxt)


# -- CSV ------------------------------------------------------------------------------------


class _RecordTooLong(Exception):
    pass


class _CsvLines:
    """Physical lines for ``csv.reader``, counted, bounded per record and BOM-stripped.

    A class, not a generator: raising ``_RecordTooLong`` out of ``__next__`` must leave it
    usable for the next record."""

    def __init__(self, src: InputStream, max_record_bytes: int) -> None:
        self.src = src
        self.max_record_bytes = max_record_bytes
        self.line_no = 0
        self.record_bytes = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        at = self.src.offset
        got = self.src.readline()
        if got is None:
            raise StopIteration
        raw, cut = got
        self.line_no += 1
        if at == 0 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        self.record_bytes += len(raw)
        if cut or self.record_bytes > self.max_record_bytes:
            raise _RecordTooLong
        return raw.decode("utf-8", "surrogateescape")


def _csv_rows(src: InputStream, prompt_column: str, limits: RowLimits, start_offset: int, start_line: int) -> Iterator[Row]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # records are bounded by _CsvLines instead
    lines = _CsvLines(src, limits.max_line_bytes)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return iter(())
    except _RecordTooLong:
        raise DatasetError(f"{src.name}: line 1: the CSV header is longer than {limits.max_line_bytes:,} bytes") from None
    except csv.Error as exc:
        raise DatasetError(f"{src.name}: line 1: cannot parse the CSV header: {exc}") from None
    if prompt_column not in header:
        names = ", ".join(safe_text(h, 60) for h in header[:50])
        raise DatasetError(
            f"{src.name}: line 1: no column {safe_text(repr(prompt_column), 60)} (columns: {names}); pass --prompt-column"
        )
    if start_offset > src.offset:
        src.skip_to(start_offset)
        lines.line_no = start_line - 1
    cols = _CsvColumns(header, prompt_column)
    return _csv_records(src, lines, reader, cols, limits)


class _CsvColumns:
    def __init__(self, header: list[str], prompt_column: str) -> None:
        self.header = header
        self.prompt_column = prompt_column
        self.p_idx = header.index(prompt_column)
        self.id_idx = header.index("custom_id") if "custom_id" in header else None
        self.mt_idx = header.index("max_tokens") if "max_tokens" in header else None


def _csv_records(src: InputStream, lines: _CsvLines, reader: Any, cols: _CsvColumns, limits: RowLimits) -> Iterator[Row]:
    while True:
        start = lines.line_no + 1
        lines.record_bytes = 0
        try:
            record = next(reader)
        except StopIteration:
            return
        except _RecordTooLong:
            reason = f"record is longer than {limits.max_line_bytes:,} bytes (RowLimits.max_line_bytes)"
            yield _bad(start, None, reason, end_offset=src.offset, next_line=lines.line_no + 1)
            continue
        except csv.Error as exc:
            yield _bad(start, None, f"CSV syntax error: {exc}", end_offset=src.offset, next_line=lines.line_no + 1)
            continue
        if not record:
            continue
        row = _csv_row(record, start, cols, limits)
        row.end_offset, row.next_line = src.offset, lines.line_no + 1
        yield row


def _csv_raw(record: list[str]) -> str | None:
    text = ",".join(record)[:RAW_KEEP].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _raw_excerpt(safe_text(text, RAW_KEEP))


def _csv_int(text: str, field: str) -> int:
    text = text.strip()
    try:
        if len(text) > 30:
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise RowError(field, f"{field} must be an integer, got {safe_text(repr(text), 40)}") from None


def _csv_row(record: list[str], line_no: int, cols: _CsvColumns, limits: RowLimits) -> Row:
    header = cols.header
    if len(record) != len(header):
        return _bad(line_no, None, f"expected {len(header)} fields, got {len(record)}", raw=_csv_raw(record))
    for name, value in zip(header, record, strict=True):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _bad(line_no, name, "not valid UTF-8", raw=_csv_raw(record))

    def make() -> PromptRow:
        custom_id = check_custom_id(record[cols.id_idx] or None) if cols.id_idx is not None else None
        max_tokens = None
        if cols.mt_idx is not None and record[cols.mt_idx].strip():
            max_tokens = check_max_tokens(_csv_int(record[cols.mt_idx], "max_tokens"), cap=limits.max_tokens)
        prompt = check_prompt(record[cols.p_idx], cols.prompt_column, limits)
        return PromptRow(line_no, custom_id, prompt, None, max_tokens)

    result = _validate(make)
    if isinstance(result, PromptRow):
        return result
    cid = record[cols.id_idx] if cols.id_idx is not None else None
    return _bad(line_no, result[0], result[1], cid, _csv_raw(record))


# -- Parquet --------------------------------------------------------------------------------


class _Unreadable:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _column_values(column: Any) -> list[Any]:
    """A batch column as Python values; a value that cannot be converted (say, invalid
    UTF-8 in a string column) becomes ``_Unreadable`` instead of failing the batch."""
    try:
        return list(column.to_pylist())
    except Exception:
        values: list[Any] = []
        for i in range(len(column)):
            try:
                values.append(column[i].as_py())
            except Exception as exc:
                values.append(_Unreadable(exc))
        return values


def _parquet_rows(src: InputStream, prompt_column: str, limits: RowLimits, start_line: int) -> Iterator[Row]:
    import pyarrow.parquet as pq

    spool = None
    source: Any = src.path
    if not (src.seekable and src.compression is None):
        spool = tempfile.NamedTemporaryFile(prefix="routebatch-spool-", suffix=".parquet")
        src.read_all_into(spool)
        spool.flush()
        source = spool.name
    try:
        pf = pq.ParquetFile(source)
        names = pf.schema_arrow.names
    except Exception as exc:
        if spool is not None:
            spool.close()
        raise DatasetError(f"{src.name}: not a readable Parquet file: {safe_text(exc, 300)}") from None
    use_messages = prompt_column not in names and "messages" in names
    if prompt_column not in names and not use_messages:
        if spool is not None:
            spool.close()
        listed = ", ".join(safe_text(n, 60) for n in names[:50])
        raise DatasetError(
            f"{src.name}: no column {safe_text(repr(prompt_column), 60)} (columns: {listed}); pass --prompt-column"
        )
    return _parquet_batches(pf, spool, prompt_column, use_messages, limits, start_line)


def _parquet_batches(
    pf: Any, spool: Any, prompt_column: str, use_messages: bool, limits: RowLimits, start_line: int, batch_size: int = 10_000
) -> Iterator[Row]:
    names = pf.schema_arrow.names
    columns = [c for c in (prompt_column, "messages", "custom_id", "max_tokens") if c in names]
    row_no = 0
    try:
        for rg in range(pf.num_row_groups):
            group_rows = pf.metadata.row_group(rg).num_rows
            if row_no + group_rows < start_line:
                row_no += group_rows
                continue
            done = 0
            try:
                for batch in pf.iter_batches(batch_size=batch_size, row_groups=[rg], columns=columns):
                    data = {name: _column_values(batch.column(name)) for name in batch.schema.names}
                    for i in range(batch.num_rows):
                        row_no += 1
                        done += 1
                        if row_no < start_line:
                            continue
                        yield _parquet_row({k: v[i] for k, v in data.items()}, row_no, prompt_column, use_messages, limits)
            except Exception as exc:
                reason = f"unreadable Parquet data in row group {rg}: {safe_text(exc, 300)}"
                for _ in range(group_rows - done):
                    row_no += 1
                    if row_no >= start_line:
                        yield _bad(row_no, None, reason, next_line=row_no + 1)
    finally:
        if spool is not None:
            spool.close()


def _parquet_row(values: dict[str, Any], row_no: int, prompt_column: str, use_messages: bool, limits: RowLimits) -> Row:
    for name, value in values.items():
        if isinstance(value, _Unreadable):
            return _bad(row_no, name, f"cannot decode the value: {safe_text(value.error, 200)}", next_line=row_no + 1)

    def make() -> PromptRow:
        custom_id = check_custom_id(values["custom_id"]) if "custom_id" in values else None
        max_tokens = check_max_tokens(values["max_tokens"], cap=limits.max_tokens) if "max_tokens" in values else None
        if use_messages:
            messages = values["messages"]
            return PromptRow(row_no, custom_id, routing_text(messages, limits=limits), messages, max_tokens)
        return PromptRow(row_no, custom_id, check_prompt(values[prompt_column], prompt_column, limits), None, max_tokens)

    result = _validate(make)
    if isinstance(result, PromptRow):
        result.next_line = row_no + 1
        return result
    return _bad(row_no, result[0], result[1], values.get("custom_id"), next_line=row_no + 1)
