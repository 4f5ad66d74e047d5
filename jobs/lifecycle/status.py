"""What ``status`` reports about a job, as one typed object.

``JobStatus`` is what the Python API returns and what ``status --json`` prints (its
``model_dump``), so a script and a library caller see the same fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jobs.errors import JobNotFound
from jobs.ledger.models import Attempt, Budget, InvalidRow, Item, Job, LedgerEvent
from jobs.lifecycle.states import ItemState, JobState
from jobs.money.budgets import budget_report
from jobs.money.pricing import micro_to_usd

INVALID_SAMPLE = 20
NOTES_MAX = 50
NOTE_KIND = "job_note"


class InvalidRowInfo(BaseModel):
    line: int
    field: str | None
    reason: str
    custom_id: str | None


class JobStatus(BaseModel):
    """A job's state, timestamps, item counts, calls, cost and savings."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    status: JobState
    phase: str | None
    input_file: str
    router: str
    strong_model: str
    weak_model: str
    threshold: float | None
    strong_share_requested: float | None
    total: int
    invalid: int
    counts: dict[str, int]
    succeeded: int
    failed: int
    routed_strong: int
    routed_weak: int
    strong_calls: int
    weak_calls: int
    attempts: int
    cost_usd: float
    cost_micro_usd: int
    all_strong_cost_usd: float
    savings_pct: float
    error: str | None
    skipped_budget: int
    on_exhausted: str
    allocate: str
    budgets: dict[str, dict[str, Any]]
    invalid_rows: list[InvalidRowInfo]
    timestamps: dict[str, str | None]
    created_at: str
    ingest_complete: bool = True
    ingest_line: int = 0
    ingest_bytes: int | None = None
    input_size: int | None = None
    input_changed: bool = False
    enqueued: bool = False
    runner: str | None = None
    grade: dict[str, Any] | None = None
    object: str = "batch"
    request_counts: dict[str, int] = {}
    """OpenAI Batch's counts: total, completed (answered), failed (everything else that ended)."""
    openai_timestamps: dict[str, int | None] = {}
    """The state timestamps as OpenAI names them (``created_at``, ``in_progress_at``, ...), Unix seconds."""
    name: str | None = None
    metadata: dict[str, str] | None = None
    """``--metadata`` pairs, as OpenAI's Batch object has them."""
    completion_window: str | None = None
    expires_at: int | None = None
    """When unfinished items end ``expired`` (``created_at`` + ``completion_window``), Unix seconds."""
    notes: list[str] = []
    models: list[str] = []
    """The job's models, most capable first (two: strong and weak; more with ``--models``)."""
    succeeded_by_model: dict[str, int] = {}
    """Succeeded items per answering model (N-model jobs: one entry per tier used)."""
    adaptation: dict[str, Any] | None = None
    """``--adapt``: the sample, the chosen scorer with its cross-validated APGR, verdicts, costs."""
    quality_vs_strong: dict[str, Any] | None = None
    """``--adapt``: the routed job's quality relative to all-strong, {estimate, low, high} (90%)."""
    adapt_cost_share: float | None = None
    """``--adapt``: the sample's extra calls (weak twins, judge) as a share of the job's cost."""
    provider_batches: list[dict[str, Any]] = []
    """The job's provider batches (batch dispatch): ours and the provider's id, state, counts."""
    """Short lines about the job (ledger events of kind ``job_note``), oldest first."""

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def outcome_ok(self) -> bool:
        """What a script may trust: False when the job failed, was cancelled, ran out of
        budget, or every item failed (the exit code of ``run``/``resume``/``status --watch``)."""
        if self.status in (JobState.FAILED, JobState.CANCELLED, JobState.BUDGET_EXHAUSTED, JobState.EXPIRED):
            return False
        return not (self.total > 0 and self.failed == self.total)

    @property
    def done(self) -> int:
        """Items that reached a final state."""
        return sum(self.counts.get(st.value, 0) for st in ItemState if st.terminal)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form: plain JSON types, ``grade`` only when it was asked for."""
        return self.model_dump(mode="json", exclude_none=False, exclude={"grade"} if self.grade is None else set())


OPENAI_STATES = tuple(st for st in JobState if st not in (JobState.VALIDATING, JobState.BUDGET_EXHAUSTED))
"""The states whose timestamps OpenAI's Batch object has (``validating`` is its ``created_at``)."""


def _stamp(job: Job, state: JobState) -> datetime | None:
    """When the job entered ``state`` (the ``<state>_at`` column), if it did."""
    value: datetime | None = getattr(job, f"{state.value}_at")
    return value


def get_job(s: Session, job_id: str) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id!r}")
    return job


def read_status(s: Session, job_id: str) -> JobStatus:
    job = get_job(s, job_id)
    counts = dict(s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all())
    by_model = s.execute(
        select(
            Item.model,
            func.count(),
            func.coalesce(func.sum(Item.prompt_tokens), 0),
            func.coalesce(func.sum(Item.completion_tokens), 0),
            func.coalesce(func.sum(Item.cost_micro_usd), 0),
        )
        .where(Item.job_id == job_id, Item.state == ItemState.SUCCEEDED)
        .group_by(Item.model)
    ).all()
    routed = dict(
        s.execute(
            select(Item.route, func.count()).where(Item.job_id == job_id, Item.route.is_not(None)).group_by(Item.route)
        ).all()
    )
    spent = int(s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)).where(Attempt.job_id == job_id)) or 0)
    attempts = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id == job_id)) or 0
    invalid_sample = [
        InvalidRowInfo(line=r.line_no, field=r.field, reason=r.reason, custom_id=r.custom_id)
        for r in s.scalars(
            select(InvalidRow).where(InvalidRow.job_id == job_id).order_by(InvalidRow.line_no).limit(INVALID_SAMPLE)
        )
    ]
    budgets = {}
    for key, bid in (("job", job.job_budget_id), ("named", job.budget_id)):
        if bid is not None:
            budgets[key] = budget_report(s, s.get_one(Budget, bid))
    all_strong = _all_strong_cost(s, job_id)
    strong_calls = sum(n for model, n, *_ in by_model if model == job.strong_model)
    weak_calls = sum(n for model, n, *_ in by_model if model != job.strong_model)
    return JobStatus(
        job_id=job.id,
        status=JobState(job.state),
        phase=job.phase,
        input_file=job.input_file,
        router=job.router,
        strong_model=job.strong_model,
        weak_model=job.weak_model,
        threshold=job.threshold,
        strong_share_requested=job.strong_share,
        total=job.total,
        invalid=job.invalid,
        counts={st.value: counts.get(st.value, 0) for st in ItemState},
        succeeded=counts.get(ItemState.SUCCEEDED, 0),
        failed=counts.get(ItemState.FAILED, 0),
        routed_strong=routed.get("strong", 0),
        routed_weak=routed.get("weak", 0),
        strong_calls=strong_calls,
        weak_calls=weak_calls,
        attempts=attempts,
        cost_usd=micro_to_usd(spent),
        cost_micro_usd=spent,
        all_strong_cost_usd=micro_to_usd(all_strong),
        savings_pct=round(100.0 * (1 - spent / all_strong), 2) if all_strong else 0.0,
        error=job.error,
        skipped_budget=counts.get(ItemState.SKIPPED_BUDGET, 0),
        on_exhausted=job.on_exhausted,
        allocate=job.allocate,
        budgets=budgets,
        invalid_rows=invalid_sample,
        timestamps={st.value: (at.isoformat() if (at := _stamp(job, st)) else None) for st in JobState},
        created_at=job.created_at.isoformat(),
        ingest_complete=job.ingest_complete,
        ingest_line=job.ingest_line,
        ingest_bytes=job.ingest_bytes,
        input_size=job.input_size,
        input_changed=job.input_changed,
        enqueued=job.enqueued,
        runner=(f"{job.runner_host} pid {job.runner_pid}" if job.runner_id else None),
        request_counts={
            "total": job.total,
            "completed": counts.get(ItemState.SUCCEEDED, 0),
            "failed": sum(counts.get(st.value, 0) for st in ItemState if st.terminal and st != ItemState.SUCCEEDED),
        },
        openai_timestamps={
            "created_at": int(job.created_at.timestamp()),
            **{f"{st.value}_at": (int(at.timestamp()) if (at := _stamp(job, st)) else None) for st in OPENAI_STATES},
        },
        name=job.name,
        metadata=job.batch_metadata,
        completion_window=job.completion_window,
        expires_at=int(job.expires_at.timestamp()) if job.expires_at else None,
        notes=job_notes(s, job_id),
        provider_batches=provider_batch_rows(s, job_id),
        models=list((job.spec or {}).get("models") or [job.strong_model, job.weak_model]),
        succeeded_by_model={str(model): int(n) for model, n, *_ in by_model if model},
        **_adaptation(job, spent),
    )


def _adaptation(job: Job, spent: int) -> dict[str, Any]:
    record = (job.spec or {}).get("adaptation")
    if not record:
        return {}
    shown = {k: v for k, v in record.items() if k not in ("sample_item_ids", "curve_data") and not k.startswith("judging_")}
    quality = (record.get("quality") or {}).get("quality_vs_strong")
    extra = record.get("sample_cost_micro_usd")
    share = round(extra / spent, 4) if extra is not None and spent else None
    return {"adaptation": shown, "quality_vs_strong": quality, "adapt_cost_share": share}


PROVIDER_BATCHES_MAX = 200


def provider_batch_rows(s: Session, job_id: str, limit: int = PROVIDER_BATCHES_MAX) -> list[dict[str, Any]]:
    """The job's provider batches, oldest first (the first ``limit``)."""
    from jobs.ledger.models import ProviderBatch

    rows = s.scalars(select(ProviderBatch).where(ProviderBatch.job_id == job_id).order_by(ProviderBatch.created_at).limit(limit))
    return [
        {
            "id": pb.id,
            "provider": pb.provider,
            "model": pb.model,
            "remote_id": pb.remote_id,
            "state": pb.state,
            "remote_status": pb.remote_status,
            "requests": pb.request_count,
            "completed": pb.done_count,
            "failed": pb.failed_count,
            "created_at": pb.created_at.isoformat(),
            "settled_at": pb.settled_at.isoformat() if pb.settled_at else None,
        }
        for pb in rows
    ]


def job_notes(s: Session, job_id: str, limit: int = NOTES_MAX) -> list[str]:
    """The texts of the job's ``job_note`` events, oldest first (the first ``limit``)."""
    return list(
        s.scalars(
            select(LedgerEvent.message)
            .where(LedgerEvent.job_id == job_id, LedgerEvent.kind == NOTE_KIND)
            .order_by(LedgerEvent.at, LedgerEvent.id)
            .limit(limit)
        )
    )


def _all_strong_cost(s: Session, job_id: str) -> int:
    """What the succeeded items would have cost on the strong model, read from the ledger's
    ``savings`` view so that ``status`` and a hand-written query agree: strong answers at
    their real cost, weak ones at the strong model's current price for their tokens, and an
    adapting job's sampled items at their strong answer's cost (not its twin's or judge's)."""
    return int(s.scalar(text("SELECT all_strong_micro_usd FROM savings WHERE job_id = :job"), {"job": job_id}) or 0)
