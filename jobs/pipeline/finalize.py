"""Finishing a job: once no item is open, exactly one caller closes it."""

from __future__ import annotations

from sqlalchemy import update

from jobs.ledger.models import Job
from jobs.ledger.session import rowcount, session_scope
from jobs.lifecycle import transitions
from jobs.lifecycle.states import ITEM_OPEN, JobState, Phase
from jobs.runtime import Runtime


def maybe_finalize(rt: Runtime, job_id: str) -> bool:
    """Close the job when no item is open; exactly one caller wins."""
    from jobs.pipeline.score import count_items

    if count_items(rt, job_id, ITEM_OPEN):
        return False
    with session_scope(rt.db_url) as s:
        won = rowcount(s.execute(update(Job).where(Job.id == job_id, Job.phase == Phase.GENERATING).values(phase=Phase.DONE)))
        if not won:
            return False
        job = s.get_one(Job, job_id)  # the UPDATE above just matched it
        if job.state == JobState.CANCELLING:
            transitions.transition(job, JobState.CANCELLED)
        elif job.state == JobState.IN_PROGRESS:
            transitions.transition(job, JobState.FINALIZING)
            transitions.transition(job, JobState.COMPLETED)
        wants_output = bool((job.spec or {}).get("out"))
    if wants_output:
        from jobs.ledger.export import write_job_outputs

        write_job_outputs(rt.db_url, job_id)  # after the commit: the file shows the final states
    return True
