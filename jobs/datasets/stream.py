"""Opening a dataset input once: files, ``-`` (stdin), pipes, FIFOs, gzip and zstd.

The input is opened a single time and read front to back; nothing probes it with a
separate read (a pipe's data read by a probe is gone). Lines are read with a bound, so a
50 MB line costs at most ``max_line_bytes`` of memory, and byte offsets are counted in
the decoded stream, so ingest can record how far it got and continue there on a seekable
input.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import sys
import zlib
from pathlib import Path
from typing import IO, Any

from jobs.errors import DatasetError

STDIN = "-"
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_SKIP_CHUNK = 1 << 20


def is_stdin(path: str | os.PathLike[str]) -> bool:
    return str(path) == STDIN


def is_seekable(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` can be read again from any point: a regular file (compressed or
    not). False for ``-``, pipes, process substitution (``/dev/fd/N``), FIFOs and devices:
    what was read from those is gone, so an interrupted ingest cannot continue from them."""
    if is_stdin(path):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def compression_from_name(path: str | os.PathLike[str]) -> str | None:
    suffix = Path(path).suffix.lower()
    return COMPRESSION_SUFFIXES.get(suffix)


def describe(path: str | os.PathLike[str]) -> str:
    return "stdin" if is_stdin(path) else str(path)


class InputStream:
    """One opened input: bounded lines with byte offsets of the decoded stream.

    ``seekable``: the input can be re-read (a regular file). ``size``: its size on disk,
    when known. ``position``: how far into the file on disk reading has got (compressed
    bytes for a compressed file), for progress against ``size``. ``offset``: bytes of the
    decoded stream consumed so far.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_line_bytes: int) -> None:
        self.path = path
        self.name = describe(path)
        self.max_line_bytes = max_line_bytes
        self._owns_raw = not is_stdin(path)
        self._raw = self._open_raw(path)
        try:
            st = os.fstat(self._raw.fileno())
            regular = stat.S_ISREG(st.st_mode)
        except (OSError, ValueError, io.UnsupportedOperation):
            st, regular = None, False
        self.seekable = regular
        self.size: int | None = st.st_size if st is not None and regular else None
        self.compression = compression_from_name(path) or self._sniff()
        self._fh: Any = self._decoder()
        self.offset = 0
        self._final_position: int | None = None

    # -- opening ---------------------------------------------------------------------------

    def _open_raw(self, path: str | os.PathLike[str]) -> io.BufferedReader:
        if is_stdin(path):
            buffer = getattr(sys.stdin, "buffer", None)
            if buffer is None:
                raise DatasetError("stdin: no input stream to read from")
            if not isinstance(buffer, io.BufferedReader):
                buffer = io.BufferedReader(buffer)
            return buffer
        p = Path(path)
        if p.is_dir():
            raise DatasetError(f"{p}: is a directory, not a dataset file")
        try:
            return p.open("rb")  # a FIFO blocks here until a writer opens it: that is the point
        except FileNotFoundError:
            raise DatasetError(f"{p}: no such file") from None
        except OSError as exc:
            raise DatasetError(f"{p}: cannot read: {exc.strerror or exc}") from None

    def _sniff(self) -> str | None:
        try:
            head = self._raw.peek(4)[:4]  # peek: nothing is consumed, even from a pipe
        except (OSError, ValueError):
            return None
        for magic, kind in _MAGIC.items():
            if head.startswith(magic):
                return kind
        return None

    def _decoder(self) -> IO[bytes]:
        if self.compression == "gzip":
            return gzip.GzipFile(fileobj=self._raw, mode="rb")  # type: ignore[return-value]
        if self.compression == "zstd":
            try:
                import zstandard
            except ImportError:
                raise DatasetError(f"{self.name}: reading zstd needs the zstandard package (pip install zstandard)") from None
            reader = zstandard.ZstdDecompressor().stream_reader(self._raw, read_across_frames=True, closefd=False)
            return io.BufferedReader(reader)
        return self._raw

    def skip_to(self, start_offset: int) -> None:
        """Continue reading at ``start_offset`` of the decoded stream (0: stay put)."""
        if start_offset == self.offset:
            return
        if start_offset < self.offset:
            raise DatasetError(f"{self.name}: cannot go back to byte {start_offset}")
        if start_offset < 0:
            raise DatasetError(f"{self.name}: start_offset must be >= 0, got {start_offset}")
        if not self.seekable:
            raise DatasetError(
                f"{self.name}: cannot continue from byte {start_offset}: the input is a pipe or stdin and cannot be re-read"
            )
        if self.compression is None:
            self._raw.seek(start_offset)
            self.offset = start_offset
            return
        while self.offset < start_offset:
            chunk = self._read(min(_SKIP_CHUNK, start_offset - self.offset))
            if not chunk:
                raise DatasetError(f"{self.name}: cannot continue from byte {start_offset}: the input is shorter")
            self.offset += len(chunk)

    # -- reading ---------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        try:
            return self._fh.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._corrupt(exc) from None
        except Exception as exc:  # zstandard.ZstdError and friends
            if type(exc).__module__.startswith("zstandard") or "zstd" in type(exc).__name__.lower():
                raise self._corrupt(exc) from None
            raise

    def _readline(self, n: int) -> bytes:
        try:
            return self._fh.readline(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._corrupt(exc) from None
        except Exception as exc:
            if type(exc).__module__.startswith("zstandard") or "zstd" in type(exc).__name__.lower():
                raise self._corrupt(exc) from None
            raise

    def _corrupt(self, exc: BaseException) -> DatasetError:
        what = f"corrupt {self.compression} data" if self.compression else "read error"
        return DatasetError(f"{self.name}: {what} after byte {self.offset}: {exc}")

    def readline(self) -> tuple[bytes, bool] | None:
        """The next line (with its newline) and whether it was cut: a line longer than
        ``max_line_bytes`` comes back as its first bytes with ``True``, the rest skipped.
        None at the end of the input."""
        line = self._readline(self.max_line_bytes + 1)
        if not line:
            return None
        self.offset += len(line)
        if len(line) <= self.max_line_bytes or line.endswith(b"\n"):
            return line, False
        while True:  # skip the rest of the over-long line without holding it
            rest = self._readline(_SKIP_CHUNK)
            self.offset += len(rest)
            if not rest or rest.endswith(b"\n"):
                return line, True

    def read_all_into(self, out: IO[bytes]) -> None:
        """Copy the rest of the decoded stream into ``out`` (spooling a Parquet pipe)."""
        while chunk := self._read(_SKIP_CHUNK):
            self.offset += len(chunk)
            out.write(chunk)

    @property
    def position(self) -> int:
        if self._final_position is not None:
            return self._final_position
        if self.compression is not None and self.seekable:
            try:
                return self._raw.tell()
            except (OSError, ValueError):
                pass
        return self.offset

    def close(self) -> None:
        if self._final_position is not None:
            return
        self._final_position = self.position
        try:
            if self._fh is not self._raw:
                self._fh.close()
        finally:
            if self._owns_raw:
                self._raw.close()
