"""``routebatch reaper``: the recovery pass that workers also run on a timer."""

from __future__ import annotations

import time
from typing import Any, Optional

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit


@app.command()
def reaper(
    once: bool = typer.Option(False, "--once", help="Run one pass and exit."),
    interval: Optional[float] = typer.Option(
        None, "--interval", help="Seconds between passes (default ROUTEBATCH_REAPER_INTERVAL_S)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Re-send items lost in flight and re-enqueue stalled jobs (workers also do this on a timer)."""
    from jobs.ledger.session import check_database
    from jobs.lifecycle.reaper import tick
    from jobs.pipeline.tasks import queue_for
    from jobs.runtime import Runtime

    rt = Runtime.from_settings()
    check_database(rt.db_url)
    queue = queue_for(rt.settings)
    every = interval or rt.settings.reaper_interval_s
    from jobs.pipeline.tasks import InlineQueue

    while True:
        report = tick(rt, queue)
        if isinstance(queue, InlineQueue):  # no broker: do the re-enqueued work right here
            from jobs.pipeline.runner import run_task

            queue.drain(lambda task, job_id, chunk: run_task(rt, queue, task, job_id, chunk))
        data = report.as_dict()

        def render(con: Any, data: dict = data) -> None:  # (default: bind this pass's data)
            con.print(data)

        if once:
            emit(data, as_json, render)
            return
        if report.lost_in_flight or report.rekicked or report.finalized:
            emit(data, as_json, render)
        time.sleep(every)
