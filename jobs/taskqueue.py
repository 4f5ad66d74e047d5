"""Pick the queue for this process: Celery when a broker is configured, else inline."""

from __future__ import annotations

from jobs.queue import InlineQueue, TaskQueue
from jobs.settings import Settings


def queue_for(settings: Settings) -> TaskQueue:
    if settings.broker_url:
        try:
            from worker.queue import CeleryQueue
        except ImportError as exc:  # the distributed issue provides it
            raise RuntimeError("a broker is configured but the Celery queue is not available") from exc
        return CeleryQueue(settings)
    return InlineQueue()
