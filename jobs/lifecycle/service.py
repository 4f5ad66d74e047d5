"""The job lifecycle service: submit, run, status, list, cancel, resume.

Used by the CLI and exported as the Python API (``jobs.__all__``). Every function takes
a ``Runtime`` so that tests and workers choose the database and config explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import case, func, select, update

from jobs.datasets import DatasetError, read_rows
from jobs.datasets.readers import detect_format
from jobs.errors import ConfigError, JobFailed
from jobs.ledger.ingest import ingest_rows
from jobs.ledger.migrate import ensure_schema
from jobs.ledger.models import Item, Job
from jobs.ledger.session import get_engine, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import transitions as lifecycle
from jobs.lifecycle.recovery import open_work, recover_lost
from jobs.lifecycle.states import ITEM_TERMINAL, ItemState, JobState, Phase
from jobs.lifecycle.status import JobStatus, get_job, read_status
from jobs.money.budgets import create_budget, get_budget
from jobs.money.pricing import sync_prices
from jobs.pipeline import runner
from jobs.pipeline.tasks import InlineQueue, TaskQueue
from jobs.runtime import Runtime
from routing.registry import validate_spec


class JobSpec(BaseModel):
    """What a user asks for; stored whole in ``jobs.spec`` so a job can be rerun as it was."""

    input_file: str
    format: str | None = None
    prompt_column: str = "prompt"
    router: str | None = None
    strong: str | None = None
    weak: str | None = None
    threshold: float | None = None
    strong_share: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    chunk_size: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, ge=0, description="This job's own cap.")
    budget: str | None = Field(None, description="Named budget to draw from.")
    on_exhausted: Literal["downgrade", "skip", "stop"] = "downgrade"
    allocate: Literal["threshold", "budget"] = "threshold"

    @model_validator(mode="after")
    def _one_rule(self) -> JobSpec:
        if self.threshold is not None and self.strong_share is not None:
            raise ValueError("give either threshold or strong_share, not both")
        if self.allocate == "budget" and self.budget_usd is None and self.budget is None:
            raise ValueError("--allocate budget needs --budget-usd or --budget")
        return self


@dataclass(frozen=True)
class IngestProgress:
    """Rows read so far while a job is validating (before it has a status worth showing)."""

    valid: int
    invalid: int


ProgressFn = Callable[[IngestProgress | JobStatus], None]


def new_job_id() -> str:
    return "batch_" + uuid.uuid4().hex[:24]


def submit(rt: Runtime, spec: JobSpec, queue: TaskQueue, on_progress: ProgressFn | None = None) -> str:
    """Validate and ingest the dataset, then enqueue scoring. Returns the job id.

    Raises DatasetError (before any job exists) when the file cannot be read at all.
    """
    path = Path(spec.input_file)
    rows = read_rows(path, spec.format, spec.prompt_column)  # raises early for missing/unreadable files
    cfg = rt.config
    strong = spec.strong or cfg.defaults.strong
    weak = spec.weak or cfg.defaults.weak
    cfg.model(strong), cfg.model(weak)
    router = spec.router or cfg.defaults.router
    try:
        validate_spec(router)
    except ValueError as exc:  # routing/ knows nothing of jobs.errors
        raise ConfigError(str(exc)) from exc
    chunk_size = spec.chunk_size or cfg.defaults.chunk_size
    threshold = spec.threshold
    strong_share = spec.strong_share if threshold is None else None
    if threshold is None and strong_share is None:
        strong_share = 0.5
    ensure_schema(rt.db_url)
    job_id = new_job_id()
    with session_scope(rt.db_url) as s:
        now = utcnow()
        named = get_budget(s, spec.budget).id if spec.budget else None
        own = create_budget(s, f"job:{job_id}", spec.budget_usd, "none", kind="job").id if spec.budget_usd is not None else None
        s.add(
            Job(
                id=job_id,
                created_at=now,
                input_file=str(path),
                input_format=detect_format(path, spec.format),
                spec={**spec.model_dump(), "router": router, "strong": strong, "weak": weak, "chunk_size": chunk_size},
                router=router,
                strong_model=strong,
                weak_model=weak,
                threshold=threshold,
                strong_share=strong_share,
                state=JobState.VALIDATING,
                validating_at=now,
                phase=Phase.SCORING,
                budget_id=named,
                job_budget_id=own,
                on_exhausted=spec.on_exhausted,
                allocate=spec.allocate,
            )
        )
        sync_prices(s, cfg, [strong, weak])
    progress = (lambda v, i: on_progress(IngestProgress(v, i))) if on_progress else None
    try:
        report = ingest_rows(get_engine(rt.db_url), job_id, rows, chunk_size=chunk_size, on_progress=progress)
    except DatasetError as exc:
        with session_scope(rt.db_url) as s:
            lifecycle.fail(get_job(s, job_id), str(exc))
        raise
    with session_scope(rt.db_url) as s:
        job = get_job(s, job_id)
        job.total, job.invalid, job.chunks = report.valid, report.invalid, report.chunks
        if report.valid == 0:
            lifecycle.fail(job, "no valid rows in the input")
            return job_id
        lifecycle.transition(job, JobState.IN_PROGRESS)
    for chunk in range(report.chunks):
        queue.enqueue("score", job_id, chunk)
    return job_id


def drain_inline(rt: Runtime, queue: InlineQueue, job_id: str, on_progress: ProgressFn | None = None) -> None:
    """Run the queued steps here. A step that raises (a router that cannot load, a database
    that went away) fails the job with the reason instead of leaving it in progress."""
    after = (lambda: on_progress(status(rt, job_id))) if on_progress else None
    try:
        queue.drain(lambda task, jid, chunk: runner.run_task(rt, queue, task, jid, chunk), after)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        with session_scope(rt.db_url) as s:
            job = s.get(Job, job_id)
            if job is not None and not JobState(job.state).terminal:
                job.phase = Phase.DONE
                lifecycle.fail(job, message)
        raise JobFailed(f"job {job_id} failed: {message} (fix the cause, then `routebatch resume {job_id}`)") from exc


def run(rt: Runtime, spec: JobSpec, on_progress: ProgressFn | None = None) -> JobStatus:
    """Submit and execute inline in this process (the embedded default). Returns the status."""
    queue = InlineQueue()
    job_id = submit(rt, spec, queue, on_progress)
    drain_inline(rt, queue, job_id, on_progress)
    return status(rt, job_id)


def _provider_name(rt: Runtime, model: str) -> str:
    return rt.config.model(model).provider if model in rt.config.models else ""


def status(rt: Runtime, job_id: str) -> JobStatus:
    """The job's state, timestamps, item counts, calls, cost and savings."""
    ensure_schema(rt.db_url)
    with session_scope(rt.db_url) as s:
        return read_status(s, job_id)


def list_jobs(rt: Runtime, limit: int = 20) -> list[dict]:
    ensure_schema(rt.db_url)
    with session_scope(rt.db_url) as s:
        jobs = s.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit)).all()
        return [
            {
                "job_id": j.id,
                "status": j.state,
                "created_at": j.created_at.isoformat(),
                "input_file": j.input_file,
                "total": j.total,
                "invalid": j.invalid,
                "router": j.router,
            }
            for j in jobs
        ]


def cancel(rt: Runtime, job_id: str) -> JobStatus:
    """Stop new provider calls: unsent items end cancelled; in-flight calls finish and are recorded."""
    with session_scope(rt.db_url) as s:
        job = get_job(s, job_id)
        if JobState(job.state).terminal:
            return status(rt, job_id)
        lifecycle.transition(job, JobState.CANCELLING)
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state.in_(lifecycle.UNSENT_STATES))
            .values(state=ItemState.CANCELLED, updated_at=utcnow())
        )
        in_flight = s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state == ItemState.SENT))
        if not in_flight:
            job.phase = Phase.DONE
            lifecycle.transition(job, JobState.CANCELLED)
    return status(rt, job_id)


def resume(rt: Runtime, job_id: str, queue: TaskQueue, *, retry_failed: bool = False, force: bool = False) -> JobStatus:
    """Re-enqueue every non-terminal item (after a crash, a cancel or an expiry).

    Items marked sent whose lease has expired (or all of them with ``force``) may or may
    not have reached the provider: they are recorded as an attempt of unknown outcome and
    sent again, so a duplicate call is visible in the ledger.
    """
    now = utcnow()
    with session_scope(rt.db_url) as s:
        job = get_job(s, job_id)
        reopen = [ItemState.CANCELLED] + ([ItemState.FAILED] if retry_failed else [])
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state.in_(reopen))
            .values(
                state=case(
                    (Item.score.is_(None), ItemState.PENDING), (Item.route.is_(None), ItemState.SCORED), else_=ItemState.ROUTED
                ),
                error=None,
                updated_at=now,
            )
        )
        recover_lost(s, job_id=job_id, force=force, now=now, provider_of=lambda m: _provider_name(rt, m))
        if retry_failed or job.state == JobState.BUDGET_EXHAUSTED:
            s.execute(
                update(Item)
                .where(Item.job_id == job_id, Item.state == ItemState.SKIPPED_BUDGET)
                .values(state=ItemState.ROUTED, error=None, updated_at=now)
            )
        counts = dict(s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all())
        open_count = sum(n for st, n in counts.items() if ItemState(st) not in ITEM_TERMINAL)
        if open_count == 0:
            return status(rt, job_id)
        lifecycle.transition(job, JobState.IN_PROGRESS)
        job.error = None
        needs_scoring = counts.get(ItemState.PENDING, 0) + counts.get(ItemState.SCORED, 0) > 0
        job.phase = Phase.SCORING if needs_scoring else Phase.GENERATING
        todo = open_work(s, job_id, job.phase)
    for step in todo:
        queue.enqueue(*step)
    return status(rt, job_id)


def export(rt: Runtime, job_id: str, out: Path, errors: Path | None = None, fmt: str = "openai") -> dict[str, int]:
    """Write the job's results (and optionally its errors file); returns line counts."""
    from jobs.ledger.export import export_job

    return export_job(rt.db_url, job_id, out, errors, fmt)
