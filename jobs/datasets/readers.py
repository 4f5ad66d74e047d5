"""Streaming dataset readers: JSONL (plain or OpenAI Batch), CSV, Parquet.

Each reader yields one ``PromptRow`` or ``BadRow`` per input row, in input order, holding
only the current row (a million-line file is read in constant memory). A bad row never
stops the file: it is reported with its line number, field and reason, and reading goes on.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from jobs.datasets.rows import BadRow, DatasetError, PromptRow, RowError
from jobs.datasets.validate import check_custom_id, check_max_tokens, check_prompt, routing_text, row_from_object

Row = PromptRow | BadRow
FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
RAW_KEEP = 500


def detect_format(path: Path, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise DatasetError(f"unknown format {explicit!r}; use one of {', '.join(FORMATS)}")
        return explicit
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz",)]
    for suffix in reversed(suffixes):
        if suffix in _EXTENSIONS:
            return _EXTENSIONS[suffix]
    raise DatasetError(f"{path}: cannot tell the format from the file name; pass --format {'|'.join(FORMATS)}")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, not a dataset file")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_rows(path: Path, fmt: str | None = None, prompt_column: str = "prompt") -> Iterator[Row]:
    """Rows of ``path`` in input order; raises DatasetError only for whole-file problems."""
    path = Path(path)
    _check_readable(path)
    kind = detect_format(path, fmt)
    if kind == "jsonl":
        return read_jsonl(path)
    if kind == "csv":
        return read_csv(path, prompt_column)
    return read_parquet(path, prompt_column)


def read_jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRow(line_no, None, f"not valid UTF-8 (byte {exc.start})", raw=raw[:RAW_KEEP].decode("utf-8", "replace"))
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield BadRow(line_no, None, f"malformed JSON: {exc.msg} (column {exc.colno})", raw=text[:RAW_KEEP])
                continue
            try:
                yield row_from_object(obj, line_no)
            except RowError as exc:
                cid = obj.get("custom_id") if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str) else None
                yield BadRow(line_no, exc.field, exc.reason, cid, raw=text[:RAW_KEEP])


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_csv(path: Path, prompt_column: str = "prompt") -> Iterator[Row]:
    """CSV with a header; ``prompt_column`` holds the prompt, optional ``custom_id`` and ``max_tokens``."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(f"{path}: line 1: cannot parse the CSV header: {exc}") from None
        if prompt_column not in header:
            raise DatasetError(
                f"{path}: line 1: no column {prompt_column!r} (columns: {', '.join(header)}); pass --prompt-column"
            )
        p_idx = header.index(prompt_column)
        id_idx = header.index("custom_id") if "custom_id" in header else None
        mt_idx = header.index("max_tokens") if "max_tokens" in header else None
        next_line = reader.line_num + 1
        while True:
            start = next_line
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                next_line = reader.line_num + 1
                yield BadRow(start, None, f"CSV syntax error: {exc}")
                continue
            next_line = reader.line_num + 1
            if not record:
                continue
            yield _csv_row(record, start, header, p_idx, id_idx, mt_idx, prompt_column)


def _csv_row(record, line_no, header, p_idx, id_idx, mt_idx, prompt_column) -> Row:
    raw = ",".join(record)[:RAW_KEEP].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(record) != len(header):
        return BadRow(line_no, None, f"expected {len(header)} fields, got {len(record)}", raw=raw)
    for name, value in zip(header, record):
        if _has_surrogates(value):
            return BadRow(line_no, name, "not valid UTF-8", raw=raw)
    try:
        custom_id = check_custom_id(record[id_idx] or None) if id_idx is not None else None
        max_tokens = None
        if mt_idx is not None and record[mt_idx].strip():
            try:
                max_tokens = check_max_tokens(int(record[mt_idx]))
            except ValueError:
                raise RowError("max_tokens", f"max_tokens must be an integer, got {record[mt_idx]!r}") from None
        prompt = check_prompt(record[p_idx], prompt_column)
    except RowError as exc:
        return BadRow(line_no, exc.field, exc.reason, raw=raw)
    return PromptRow(line_no, custom_id, prompt, None, max_tokens)


def read_parquet(path: Path, prompt_column: str = "prompt", batch_size: int = 10_000) -> Iterator[Row]:
    """Parquet, read in record batches; "line" numbers are 1-based row numbers."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DatasetError(f"{path}: not a readable Parquet file: {exc}") from None
    names = pf.schema_arrow.names
    use_messages = prompt_column not in names and "messages" in names
    if prompt_column not in names and not use_messages:
        raise DatasetError(f"{path}: no column {prompt_column!r} (columns: {', '.join(names)}); pass --prompt-column")
    columns = [c for c in (prompt_column, "messages", "custom_id", "max_tokens") if c in names]
    row_no = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            row_no += 1
            try:
                custom_id = check_custom_id(data["custom_id"][i]) if "custom_id" in data else None
                max_tokens = check_max_tokens(data["max_tokens"][i]) if "max_tokens" in data else None
                if use_messages:
                    messages = data["messages"][i]
                    yield PromptRow(row_no, custom_id, routing_text(messages), messages, max_tokens)
                else:
                    yield PromptRow(row_no, custom_id, check_prompt(data[prompt_column][i], prompt_column), None, max_tokens)
            except RowError as exc:
                yield BadRow(row_no, exc.field, exc.reason)
