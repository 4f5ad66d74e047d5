"""Reading a dataset's rows on a thread, a little ahead of the writer that stores them.

Parsing and validating a row is Python work; storing it is mostly the database's work,
during which the writer only waits on a socket (without the GIL). Reading on a second
thread lets the next rows be parsed while the database inserts the last ones, so on two
cores the two overlap instead of taking turns.

Memory stays flat: at most ``depth`` parcels of at most ``batch_size`` rows are queued.
What the writer sees is exactly what a plain loop over the rows would give it, in order:
each parcel says whether it ends a batch (the same boundaries as counting ``batch_size``
rows after ``skip_to``) and, if so, the reader's ``position`` right after its last row. An
exception raised by the rows (a corrupt file, a reader bug, Ctrl-C in a test's fake
reader) reaches the writer after the rows before it, as if it had been raised in its loop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_PUT_POLL_S = 0.1
_JOIN_S = 5.0


@dataclass(slots=True)
class Parcel:
    rows: list[Any]
    batch_end: bool  # the writer flushes a batch after these rows
    position: int | None  # ``rows.position`` after the parcel's last row, when batch_end


@dataclass(slots=True)
class _Raised:
    exc: BaseException


class _Stopped(Exception):
    pass


_DONE = object()


class Prefetcher:
    """Iterate ``rows`` on a thread; iterate this for ``Parcel``s (see the module docstring).

    Always ``close()`` it (or use it as a context manager): that stops the thread and waits
    for it, so the caller may close ``rows`` afterwards without racing the reader.
    """

    def __init__(self, rows: Iterable[Any], *, batch_size: int, skip_to: int = 0, parcel: int = 512, depth: int = 8) -> None:
        self._rows = rows
        self._batch_size = batch_size
        self._skip_to = skip_to
        self._parcel = max(1, min(parcel, batch_size))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(2, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routebatch-ingest-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=_PUT_POLL_S)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        rows, skip_to, batch_size, parcel = self._rows, self._skip_to, self._batch_size, self._parcel
        buf: list[Any] = []
        pending = 0
        try:
            try:
                for row in rows:
                    buf.append(row)
                    if row.line_no > skip_to:
                        pending += 1
                        if pending >= batch_size:
                            self._put(Parcel(buf, True, getattr(rows, "position", None)))
                            buf, pending = [], 0
                            continue
                    if len(buf) >= parcel:
                        self._put(Parcel(buf, False, None))
                        buf = []
                self._put(Parcel(buf, True, getattr(rows, "position", None)))
                self._put(_DONE)
            except _Stopped:
                return
            except BaseException as exc:
                self._put(Parcel(buf, False, None))
                self._put(_Raised(exc))
        except _Stopped:
            return

    def __iter__(self) -> Iterator[Parcel]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + _JOIN_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:  # unblock a reader waiting on a full queue
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(_PUT_POLL_S)
        # still alive: a reader blocked on a FIFO that never delivers; it is a daemon thread

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
