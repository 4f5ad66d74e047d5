"""Start a worker for one queue with the pool that queue needs.

* ``score``: the solo pool, one process per GPU. A router model is large and a GPU does
  one batch at a time, so more processes per GPU only add copies of the model; solo also
  means no fork, so CUDA is initialised in the process that uses it. With several GPUs,
  one child process is started per GPU, each seeing only its own through
  ``CUDA_VISIBLE_DEVICES``.
* ``generate``: a prefork pool; each child fans out provider calls with asyncio, so a
  few processes saturate a provider long before the CPUs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from jobs.settings import Settings

QUEUES = ("score", "generate")


def worker_argv(queue: str, concurrency: int | None, loglevel: str, hostname: str | None) -> list[str]:
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; use one of {', '.join(QUEUES)}")
    pool, n = ("solo", 1) if queue == "score" else ("prefork", concurrency or min(4, os.cpu_count() or 1))
    host = hostname or f"{queue}-{os.getpid()}@{socket.gethostname()}"
    return [
        "worker",
        "-Q",
        queue,
        "-P",
        pool,
        "-c",
        str(n),
        "-n",
        host,
        "-l",
        loglevel,
        "-E",
        "--without-gossip",
        "--without-mingle",
    ]


def preflight(settings: Settings, timeout_s: float = 5.0) -> None:
    """Reach the ledger database and the broker once, before Celery starts.

    Without this a worker with a bad URL logs ``ready``, takes messages and fails each one;
    here it is one ``InfrastructureError`` naming what cannot be reached (no password).
    """
    from jobs.errors import InfrastructureError
    from jobs.ledger.session import check_database, safe_url

    check_database(settings.database_url)
    if not settings.broker_url:
        raise InfrastructureError("ROUTEBATCH_BROKER_URL is not set (e.g. redis://localhost:6379/0): workers need a broker")
    from kombu import Connection

    try:
        with Connection(settings.broker_url, connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
    except Exception as exc:  # kombu wraps redis/amqp errors differently per transport
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InfrastructureError(f"cannot reach the broker {safe_url(settings.broker_url)}: {reason}") from None


def run_worker(
    settings: Settings,
    queue: str,
    *,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    hostname: str | None = None,
    reaper: bool = True,
    imports: Sequence[str] = (),
) -> None:
    """Run a Celery worker in this process until it is stopped."""
    import importlib

    from worker.app import make_app
    from worker.process import connect_signals

    for module in imports:
        importlib.import_module(module)  # e.g. a module that registers a custom router
    app = make_app(settings)
    connect_signals()
    if reaper:
        from worker.reaper_step import ReaperStep

        app.steps["worker"].add(ReaperStep)
    if queue == "score":  # a solo pool: this process runs the tasks, so the router it loads is theirs
        from worker.process import preload_default_router

        preload_default_router()
    app.worker_main(worker_argv(queue, concurrency, loglevel, hostname))


def gpu_list(spec: str | None) -> list[str]:
    """``--gpus all`` -> the devices in CUDA_VISIBLE_DEVICES (or found by nvidia-smi)."""
    if not spec:
        return []
    if spec != "all":
        return [g.strip() for g in spec.split(",") if g.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def run_per_gpu(gpus: Sequence[str], argv_tail: Sequence[str]) -> int:
    """One ``routebatch worker --queue score`` child per GPU; stops them all together.

    The parent imports nothing of torch, so it never creates a CUDA context to inherit.
    """
    children = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        cmd = [
            sys.executable,
            "-m",
            "jobs.cli",
            "worker",
            "--queue",
            "score",
            "--hostname",
            f"score-gpu{gpu}@{socket.gethostname()}",
            *argv_tail,
        ]
        children.append(subprocess.Popen(cmd, env=env))

    def forward(signum, _frame) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
