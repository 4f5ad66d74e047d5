"""Celery tasks: thin glue that calls ``jobs.pipeline.runner.run_task`` with this process's Runtime.

Every task is idempotent (``jobs.pipeline`` guards each state change in SQL), so the
broker may deliver twice. Connection errors to Postgres or Redis are retried with backoff;
if the retries run out, the reaper finds the stalled job and enqueues it again.

Any other error is ``run_task``'s to judge (``jobs.pipeline.runner``): the chunk's claimed
but unsent items are put back with their holds released, and the same error a second time
for the same chunk fails that chunk's items instead of raising again, so a redelivered
message cannot loop forever. A job held by a live embedded runner (its lease) is skipped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from jobs.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)


def retryable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "a server was briefly away", not "this chunk is bad"."""
    import kombu.exceptions
    import redis.exceptions

    from jobs.ledger.transient import transient_db_errors

    return (
        *transient_db_errors(),
        kombu.exceptions.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionError,
        TimeoutError,
    )


def register_tasks(app: Celery, settings: Settings) -> None:
    from worker.app import QUEUE_OF, task_name, time_limits

    for task in QUEUE_OF:
        soft, hard = time_limits(settings, task)
        app.task(
            _make_task(task),
            name=task_name(task),
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            autoretry_for=retryable_errors(),
            retry_backoff=1,
            retry_backoff_max=30,
            retry_jitter=True,
            max_retries=40,
            soft_time_limit=soft,
            time_limit=hard,
            ignore_result=True,
        )


def _make_task(task: str):
    def run(self, job_id: str, chunk: int | None = None) -> None:
        from jobs.pipeline.runner import run_task
        from worker.process import process_queue, process_runtime

        run_task(process_runtime(), process_queue(self.app), task, job_id, chunk)

    run.__name__ = run.__qualname__ = f"{task}_task"
    run.__doc__ = f"Run the pipeline's {task!r} step for (job_id, chunk)."
    return run
