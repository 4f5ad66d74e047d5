"""CeleryQueue: the ``TaskQueue`` that publishes chunk ids to Redis (entry point ``routebatch.queues``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs.settings import Settings

if TYPE_CHECKING:
    from celery import Celery


class CeleryQueue:
    """``enqueue(task, job_id, chunk)`` -> a message on queue ``score`` or ``generate``.

    Messages carry ids only (job id, chunk number): the prompts stay in Postgres, so a
    million-item job is a few thousand small messages.
    """

    def __init__(self, settings: Settings | None = None, app: Celery | None = None) -> None:
        if app is None:
            from worker.app import get_app

            app = get_app(settings)
        self.app = app

    def enqueue(self, task: str, job_id: str, chunk: int | None = None, delay_s: float = 0.0) -> None:
        from worker.app import QUEUE_OF, task_name

        countdown = delay_s if delay_s > 0 else None  # a provider batch's next poll
        self.app.send_task(task_name(task), args=(job_id, chunk), queue=QUEUE_OF[task], countdown=countdown)

    def backlog(self, task: str) -> int:
        """Messages waiting in the task's queue (not counting those a worker holds)."""
        from kombu.exceptions import ChannelError

        from worker.app import QUEUE_OF

        with self.app.connection_for_read() as conn:
            try:
                return conn.default_channel.queue_declare(QUEUE_OF[task], passive=True).message_count
            except ChannelError:  # never declared (e.g. Redis restarted empty): nothing waits
                return 0
