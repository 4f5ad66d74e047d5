"""Queries over ``provider_batches`` that recovery, the reaper and status share."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.ledger.models import ProviderBatch

OPEN_STATES = ("preparing", "submitted")
"""A provider batch in these states still carries its items: their results are to come."""


def open_batches_exist(s: Session, job_id: str) -> bool:
    return bool(
        s.scalar(
            select(select(ProviderBatch.id).where(ProviderBatch.job_id == job_id, ProviderBatch.state.in_(OPEN_STATES)).exists())
        )
    )


def batched_item_ids(s: Session, job_id: str) -> set[int]:
    """Items inside a provider batch still open: not lost in flight, whatever their lease says."""
    out: set[int] = set()
    for ids in s.scalars(
        select(ProviderBatch.item_ids).where(ProviderBatch.job_id == job_id, ProviderBatch.state.in_(OPEN_STATES))
    ):
        out.update(int(i) for i in ids or [])
    return out


def next_poll_delay(s: Session, job_id: str, now: datetime) -> float | None:
    """Seconds until the job's next batch is due (a poll or a reconcile); None when none is open."""
    times = [
        t
        for t in s.execute(
            select(ProviderBatch.next_poll_at, ProviderBatch.lease_until).where(
                ProviderBatch.job_id == job_id, ProviderBatch.state.in_(OPEN_STATES)
            )
        ).all()
    ]
    if not times:
        return None
    due = min((poll if poll is not None else lease) or now for poll, lease in times)
    return max(0.05, (due - now).total_seconds())
