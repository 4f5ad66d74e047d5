"""The Celery application, built from ``jobs.settings.Settings``.

Nothing here connects at import: ``make_app`` only builds configuration, and the module
attribute ``app`` (for ``celery -A worker.app`` and Flower) is created on first access.
Postgres is the record, so there is no result backend; Redis only carries chunk ids.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from jobs.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

SCORE_QUEUE = "score"
GENERATE_QUEUE = "generate"

QUEUE_OF: dict[str, str] = {
    "score": SCORE_QUEUE,
    # Routing and finalizing are a few SQL statements; generate workers always exist and
    # score workers may be busy on a GPU for minutes, so these ride the generate queue.
    "generate": GENERATE_QUEUE,
    "route": GENERATE_QUEUE,
    # --adapt: choosing the sample and fitting the per-job router embed the job's prompts
    # (the [score] extra, which a lean generate worker lacks); judging it is provider calls.
    "adapt": SCORE_QUEUE,
    "judge": GENERATE_QUEUE,
    "finalize": GENERATE_QUEUE,
    "poll": GENERATE_QUEUE,  # a provider batch: retrieve, and settle its results once it ended
}


def task_name(task: str) -> str:
    return f"routebatch.{task}"


def time_limits(settings: Settings, task: str) -> tuple[float, float]:
    """(soft, hard) seconds. The soft limit leaves the task a moment to fail cleanly."""
    hard = settings.score_time_limit_s if task == "score" else settings.generate_time_limit_s
    if task in ("route", "finalize", "poll"):
        hard = settings.short_step_limit_s()
    soft = max(hard - 30.0, hard * 0.9)
    return soft, hard


def visibility_timeout(settings: Settings) -> int:
    """Redis redelivers an unacked message after this; it must exceed every hard limit,
    or a long task would run twice while its first run is still alive."""
    longest = max(time_limits(settings, t)[1] for t in QUEUE_OF)
    return int(longest + 300)


def make_app(settings: Settings | None = None) -> Celery:
    """A configured Celery app with the routebatch tasks registered. Creates no connection."""
    from celery import Celery
    from kombu import Queue

    settings = settings or get_settings()
    if not settings.broker_url:
        raise RuntimeError("ROUTEBATCH_BROKER_URL is not set: distributed execution needs a Redis broker")
    app = Celery("routebatch", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(SCORE_QUEUE), Queue(GENERATE_QUEUE)],
        task_default_queue=GENERATE_QUEUE,
        task_routes={task_name(t): {"queue": q} for t, q in QUEUE_OF.items()},
        # At-least-once: ack after the task, requeue if the pool child dies, take one at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": visibility_timeout(settings),
            "socket_keepalive": True,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        },
        # Outlive a Redis restart: keep reconnecting, and let running tasks finish (their
        # effects are in Postgres; a lost ack only means a harmless redelivery).
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_channel_error_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Task events for Flower and `celery events` (not 'sent' events: they double the
        # cost of enqueueing a large job).
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
    )
    from worker.tasks import register_tasks

    register_tasks(app, settings)
    return app


_lock = threading.Lock()
_apps: dict[str, Celery] = {}


def get_app(settings: Settings | None = None) -> Celery:
    """One app per broker URL per process."""
    settings = settings or get_settings()
    key = settings.broker_url or ""
    with _lock:
        if key not in _apps:
            _apps[key] = make_app(settings)
        return _apps[key]


def __getattr__(name: str):
    # ``celery -A worker.app`` / Flower look up ``app``: build it on first access only.
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(name)
