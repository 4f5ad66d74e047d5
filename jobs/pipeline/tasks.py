"""The small queue interface jobs use to schedule their own next steps.

``jobs`` never imports Celery or ``worker``: the embedded mode uses ``InlineQueue`` (the
same task functions, run one after another in this process); ``worker/`` provides a
Celery-backed queue with the same ``enqueue`` method, found through the
``routebatch.queues`` entry point when a broker is configured.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.settings import Settings

QUEUE_ENTRY_POINTS = "routebatch.queues"


class TaskQueue(Protocol):
    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None: ...


class InlineQueue:
    """FIFO of (task, job_id, chunk) run in the calling process by ``drain``."""

    def __init__(self) -> None:
        self._pending: deque[tuple[str, str, int | None]] = deque()

    def enqueue(self, task: str, job_id: str, chunk: int | None = None) -> None:
        self._pending.append((task, job_id, chunk))

    def __len__(self) -> int:
        return len(self._pending)

    def drain(self, run_task: Callable[[str, str, int | None], None], after_each: Callable[[], None] | None = None) -> None:
        while self._pending:
            task, job_id, chunk = self._pending.popleft()
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
