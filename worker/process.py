"""Per-process state of a worker: one Runtime (config, routers, providers) and fork hygiene.

The Runtime is created lazily by the first task in the process that runs tasks (the pool
child under prefork, the worker itself under solo), so a router model is loaded after any
fork, in the process that uses it, and never touches CUDA in a parent that will fork.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from jobs.runtime import Runtime

if TYPE_CHECKING:
    from celery import Celery

    from worker.queue import CeleryQueue

log = logging.getLogger(__name__)

_lock = threading.Lock()
_runtime: Runtime | None = None
_queues: dict[int, CeleryQueue] = {}


def process_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime.from_settings()
        return _runtime


_reaper_runtime: Runtime | None = None


def reaper_runtime() -> Runtime:
    """The reaper's own Runtime in the worker's main process: config and DB only.

    Kept apart from ``process_runtime`` so that the parent of a prefork pool never loads a
    router model or starts a provider (its children would inherit them).
    """
    global _reaper_runtime
    with _lock:
        if _reaper_runtime is None:
            _reaper_runtime = Runtime.from_settings()
        return _reaper_runtime


def warm_imports() -> None:
    """Import the task code and configure the ORM mappers before any thread starts.

    The metrics server's thread queries the ledger while the first task imports the
    pipeline; both then configure SQLAlchemy's mappers lazily, under its configure mutex
    and the import machinery's locks, and a generate worker was seen stuck there until its
    soft time limit. Doing both once, up front, leaves nothing lazy to race on."""
    from sqlalchemy.orm import configure_mappers

    from jobs.pipeline.runner import run_task  # every step's code

    configure_mappers()
    assert callable(run_task)


def preload_default_router() -> threading.Thread:
    """Load the config's default router in this process, in the background, so a score
    worker's first task does not pay for it (about 1.7 s of a job's first call on a CPU:
    weights, the static embedder, the tokenizer). A task that arrives meanwhile waits on the
    runtime's lock for the same load; a router that cannot load is logged and left to the
    first task, which reports it on the job."""

    def load() -> None:
        try:
            rt = process_runtime()
            rt.router(rt.config.defaults.router)
            log.info("default router %r loaded", rt.config.defaults.router)
        except Exception:
            log.warning("could not preload the default router; the first score task loads it", exc_info=True)

    thread = threading.Thread(target=load, name="rb-preload-router", daemon=True)
    thread.start()
    return thread


def process_queue(app: Celery) -> CeleryQueue:
    """The queue tasks use to schedule their next steps, on the app that runs them."""
    from worker.queue import CeleryQueue

    with _lock:
        q = _queues.get(id(app))
        if q is None:
            q = _queues[id(app)] = CeleryQueue(app=app)
        return q


def forget_inherited_connections() -> None:
    """In a fresh pool child: drop the parent's pooled DB connections without closing them.

    Closing would send a terminate message on a socket the parent still uses; SQLAlchemy's
    advice for forked processes is ``dispose(close=False)``.
    """
    global _runtime, _reaper_runtime
    from jobs.ledger.session import dispose_all

    dispose_all(close=False)
    _runtime = None
    _queues.clear()
    _reaper_runtime = None


def close_runtime() -> None:
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None


def connect_signals() -> None:
    """Hook the process lifecycle (idempotent: Celery signals dedupe by dispatch_uid)."""
    from celery import signals

    signals.worker_process_init.connect(lambda **_: forget_inherited_connections(), weak=False, dispatch_uid="rb-fork")
    signals.worker_process_shutdown.connect(lambda **_: close_runtime(), weak=False, dispatch_uid="rb-child-stop")
    signals.worker_shutdown.connect(lambda **_: close_runtime(), weak=False, dispatch_uid="rb-stop")
