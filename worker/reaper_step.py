"""Run the reaper on a timer inside every worker (one at a time, by a DB advisory lock).

A bootstep on the worker's own timer rather than a thread: under prefork the timer runs in
the parent's event loop, so no thread is alive when the pool forks a replacement child.
"""

from __future__ import annotations

import logging

from celery import bootsteps

log = logging.getLogger(__name__)


class ReaperStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker) -> None:
        from jobs.settings import get_settings

        interval = get_settings().reaper_interval_s
        self.tref = worker.timer.call_repeatedly(interval, self.tick, (worker,), priority=10)
        log.info("reaper: every %.1f s", interval)

    def stop(self, worker) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def tick(self, worker) -> None:
        from jobs.lifecycle.reaper import tick
        from worker.process import process_queue, reaper_runtime

        try:
            report = tick(reaper_runtime(), process_queue(worker.app))
        except Exception:
            log.warning("reaper tick failed", exc_info=True)
            return
        if report.lost_in_flight or report.cancelled or report.rekicked or report.finalized or report.reservations:
            log.warning("reaper: %s", report.as_dict())
