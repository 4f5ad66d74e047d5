"""The job lifecycle service: submit, run, status, list, cancel, resume.

Used by the CLI and importable as a small Python API (``jobs.api``). Every function takes
a ``Runtime`` so that tests and workers choose the database and config explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Literal
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import case, func, select, update

from jobs.errors import ConfigError, JobFailed, JobNotFound
from jobs.lifecycle import transitions as lifecycle
from jobs.pipeline import runner
from jobs.money.budgets import budget_report, create_budget, get_budget
from jobs.lifecycle.recovery import open_work, recover_lost
from routing.registry import validate_spec
from jobs.datasets import DatasetError, read_rows
from jobs.datasets.readers import detect_format
from jobs.ledger.migrate import ensure_schema
from jobs.ledger.models import Attempt, Budget, InvalidRow, Item, Job
from jobs.ledger.session import get_engine, session_scope
from jobs.ledger.types import utcnow
from jobs.ledger.ingest import ingest_rows
from jobs.money.pricing import PriceVersion, latest_price, micro_to_usd, sync_prices
from jobs.pipeline.tasks import InlineQueue, TaskQueue
from jobs.runtime import Runtime
from jobs.lifecycle.states import ITEM_TERMINAL, ItemState, JobState, Phase


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


ProgressFn = Callable[[dict], None]


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
    progress = (lambda v, i: on_progress({"stage": "validating", "valid": v, "invalid": i})) if on_progress else None
    try:
        report = ingest_rows(get_engine(rt.db_url), job_id, rows, chunk_size=chunk_size, on_progress=progress)
    except DatasetError as exc:
        with session_scope(rt.db_url) as s:
            lifecycle.fail(s.get(Job, job_id), str(exc))
        raise
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
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
    except Exception as exc:  # noqa: BLE001 - reported on the job and to the caller
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        with session_scope(rt.db_url) as s:
            job = s.get(Job, job_id)
            if job is not None and not JobState(job.state).terminal:
                job.phase = Phase.DONE
                lifecycle.fail(job, message)
        raise JobFailed(f"job {job_id} failed: {message} (fix the cause, then `routebatch resume {job_id}`)") from exc


def run(rt: Runtime, spec: JobSpec, on_progress: ProgressFn | None = None) -> dict:
    """Submit and execute inline in this process (the embedded default). Returns the status."""
    queue = InlineQueue()
    job_id = submit(rt, spec, queue, on_progress)
    drain_inline(rt, queue, job_id, on_progress)
    return status(rt, job_id)


def _provider_name(rt: Runtime, model: str) -> str:
    return rt.config.model(model).provider if model in rt.config.models else ""


def _get_job(s, job_id: str) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id!r}")
    return job


def status(rt: Runtime, job_id: str) -> dict:
    """The job's state, timestamps, item counts, calls, cost and savings."""
    ensure_schema(rt.db_url)
    with session_scope(rt.db_url) as s:
        job = _get_job(s, job_id)
        counts = dict(
            s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all()
        )
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
        spent = int(s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)).where(Attempt.job_id == job_id)))
        attempts = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id == job_id))
        invalid_sample = [
            {"line": r.line_no, "field": r.field, "reason": r.reason, "custom_id": r.custom_id}
            for r in s.scalars(select(InvalidRow).where(InvalidRow.job_id == job_id).order_by(InvalidRow.line_no).limit(20))
        ]
        budgets = {}
        for key, bid in (("job", job.job_budget_id), ("named", job.budget_id)):
            if bid is not None:
                budgets[key] = budget_report(s, s.get(Budget, bid))
        strong_price = latest_price(s, job.strong_model)
        all_strong = _all_strong_cost(job, by_model, strong_price)
        strong_calls = sum(n for model, n, *_ in by_model if model == job.strong_model)
        weak_calls = sum(n for model, n, *_ in by_model if model != job.strong_model)
        out = {
            "job_id": job.id,
            "status": job.state,
            "phase": job.phase,
            "input_file": job.input_file,
            "router": job.router,
            "strong_model": job.strong_model,
            "weak_model": job.weak_model,
            "threshold": job.threshold,
            "strong_share_requested": job.strong_share,
            "total": job.total,
            "invalid": job.invalid,
            "counts": {st.value: counts.get(st.value, 0) for st in ItemState},
            "succeeded": counts.get(ItemState.SUCCEEDED, 0),
            "failed": counts.get(ItemState.FAILED, 0),
            "routed_strong": routed.get("strong", 0),
            "routed_weak": routed.get("weak", 0),
            "strong_calls": strong_calls,
            "weak_calls": weak_calls,
            "attempts": attempts,
            "cost_usd": micro_to_usd(spent),
            "cost_micro_usd": spent,
            "all_strong_cost_usd": micro_to_usd(all_strong),
            "savings_pct": round(100.0 * (1 - spent / all_strong), 2) if all_strong else 0.0,
            "error": job.error,
            "skipped_budget": counts.get(ItemState.SKIPPED_BUDGET, 0),
            "on_exhausted": job.on_exhausted,
            "allocate": job.allocate,
            "budgets": budgets,
            "invalid_rows": invalid_sample,
            "timestamps": {
                st.value: (getattr(job, f"{st.value}_at").isoformat() if getattr(job, f"{st.value}_at") else None)
                for st in JobState
            },
            "created_at": job.created_at.isoformat(),
        }
    return out


def _all_strong_cost(job: Job, by_model, strong_price: PriceVersion | None) -> int:
    """What the succeeded items would have cost on the strong model.

    Items answered by the strong model count at their real cost; the others at the
    strong model's current price for the same prompt and completion token counts.
    """
    total = 0
    for model, _n, prompt_toks, completion_toks, cost in by_model:
        if model == job.strong_model or strong_price is None:
            total += int(cost)
        else:
            total += strong_price.cost_micro_usd(int(prompt_toks), int(completion_toks))
    return total


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


def cancel(rt: Runtime, job_id: str) -> dict:
    """Stop new provider calls: unsent items end cancelled; in-flight calls finish and are recorded."""
    with session_scope(rt.db_url) as s:
        job = _get_job(s, job_id)
        if JobState(job.state).terminal:
            return status(rt, job_id)
        lifecycle.transition(job, JobState.CANCELLING)
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state.in_(lifecycle.UNSENT_STATES))
            .values(state=ItemState.CANCELLED, updated_at=utcnow())
        )
        in_flight = s.scalar(
            select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state == ItemState.SENT)
        )
        if not in_flight:
            job.phase = Phase.DONE
            lifecycle.transition(job, JobState.CANCELLED)
    return status(rt, job_id)


def resume(rt: Runtime, job_id: str, queue: TaskQueue, *, retry_failed: bool = False, force: bool = False) -> dict:
    """Re-enqueue every non-terminal item (after a crash, a cancel or an expiry).

    Items marked sent whose lease has expired (or all of them with ``force``) may or may
    not have reached the provider: they are recorded as an attempt of unknown outcome and
    sent again, so a duplicate call is visible in the ledger.
    """
    now = utcnow()
    with session_scope(rt.db_url) as s:
        job = _get_job(s, job_id)
        reopen = [ItemState.CANCELLED] + ([ItemState.FAILED] if retry_failed else [])
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state.in_(reopen))
            .values(
                state=case((Item.score.is_(None), ItemState.PENDING), (Item.route.is_(None), ItemState.SCORED), else_=ItemState.ROUTED),
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
