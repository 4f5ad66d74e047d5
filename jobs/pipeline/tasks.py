"""The small queue interface jobs use to schedule their own next steps.

``jobs`` never imports Celery or ``worker``: the embedded mode uses ``InlineQueue`` (the
same task functions, run one after another in this process); ``worker/`` provides a
Celery-backed queue with the same ``enqueue`` method, found through the
``routebatch.queues`` entry point when a broker is configured.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.settings import Settings

QUEUE_ENTRY_POINTS = "routebatch.queues"


class TaskQueue(Protocol):
    def enqueue(self, task: str, job_id: str, chunk: int | None = None, delay_s: float = 0.0) -> None: ...


class InlineQueue:
    """The steps queued by (task, job_id, chunk), run in the calling process by ``drain``.

    FIFO, except that every other step runs before the next ``score``. Submit queues
    one score per chunk up front, so with a single FIFO a chunk routed as soon as it is
    scored (a streaming rule, ``jobs.pipeline.route``) would wait behind every other
    chunk's scoring; this way it is generated before the next chunk is scored, as a
    distributed job's generate workers would. Without a streaming rule nothing but score
    steps is queued until all are done, so the order is the same as before.
    """

    def __init__(self, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self._pending: deque[tuple[str, str, int | None]] = deque()
        self._front = 0  # how many steps other than score lead the deque
        # (due, seq, step): steps asked for later (a provider batch's next poll)
        self._delayed: list[tuple[float, int, tuple[str, str, int | None]]] = []
        self._seq = itertools.count()
        self._sleep = sleep
        self._clock = clock

    def enqueue(self, task: str, job_id: str, chunk: int | None = None, delay_s: float = 0.0) -> None:
        if delay_s > 0:
            heapq.heappush(self._delayed, (self._clock() + delay_s, next(self._seq), (task, job_id, chunk)))
            return
        if task == "score":
            self._pending.append((task, job_id, chunk))
            return
        at = min(self._front, len(self._pending))
        while at and self._pending[at - 1][0] == "score":  # a count gone stale (a caller popped directly)
            at -= 1
        self._pending.insert(at, (task, job_id, chunk))
        self._front = at + 1

    def __len__(self) -> int:
        return len(self._pending) + len(self._delayed)

    def _release_due(self) -> None:
        """Delayed steps whose time has come join the queue; with nothing else to do, wait
        for the earliest (an embedded job waiting on a provider batch sleeps here)."""
        if self._delayed and not self._pending:
            wait = self._delayed[0][0] - self._clock()
            if wait > 0:
                self._sleep(wait)
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            self.enqueue(*heapq.heappop(self._delayed)[2])

    def pop(self) -> tuple[str, str, int | None]:
        """The next step to run (IndexError when none is queued)."""
        self._release_due()
        step = self._pending.popleft()
        if step[0] != "score" and self._front:
            self._front -= 1
        return step

    def drain(self, run_task: Callable[[str, str, int | None], None], after_each: Callable[[], None] | None = None) -> None:
        while self._pending or self._delayed:
            task, job_id, chunk = self.pop()
            run_task(task, job_id, chunk)
            if after_each:
                after_each()


def queue_for(settings: Settings) -> TaskQueue:
    """The broker's queue when ``ROUTEBATCH_BROKER_URL`` is set, else the in-process queue."""
    if not settings.broker_url:
        return InlineQueue()
    found = entry_points(group=QUEUE_ENTRY_POINTS, name="celery")
    if not found:
        raise ConfigError("a broker is configured but the worker package is not installed (pip install routebatch)")
    factory = next(iter(found)).load()
    queue: TaskQueue = factory(settings)
    return queue
