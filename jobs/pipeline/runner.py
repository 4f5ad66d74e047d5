"""The step table: one name per pipeline step, the same in embedded and distributed mode.

Each step is idempotent under redelivery: it only touches items still in the state it
expects, guarded in SQL, and the job advances between phases by one conditional UPDATE of
``jobs.phase`` that exactly one caller wins.
"""

from __future__ import annotations

from jobs.pipeline.finalize import maybe_finalize
from jobs.pipeline.generate import generate_chunk
from jobs.pipeline.route import route_job
from jobs.pipeline.score import score_chunk
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime

TASKS = ("score", "route", "generate", "finalize")


def run_task(rt: Runtime, queue: TaskQueue, task: str, job_id: str, chunk: int | None) -> None:
    if task == "score":
        score_chunk(rt, queue, job_id, chunk or 0)
    elif task == "route":
        route_job(rt, queue, job_id)
    elif task == "generate":
        generate_chunk(rt, queue, job_id, chunk or 0)
    elif task == "finalize":
        maybe_finalize(rt, job_id)
    else:
        raise ValueError(f"unknown pipeline step {task!r}")
