"""The small queue interface jobs use to schedule their own next steps.

``jobs`` never imports Celery: the embedded mode uses ``InlineQueue`` (the same task
functions, run one after another in this process); ``worker/`` provides a Celery-backed
queue with the same ``enqueue`` method.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol


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
