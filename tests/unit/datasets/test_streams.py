"""Inputs read once: stdin, pipes, FIFOs, gzip and zstd, a BOM; offsets to continue from."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.datasets import BadRow, DatasetError, PromptRow, detect_format, is_seekable, read_rows

ROWS = 600  # about 40 KB: more than one 8 KiB pipe buffer


def _jsonl_bytes(n: int = ROWS) -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"c{i}", "prompt": f"prompt number {i} " + "w" * (i % 50)}).encode() + b"\n" for i in range(n)
    )


def _ids(rows) -> list[str]:
    return [r.custom_id for r in rows if isinstance(r, PromptRow)]


class _Writer(threading.Thread):
    """Writes ``data`` to the path (a FIFO) or fd, then closes it."""

    def __init__(self, target: str | int, data: bytes) -> None:
        super().__init__(daemon=True)
        self.target, self.data = target, data

    def run(self) -> None:
        fd = os.open(self.target, os.O_WRONLY) if isinstance(self.target, str) else self.target
        with os.fdopen(fd, "wb") as fh:
            try:
                fh.write(self.data)
            except BrokenPipeError:
                pass


def _read_in_thread(path: str, fmt: str, timeout: float = 10.0) -> list:
    out: list = []
    errors: list = []

    def target() -> None:
        try:
            out.extend(read_rows(path, fmt))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        # unblock a reader stuck opening the FIFO again, so the test process can end
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        pytest.fail(f"reading {path} did not finish in {timeout} s")
    if errors:
        raise errors[0]
    return out


def test_a_pipe_is_read_whole(tmp_path: Path) -> None:
    """Process substitution, ``<(cat file)``, is a pipe at /dev/fd/N: nothing may be lost to a probe."""
    r, w = os.pipe()
    writer = _Writer(w, _jsonl_bytes())
    writer.start()
    try:
        rows = _read_in_thread(f"/dev/fd/{r}", "jsonl")
    finally:
        os.close(r)
    writer.join(5)
    assert _ids(rows) == [f"c{i}" for i in range(ROWS)]
    assert [r.line_no for r in rows] == list(range(1, ROWS + 1))


def test_a_named_fifo_is_read_whole(tmp_path: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = _Writer(str(fifo), _jsonl_bytes())
    writer.start()
    rows = _read_in_thread(str(fifo), "jsonl")
    writer.join(5)
    assert len(_ids(rows)) == ROWS
    assert not is_seekable(fifo)


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(_jsonl_bytes(50)))))  # type: ignore[arg-type]
    with read_rows("-", "jsonl") as rows:
        assert not rows.seekable
        got = list(rows)
    assert len(_ids(got)) == 50
    assert not sys.stdin.buffer.closed, "stdin belongs to the process, not the reader"


def test_stdin_needs_a_format() -> None:
    with pytest.raises(DatasetError, match="stdin: cannot tell the format; pass --format"):
        read_rows("-")


def test_gzipped_stdin_is_recognised_by_its_magic(monkeypatch: pytest.MonkeyPatch) -> None:
    data = gzip.compress(_jsonl_bytes(20))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))  # type: ignore[arg-type]
    rows = read_rows("-", "jsonl")
    assert rows.compression == "gzip"
    assert len(_ids(rows)) == 20


def test_a_parquet_pipe_is_spooled(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": [f"p{i}" for i in range(100)]}), src)
    r, w = os.pipe()
    writer = _Writer(w, src.read_bytes())
    writer.start()
    try:
        rows = _read_in_thread(f"/dev/fd/{r}", "parquet")
    finally:
        os.close(r)
    assert [row.prompt for row in rows] == [f"p{i}" for i in range(100)]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst", ".csv.gz", ".csv.zst"])
def test_compressed_files(tmp_path: Path, suffix: str) -> None:
    if suffix.startswith(".csv"):
        raw = b"custom_id,prompt\n" + b"".join(f'c{i},"line {i}, with a comma"\n'.encode() for i in range(300))
    else:
        raw = _jsonl_bytes(300)
    if suffix.endswith(".gz"):
        data = gzip.compress(raw)
    else:
        data = pytest.importorskip("zstandard").ZstdCompressor().compress(raw)
    path = tmp_path / f"in{suffix}"
    path.write_bytes(data)
    assert detect_format(path) == suffix.split(".")[1]
    rows = read_rows(path)
    assert rows.seekable and rows.size == len(data)
    assert _ids(rows) == [f"c{i}" for i in range(300)]
    assert rows.position == len(data)


def test_corrupt_compressed_data_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl_bytes(2000))[:5000])  # cut short
    with pytest.raises(DatasetError, match="corrupt gzip data"):
        list(read_rows(path))


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + _jsonl_bytes(3))
    assert _ids(read_rows(jsonl)) == ["c0", "c1", "c2"]
    csv_path = tmp_path / "in.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfprompt,custom_id\nhello,a\nworld,b\n")
    rows = list(read_rows(csv_path))
    assert [(r.line_no, r.custom_id, r.prompt) for r in rows] == [(2, "a", "hello"), (3, "b", "world")]


def test_is_seekable(tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_bytes(_jsonl_bytes(1))
    assert is_seekable(f) and read_rows(f).seekable
    assert not is_seekable("-")
    assert not is_seekable(tmp_path / "missing.jsonl")
    r, w = os.pipe()
    try:
        assert not is_seekable(f"/dev/fd/{r}")
    finally:
        os.close(r)
        os.close(w)


def test_a_pipe_cannot_be_continued(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(DatasetError, match="cannot be re-read"):
            read_rows(f"/dev/fd/{r}", "jsonl", start_offset=10, start_line=2)
    finally:
        os.close(r)


def _continue_everywhere(path: Path, fmt: str | None = None) -> None:
    rows = list(read_rows(path, fmt))
    assert rows
    for k in range(len(rows)):
        r = rows[k]
        rest = list(read_rows(path, fmt, start_offset=r.end_offset or 0, start_line=r.next_line))
        assert [(x.line_no, type(x), getattr(x, "custom_id", None)) for x in rest] == [
            (x.line_no, type(x), getattr(x, "custom_id", None)) for x in rows[k + 1 :]
        ], f"continuing after row {k}"


def test_continue_from_any_row_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"prompt": "a", "custom_id": "1"}\n\n{bad\n   \n{"prompt": "b", "custom_id": "2"}\r\n{"prompt": "c"}'
    )
    _continue_everywhere(path)
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    _continue_everywhere(gz)


def test_continue_from_any_row_csv(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b'custom_id,prompt\n1,"two\nlines"\n\n2,plain\n3,"bad"x,\n4,"three\n\nlines"\n5,end')
    rows = list(read_rows(path))
    assert [(type(r).__name__, r.line_no) for r in rows] == [
        ("PromptRow", 2),
        ("PromptRow", 5),
        ("BadRow", 6),
        ("PromptRow", 7),
        ("PromptRow", 10),
    ]
    _continue_everywhere(path)


def test_continue_from_any_row_parquet(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["a", "", "c", "d", "e"], "custom_id": list("12345")}), path, row_group_size=2)
    rows = list(read_rows(path))
    assert all(r.end_offset is None for r in rows)
    _continue_everywhere(path)


def test_bad_rows_from_pipes_keep_line_numbers(tmp_path: Path) -> None:
    r, w = os.pipe()
    writer = _Writer(w, _jsonl_bytes(100) + b"{broken\n" + _jsonl_bytes(1))
    writer.start()
    try:
        rows = _read_in_thread(f"/dev/fd/{r}", "jsonl")
    finally:
        os.close(r)
    assert isinstance(rows[100], BadRow) and rows[100].line_no == 101
    assert rows[101].line_no == 102
