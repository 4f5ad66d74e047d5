"""Job and item states, and which transitions are legal.

Job states follow the OpenAI Batch API so that users of its files recognise them; item
states record how far one prompt got, so that a redelivered chunk can skip what is done.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    BUDGET_EXHAUSTED = "budget_exhausted"  # routebatch's addition: --on-exhausted stop

    @property
    def terminal(self) -> bool:
        return self in JOB_TERMINAL


JOB_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED, JobState.BUDGET_EXHAUSTED})


class Phase(StrEnum):
    """Where the pipeline of an in-progress job is; the reaper re-enqueues work by phase."""

    SCORING = "scoring"
    GENERATING = "generating"
    DONE = "done"


class ItemState(StrEnum):
    PENDING = "pending"
    SCORED = "scored"
    ROUTED = "routed"
    RESERVED = "reserved"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED_BUDGET = "skipped_budget"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # the job's completion window ended before it was sent (OpenAI: batch_expired)

    @property
    def terminal(self) -> bool:
        return self in ITEM_TERMINAL


ITEM_TERMINAL = frozenset(
    {ItemState.SUCCEEDED, ItemState.FAILED, ItemState.SKIPPED_BUDGET, ItemState.CANCELLED, ItemState.EXPIRED}
)
ITEM_OPEN = frozenset(ItemState) - ITEM_TERMINAL

# Legal job transitions: from -> allowed targets.
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.VALIDATING: frozenset({JobState.IN_PROGRESS, JobState.FAILED, JobState.CANCELLING, JobState.CANCELLED}),
    JobState.IN_PROGRESS: frozenset(
        {JobState.FINALIZING, JobState.FAILED, JobState.CANCELLING, JobState.EXPIRED, JobState.BUDGET_EXHAUSTED}
    ),
    JobState.FINALIZING: frozenset({JobState.COMPLETED, JobState.FAILED, JobState.IN_PROGRESS}),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.IN_PROGRESS}),  # resume after a crash mid-cancel
    JobState.FAILED: frozenset({JobState.IN_PROGRESS}),  # resume
    JobState.CANCELLED: frozenset({JobState.IN_PROGRESS}),  # resume
    JobState.EXPIRED: frozenset({JobState.IN_PROGRESS}),  # resume
    JobState.COMPLETED: frozenset({JobState.IN_PROGRESS}),  # resume after a retry of failed items
    JobState.BUDGET_EXHAUSTED: frozenset({JobState.IN_PROGRESS}),  # resume after the budget was raised
}
