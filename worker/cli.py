"""``routebatch worker``: registered on the CLI through the ``routebatch.cli`` entry point.

The command lives here, not in ``jobs/cli``, because it starts Celery: ``jobs`` never
imports ``worker`` (pyproject.toml names this module as a CLI plugin).
"""

from __future__ import annotations

from typing import Optional

import typer

from jobs.cli.output import emit, fail


def register(app: typer.Typer) -> None:
    """Add the worker command to the ``routebatch`` app."""
    app.command()(worker)


def worker(
    queue: str = typer.Option(
        ..., "--queue", "-Q", help="score (router models; solo pool, one process per GPU) | generate (provider calls)."
    ),
    concurrency: Optional[int] = typer.Option(
        None, "--concurrency", "-c", help="generate: pool processes (default min(4, CPUs))."
    ),
    gpus: Optional[str] = typer.Option(
        None, "--gpus", help="score: one process per GPU, e.g. 0,1 or all (default: one process)."
    ),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
    hostname: Optional[str] = typer.Option(None, "--hostname", "-n", help="Celery node name (default queue-PID@host)."),
    reaper: bool = typer.Option(
        True, "--reaper/--no-reaper", help="Run the periodic reaper in this worker (one runs at a time)."
    ),
    imports: list[str] = typer.Option(
        [], "--import", "-I", help="Modules to import first, e.g. one that registers a custom router."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON line describing the worker(s) before starting; errors as JSON."
    ),
    metrics_port: Optional[int] = typer.Option(
        None, "--metrics-port", help="Serve Prometheus metrics (from the ledger and the queues) on this port."
    ),
) -> None:
    """Start a Celery worker for one queue (needs ROUTEBATCH_BROKER_URL and ROUTEBATCH_DATABASE_URL)."""
    import os

    from worker.launch import QUEUES, gpu_list, preflight, run_per_gpu, run_worker

    if queue not in QUEUES:
        fail(f"--queue must be one of {', '.join(QUEUES)}, not {queue!r}", as_json)
    from jobs.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        fail("ROUTEBATCH_BROKER_URL is not set (e.g. redis://localhost:6379/0): workers need a broker", as_json)
    if queue == "score" and concurrency and concurrency > 1:
        fail(
            "score workers run one process per GPU: use --gpus 0,1,... (or start more workers) instead of --concurrency", as_json
        )
    preflight(settings)  # a bad database or broker URL: one line and exit 1, before Celery says "ready"
    devices = gpu_list(gpus) if queue == "score" else []
    if as_json:
        emit(
            {
                "queue": queue,
                "pool": "solo" if queue == "score" else "prefork",
                "concurrency": concurrency,
                "gpus": devices,
                "reaper": reaper,
                "pid": os.getpid(),
            },
            True,
        )
    if len(devices) > 1:
        tail = ["--loglevel", loglevel] + ([] if reaper else ["--no-reaper"])
        for module in imports:
            tail += ["--import", module]
        raise typer.Exit(run_per_gpu(devices, tail))
    if len(devices) == 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]
    from worker.process import warm_imports

    warm_imports()  # before the metrics thread and the first task: nothing lazy left to race on
    if metrics_port is not None:
        from jobs.metrics import serve_metrics
        from worker.queue import CeleryQueue

        serve_metrics(metrics_port, settings.database_url, CeleryQueue(settings).backlog)
    run_worker(settings, queue, concurrency=concurrency, loglevel=loglevel, hostname=hostname, reaper=reaper, imports=imports)
