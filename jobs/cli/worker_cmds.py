"""Distributed commands: ``routebatch worker`` and ``routebatch reaper``."""

from __future__ import annotations

import time
from typing import Optional

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit, fail


def _settings():
    from jobs.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        fail("ROUTEBATCH_BROKER_URL is not set (e.g. redis://localhost:6379/0): workers need a broker")
    return settings


@app.command()
def worker(
    queue: str = typer.Option(..., "--queue", "-Q", help="score (router models; solo pool, one process per GPU) | generate (provider calls)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", help="generate: pool processes (default min(4, CPUs))."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="score: one process per GPU, e.g. 0,1 or all (default: one process)."),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
    hostname: Optional[str] = typer.Option(None, "--hostname", "-n", help="Celery node name (default queue-PID@host)."),
    reaper: bool = typer.Option(True, "--reaper/--no-reaper", help="Run the periodic reaper in this worker (one runs at a time)."),
    imports: list[str] = typer.Option([], "--import", "-I", help="Modules to import first, e.g. one that registers a custom router."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line describing the worker(s) before starting; errors as JSON."),
) -> None:
    """Start a Celery worker for one queue (needs ROUTEBATCH_BROKER_URL and ROUTEBATCH_DATABASE_URL)."""
    import os

    from worker.launch import QUEUES, gpu_list, run_per_gpu, run_worker

    if queue not in QUEUES:
        fail(f"--queue must be one of {', '.join(QUEUES)}, not {queue!r}", as_json)
    from jobs.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        fail("ROUTEBATCH_BROKER_URL is not set (e.g. redis://localhost:6379/0): workers need a broker", as_json)
    if queue == "score" and concurrency and concurrency > 1:
        fail("score workers run one process per GPU: use --gpus 0,1,... (or start more workers) instead of --concurrency", as_json)
    devices = gpu_list(gpus) if queue == "score" else []
    if as_json:
        emit(
            {"queue": queue, "pool": "solo" if queue == "score" else "prefork", "concurrency": concurrency, "gpus": devices,
             "reaper": reaper, "pid": os.getpid()},
            True,
        )
    if len(devices) > 1:
        tail = ["--loglevel", loglevel] + ([] if reaper else ["--no-reaper"])
        for module in imports:
            tail += ["--import", module]
        raise typer.Exit(run_per_gpu(devices, tail))
    if len(devices) == 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]
    run_worker(settings, queue, concurrency=concurrency, loglevel=loglevel, hostname=hostname, reaper=reaper, imports=imports)


@app.command()
def reaper(
    once: bool = typer.Option(False, "--once", help="Run one pass and exit."),
    interval: Optional[float] = typer.Option(None, "--interval", help="Seconds between passes (default ROUTEBATCH_REAPER_INTERVAL_S)."),
    as_json: bool = JsonOption,
) -> None:
    """Re-send items lost in flight and re-enqueue stalled jobs (workers also do this on a timer)."""
    from jobs.reaper import tick
    from jobs.runtime import Runtime
    from jobs.taskqueue import queue_for

    rt = Runtime.from_settings()
    queue = queue_for(rt.settings)
    every = interval or rt.settings.reaper_interval_s
    from jobs.queue import InlineQueue

    while True:
        report = tick(rt, queue)
        if isinstance(queue, InlineQueue):  # no broker: do the re-enqueued work right here
            from jobs.execution import run_task

            queue.drain(lambda task, job_id, chunk: run_task(rt, queue, task, job_id, chunk))
        if once:
            emit(report.as_dict(), as_json, lambda con: con.print(report.as_dict()))
            return
        if report.lost_in_flight or report.rekicked or report.finalized:
            emit(report.as_dict(), as_json, lambda con: con.print(report.as_dict()))
        time.sleep(every)
