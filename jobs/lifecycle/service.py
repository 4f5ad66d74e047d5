"""The job lifecycle service: submit, run, status, list, cancel, resume.

Used by the CLI and exported as the Python API (``jobs.__all__``). Every function takes
a ``Runtime`` so that tests and workers choose the database and config explicitly.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from jobs.config import AppConfig
from jobs.datasets import DatasetError, read_rows
from jobs.datasets.limits import limits_for_models
from jobs.datasets.readers import detect_format
from jobs.errors import ConfigError, IllegalTransition, InfrastructureError, JobFailed
from jobs.ledger.ingest import IngestReport, ingest_rows
from jobs.ledger.migrate import ensure_schema
from jobs.ledger.models import Item, Job
from jobs.ledger.session import get_engine, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import lease as leases
from jobs.lifecycle import transitions as lifecycle
from jobs.lifecycle.expiry import parse_window
from jobs.lifecycle.recovery import open_work, recover_lost, worst_case_estimator
from jobs.lifecycle.states import ITEM_TERMINAL, ItemState, JobState, Phase
from jobs.lifecycle.status import JobStatus, get_job, read_status
from jobs.money.budgets import add_event, create_budget, get_budget
from jobs.money.pricing import sync_prices
from jobs.pipeline import runner
from jobs.pipeline.tasks import InlineQueue, TaskQueue
from jobs.runtime import Runtime
from routing.registry import validate_spec

NAME_MAX = 256
METADATA_MAX_PAIRS = 16
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512


def _pair(entry: object) -> tuple[object, object]:
    if not isinstance(entry, str) or "=" not in entry:
        raise ValueError(f"{entry!r} is not key=value")
    key, _, value = entry.partition("=")
    return key, value


def check_metadata(pairs: list[tuple[object, object]]) -> dict[str, str]:
    """``pairs`` as a dict, or ``ValueError`` naming the first break of OpenAI's limits
    (at most 16 pairs, keys up to 64 characters, values up to 512, strings only)."""
    if len(pairs) > METADATA_MAX_PAIRS:
        raise ValueError(f"{len(pairs)} pairs given; at most {METADATA_MAX_PAIRS} are allowed")
    out: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError("metadata keys and values must be strings")
        if not key.strip():
            raise ValueError("a key is empty")
        if key in out:
            raise ValueError(f"key {key!r} is given twice")
        if len(key) > METADATA_KEY_MAX:
            raise ValueError(f"key {key[:20]!r}... is {len(key)} characters; at most {METADATA_KEY_MAX} are allowed")
        if len(value) > METADATA_VALUE_MAX:
            raise ValueError(f"the value of {key!r} is {len(value)} characters; at most {METADATA_VALUE_MAX} are allowed")
        out[key] = value
    return out


class JobSpec(BaseModel):
    """What a user asks for; stored whole in ``jobs.spec`` so a job can be rerun as it was."""

    input_file: str
    format: str | None = None
    prompt_column: str = "prompt"
    router: str | None = None
    strong: str | None = None
    weak: str | None = None
    threshold: float | None = Field(None, allow_inf_nan=False)
    strong_share: float | None = Field(None, ge=0.0, le=1.0)
    share_from_sample: int | None = Field(
        None,
        ge=1,
        description="Strong share from a threshold fixed on the first N scored items, then held: generation "
        "starts as chunks are scored (jobs.pipeline.route). Without it the share is exact and waits for all scores.",
    )
    max_tokens: int | None = Field(None, ge=1)
    chunk_size: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False, description="This job's own cap.")
    budget: str | None = Field(None, description="Named budget to draw from.")
    on_exhausted: Literal["downgrade", "skip", "stop"] = "downgrade"
    allocate: Literal["threshold", "budget"] = "threshold"
    out: str | None = Field(None, description="Write the results here when the job ends (.parquet: Parquet, else JSONL).")
    errors_out: str | None = Field(None, description="Write the errors file here when the job ends.")
    force: bool = Field(False, description="Replace out/errors_out if they exist when the job is submitted.")
    name: str | None = Field(None, min_length=1, max_length=NAME_MAX, description="A name to find the job by (list --name).")
    metadata: dict[str, str] | None = Field(
        None, description=f"Up to {METADATA_MAX_PAIRS} str -> str pairs (OpenAI Batch's limits); CLI: --metadata k=v."
    )
    completion_window: str | None = Field(
        None, description="e.g. 24h, 90m, 2d: unfinished items then end expired (OpenAI Batch's completion_window)."
    )
    models: list[str] | None = Field(
        None,
        description="The job's models, most capable first (--models a,b,c): strong is the first, weak the last; "
        "more than two are allocated under the budget (--allocate budget).",
    )
    adapt: float | None = Field(
        None,
        gt=0.0,
        le=0.5,
        description="Adapt the router to this job: judge a stratified sample of this fraction of the items on both "
        "models, fit a per-job router on the verdicts, route the rest with what the sample says is best.",
    )
    adapt_min: int = Field(
        100,
        ge=6,
        description="With --adapt: the sample holds at least this many items (fewer than about 100 verdicts choose "
        "poorly: docs/evaluation.md).",
    )
    adapt_max_cost: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="With --adapt: adapt only when the drawn sample's weak twins and judge calls are estimated at "
        "most this share of the job's cost (status's 'adapting cost'); otherwise route as usual, before any of "
        "those calls. Default: no limit (the estimate is in the job's notes either way).",
    )
    judge: str | None = Field(
        None, description="With --adapt: llm (the [judge] model, default), labels:FILE (known answers) or sim."
    )
    memory: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="With --adapt: keep the judged pairs under this name; the next job of that name (same model pair) "
        "learns from them too and samples less.",
    )
    dispatch: Literal["sync", "batch", "auto"] | None = Field(
        None,
        description="Override every provider's dispatch: sync calls, the providers' batch APIs at batch prices, or "
        "auto (batch unless the deadline is under an hour away). Default: each provider's config.",
    )

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: object) -> object:
        """``k=v`` strings (the CLI's repeatable ``--metadata``) or a mapping, within OpenAI's limits."""
        if value is None:
            return None
        if isinstance(value, dict):
            pairs = list(value.items())
        elif isinstance(value, list | tuple):
            pairs = [_pair(entry) for entry in value]
        else:
            raise ValueError("metadata must be key=value pairs")
        return check_metadata(pairs) or None

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: object) -> object:
        """``a,b,c`` (the CLI's ``--models``) or a list."""
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("completion_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_window(value)  # ValueError names the accepted forms
        return value.strip().lower().replace(" ", "")

    @model_validator(mode="after")
    def _adapt_rule(self) -> JobSpec:
        if self.adapt is None:
            if self.judge is not None or self.memory is not None or self.adapt_max_cost is not None:
                raise ValueError("--judge, --memory and --adapt-max-cost go with --adapt F")
            return self
        if self.threshold is not None or self.share_from_sample is not None or self.allocate == "budget":
            raise ValueError("--adapt routes the rest at --strong-share (an exact share of the items outside the sample)")
        if self.models is not None and len(self.models) > 2:
            raise ValueError("--adapt works on two models")
        return self

    @model_validator(mode="after")
    def _one_rule(self) -> JobSpec:
        if self.threshold is not None and self.strong_share is not None:
            raise ValueError("give either threshold or strong_share, not both")
        if self.share_from_sample is not None and (self.threshold is not None or self.allocate == "budget"):
            raise ValueError("--share-from-sample goes with --strong-share, not with --threshold or --allocate budget")
        if self.allocate == "budget" and self.budget_usd is None and self.budget is None:
            raise ValueError("--allocate budget needs --budget-usd or --budget")
        if self.errors_out is not None and self.out is None:
            raise ValueError("--errors needs --out")
        return self


@dataclass(frozen=True)
class IngestProgress:
    """Rows read so far while a job is validating (before it has a status worth showing)."""

    valid: int
    invalid: int
    job_id: str | None = None
    bytes_read: int | None = None
    """Bytes of the input file read so far (committed with the last batch), when known."""
    size: int | None = None
    """The input's size in bytes at ingest start (None for a pipe)."""


ProgressFn = Callable[[IngestProgress | JobStatus], None]


def new_job_id() -> str:
    return "batch_" + uuid.uuid4().hex[:24]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``run``/``resume``: the job is left resumable; ``job_id`` says which."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True)
class InputFingerprint:
    size: int | None
    mtime_ns: int | None
    seekable: bool


def fingerprint(path: Path) -> InputFingerprint:
    """Size and mtime of a regular file; pipes, FIFOs and stdin are not seekable (``resume``
    cannot read them again)."""
    if str(path) == "-":
        return InputFingerprint(None, None, False)
    try:
        st = os.stat(path)
    except OSError:
        return InputFingerprint(None, None, False)
    if not stat.S_ISREG(st.st_mode):
        return InputFingerprint(None, None, False)
    return InputFingerprint(st.st_size, st.st_mtime_ns, True)


def resolve_models(cfg: AppConfig, spec: JobSpec) -> tuple[JobSpec, str, str]:
    """(spec with its tiers resolved, strong, weak). ``--models a,b,c`` (or ``[defaults]
    tiers``) names the job's models most capable first: strong is the first, weak the last.
    More than two models are allocated under the budget (``--allocate budget`` and a cap):
    without one every item would simply go to the top model."""
    models = list(spec.models or cfg.defaults.tiers or [])
    if not models:
        strong, weak = spec.strong or cfg.defaults.strong, spec.weak or cfg.defaults.weak
        cfg.model(strong), cfg.model(weak)
        return spec, strong, weak
    for m in models:
        cfg.model(m)
    if len(models) < 2 or len(set(models)) != len(models):
        raise ConfigError(f"--models needs at least two different models, most capable first; got {','.join(models)}")
    for role, given, tier in (("strong", spec.strong, models[0]), ("weak", spec.weak, models[-1])):
        if given is not None and given != tier:
            raise ConfigError(
                f"--{role} {given} disagrees with --models ({role} is the {'first' if role == 'strong' else 'last'})"
            )
    if len(models) > 2 and (spec.allocate != "budget" or (spec.budget_usd is None and spec.budget is None)):
        raise ConfigError(
            f"{len(models)} models are routed by allocation under a budget: add --allocate budget and "
            "--budget-usd X (or --budget NAME)"
        )
    return spec.model_copy(update={"models": models}), models[0], models[-1]


def _create_job(rt: Runtime, spec: JobSpec) -> tuple[str, Iterator]:
    """Check the spec, open the input (read once: it may be a pipe) and create the job row
    (``validating``, nothing ingested yet). Returns the job id and the opened rows."""
    path = Path(spec.input_file)
    cfg = rt.config
    spec, strong, weak = resolve_models(cfg, spec)
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
    if rt.settings.preflight:
        from jobs.providers.preflight import preflight

        preflight(cfg, spec.models or [strong, weak], rt.base_urls())  # a dead endpoint or a bad key stops us before any work
    if spec.out is not None:
        from jobs.ledger.export import check_paths

        check_paths(rt.db_url, str(path), Path(spec.out), Path(spec.errors_out) if spec.errors_out else None, force=spec.force)
    ensure_schema(rt.db_url)
    fp = fingerprint(path)
    limits = limits_for_models(cfg, spec.models or [strong, weak])
    rows = read_rows(path, spec.format, spec.prompt_column, limits=limits)  # raises early for missing/unreadable files
    try:
        job_id = _insert_job(
            rt,
            spec,
            path,
            fp,
            bool(getattr(rows, "seekable", fp.seekable)),
            router,
            strong,
            weak,
            chunk_size,
            threshold,
            strong_share,
        )
    except BaseException:
        _close(rows)
        raise
    return job_id, rows


def _close(rows: object) -> None:
    close = getattr(rows, "close", None)
    if close is not None:
        close()


def _insert_job(
    rt: Runtime,
    spec: JobSpec,
    path: Path,
    fp: InputFingerprint,
    seekable: bool,
    router: str,
    strong: str,
    weak: str,
    chunk_size: int,
    threshold: float | None,
    strong_share: float | None,
) -> str:
    cfg = rt.config
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
                ingest_complete=False,
                input_size=fp.size,
                input_mtime_ns=fp.mtime_ns,
                input_seekable=seekable,
                enqueued=False,
                name=spec.name,
                batch_metadata=spec.metadata,
                completion_window=spec.completion_window,
                expires_at=now + parse_window(spec.completion_window) if spec.completion_window else None,
            )
        )
        sync_prices(s, cfg, spec.models or [strong, weak])
    return job_id


def _open_rows(rt: Runtime, path: Path, job: Job, start: IngestReport) -> Iterator:
    """The input's rows; from the committed byte offset when the reader can seek there,
    else from the start (``ingest_rows`` skips the lines already committed)."""
    spec = job.spec or {}
    fmt, column = spec.get("format"), spec.get("prompt_column", "prompt")
    limits = limits_for_models(rt.config, [job.strong_model, job.weak_model])
    if start.line and start.offset is not None:
        return read_rows(path, fmt, column, limits=limits, start_offset=start.offset, start_line=start.line + 1)
    return read_rows(path, fmt, column, limits=limits)


def _ingest(rt: Runtime, job_id: str, on_progress: ProgressFn | None = None, rows: Iterator | None = None) -> IngestReport | None:
    """Read the job's input (the rest of it, after a crash) and move the job on.

    The job leaves ``validating`` only once the whole input is read: ``in_progress``, or
    ``failed`` when no row is valid, the file breaks mid-read or ingest raised. Returns the
    report, or None when the job failed. ``rows``: the input ``submit`` already opened.
    """
    try:
        return _ingest_rows(rt, job_id, on_progress, rows)
    finally:
        if rows is not None:
            _close(rows)


def _ingest_rows(rt: Runtime, job_id: str, on_progress: ProgressFn | None, rows: Iterator | None) -> IngestReport | None:
    with session_scope(rt.db_url) as s:
        job = get_job(s, job_id)
        start = IngestReport(
            valid=job.total,
            invalid=job.invalid,
            chunks=job.chunks,
            seq=job.ingest_seq,
            line=job.ingest_line,
            offset=job.ingest_offset,
        )
        path = Path(job.input_file)
        chunk_size = int((job.spec or {}).get("chunk_size") or rt.config.defaults.chunk_size)
        resuming = start.line > 0
        if resuming and not job.input_seekable:
            lifecycle.fail(
                job,
                f"ingest stopped after line {start.line} and the input ({job.input_file}) was a pipe or stream that "
                "cannot be read again; submit the file again",
            )
            job.phase = Phase.DONE
            return None
        s.expunge(job)

    def progress(valid: int, invalid: int) -> None:
        assert on_progress is not None
        with session_scope(rt.db_url) as s:
            read = s.scalar(select(Job.ingest_bytes).where(Job.id == job_id))
        on_progress(IngestProgress(valid, invalid, job_id=job_id, bytes_read=read, size=job.input_size))

    try:
        if rows is None:
            rows = _open_rows(rt, path, job, start)
        report = ingest_rows(
            get_engine(rt.db_url), job_id, rows, chunk_size=chunk_size, on_progress=progress if on_progress else None, start=start
        )
    except DatasetError as exc:
        with session_scope(rt.db_url) as s:
            lifecycle.fail(get_job(s, job_id), str(exc))
        raise
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        with session_scope(rt.db_url) as s:
            job = get_job(s, job_id)
            line = job.ingest_line
            lifecycle.fail(job, f"ingest stopped after line {line}: {message}")
        raise JobFailed(
            f"job {job_id}: ingest stopped after line {line}: {message} "
            f"(rows up to line {line} are kept; fix the cause, then `routebatch resume {job_id}`)"
        ) from exc
    with session_scope(rt.db_url) as s:
        job = get_job(s, job_id)
        job.total, job.invalid, job.chunks = report.valid, report.invalid, report.chunks
        job.ingest_complete = True
        now_fp = fingerprint(path)
        if job.input_seekable and (now_fp.size, now_fp.mtime_ns) != (job.input_size, job.input_mtime_ns):
            job.input_changed = True
            add_event(
                s,
                "input_changed",
                f"{job.input_file} changed while it was read (size {job.input_size} -> {now_fp.size}); "
                "rows written after ingest passed them were not read",
                job_id=job_id,
                data={"size_before": job.input_size, "size_after": now_fp.size},
            )
        if report.valid == 0:
            lifecycle.fail(job, "no valid rows in the input")
            job.phase = Phase.DONE
            return None
        lifecycle.transition(job, JobState.IN_PROGRESS)
    return report


def _enqueue(rt: Runtime, job_id: str, queue: TaskQueue, todo: list[tuple[str, str, int | None]]) -> None:
    """Put ``todo`` on the queue; on a broker, mark the job enqueued only when all of it got
    there (the reaper re-enqueues only enqueued jobs). A broker that fails leaves the job
    not-enqueued and raises one line with its id and the ``resume`` hint."""
    try:
        for step in todo:
            queue.enqueue(*step)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__
        with session_scope(rt.db_url) as s:
            job = get_job(s, job_id)
            job.enqueued = False
            add_event(s, "enqueue_failed", f"the broker refused the job's messages: {message}", job_id=job_id)
        raise InfrastructureError(
            f"job {job_id} is ingested but could not be enqueued ({message}); nothing will run it until you "
            f"`routebatch resume {job_id}` once the broker is reachable"
        ) from exc
    if not isinstance(queue, InlineQueue):
        with session_scope(rt.db_url) as s:
            get_job(s, job_id).enqueued = True


def submit(rt: Runtime, spec: JobSpec, queue: TaskQueue, on_progress: ProgressFn | None = None) -> str:
    """Validate and ingest the dataset, then enqueue scoring. Returns the job id.

    Raises DatasetError (before any job exists) when the file cannot be read at all, and
    InfrastructureError (the job exists, not enqueued) when the broker refuses it.
    """
    job_id, rows = _create_job(rt, spec)
    with leases.acquire(rt.db_url, job_id):
        report = _ingest(rt, job_id, on_progress, rows)
    if report is not None:
        _enqueue(rt, job_id, queue, [("score", job_id, c) for c in range(report.chunks)])
    return job_id


@contextmanager
def hold(rt: Runtime, job_id: str) -> Iterator[leases.Lease]:
    """Hold the job's runner lease (with a heartbeat) for the block; ``JobBusy`` if a live
    runner holds it."""
    ensure_schema(rt.db_url)
    lease = leases.acquire(rt.db_url, job_id)
    try:
        yield lease
    finally:
        lease.release()


def drain_inline(
    rt: Runtime, queue: InlineQueue, job_id: str, on_progress: ProgressFn | None = None, runner_id: str | None = None
) -> None:
    """Run the queued steps here. A step that raises (a router that cannot load, a database
    that went away) fails the job with the reason instead of leaving it in progress.

    Ctrl-C records the calls in flight as maybe-sent and raises ``RunInterrupted``."""
    after = (lambda: on_progress(status(rt, job_id))) if on_progress else None
    try:
        queue.drain(lambda task, jid, chunk: runner.run_task(rt, queue, task, jid, chunk, runner_id=runner_id), after)
    except KeyboardInterrupt:
        record_interrupted(rt, job_id)
        raise RunInterrupted(job_id) from None
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
    job_id, rows = _create_job(rt, spec)
    try:
        with hold(rt, job_id) as lease:
            report = _ingest(rt, job_id, on_progress, rows)
            if report is not None:
                _enqueue(rt, job_id, queue, [("score", job_id, c) for c in range(report.chunks)])
                drain_inline(rt, queue, job_id, on_progress, runner_id=lease.runner_id)
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted):
            raise
        raise RunInterrupted(job_id) from None  # during ingest: committed batches are kept
    return status(rt, job_id)


def record_interrupted(rt: Runtime, job_id: str) -> int:
    """After Ctrl-C: calls this process had handed to a provider are recorded as maybe-sent
    (a ``LostInFlight`` attempt charged at the hold, or at the worst case without a budget),
    items claimed but never sent go back to ``routed`` at no cost. Returns the maybe-sent count."""
    from jobs.pipeline import inflight

    ids = inflight.take(job_id)
    with session_scope(rt.db_url) as s:
        got = recover_lost(
            s, job_id=job_id, force=True, provider_of=lambda m: _provider_name(rt, m), sent_ids=ids, estimate=_estimator(rt)
        )
    return got["lost_items"]


def _estimator(rt: Runtime) -> Callable[[Session, Item], int]:
    return worst_case_estimator(rt.config)


def _provider_name(rt: Runtime, model: str) -> str:
    return rt.config.model(model).provider if model in rt.config.models else ""


def status(rt: Runtime, job_id: str) -> JobStatus:
    """The job's state, timestamps, item counts, calls, cost and savings."""
    ensure_schema(rt.db_url)
    with session_scope(rt.db_url) as s:
        return read_status(s, job_id)


def list_jobs(rt: Runtime, limit: int = 20, *, name: str | None = None, state: str | None = None) -> list[dict]:
    """The most recent jobs, newest first; ``name`` (exact) and ``state`` filter them."""
    if state is not None and state not in {st.value for st in JobState}:
        raise ConfigError(f"unknown job state {state!r}; use one of {', '.join(st.value for st in JobState)}")
    ensure_schema(rt.db_url)
    with session_scope(rt.db_url) as s:
        query = select(Job)
        if name is not None:
            query = query.where(Job.name == name)
        if state is not None:
            query = query.where(Job.state == state)
        jobs = s.scalars(query.order_by(Job.created_at.desc()).limit(limit)).all()
        return [
            {
                "job_id": j.id,
                "name": j.name,
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


def resume(
    rt: Runtime,
    job_id: str,
    queue: TaskQueue,
    *,
    retry_failed: bool = False,
    force: bool = False,
    reopen: bool = False,
    lease: leases.Lease | None = None,
    on_progress: ProgressFn | None = None,
) -> JobStatus:
    """Re-enqueue every non-terminal item (after a crash, a stop of the budget, a failure).

    A cancel and an expiry are final, as in OpenAI's Batch API: a ``cancelled`` or
    ``expired`` job is refused (``IllegalTransition``, naming ``--reopen``) unless
    ``reopen``, which sends its cancelled and expired items again (a ``job_reopened``
    ledger event records it; an expired job gets a fresh completion window from now). A job
    left ``cancelling`` by a crash is finished instead: lost calls are recorded, the rest
    end cancelled and the job ``cancelled``.

    A job whose ingest was interrupted (killed while ``validating``, or ingest raised) first
    reads the rest of its input, from the last committed row; a non-seekable input fails
    the job with the reason instead. Items marked sent whose lease has expired (or all of
    them with ``force``) may or may not have reached the provider: they are recorded as an
    attempt of unknown outcome and sent again, so a duplicate call is visible in the ledger.

    Takes the job's runner lease (``JobBusy`` when a live runner holds it) unless the caller
    passes the one it holds; a lease taken here is given back before enqueuing, so workers
    may take the messages.
    """
    ensure_schema(rt.db_url)
    own = lease is None
    held = lease if lease is not None else leases.acquire(rt.db_url, job_id)
    try:
        todo = _reopen(rt, job_id, retry_failed=retry_failed, force=force, reopen=reopen, on_progress=on_progress)
    finally:
        if own:
            held.release()
    if todo:
        _enqueue(rt, job_id, queue, todo)
    return status(rt, job_id)


FINAL_STATES = (JobState.CANCELLED, JobState.EXPIRED)
"""Job states ``resume`` leaves alone unless asked to ``--reopen`` them."""


def _refuse_final(job: Job) -> None:
    state = JobState(job.state)
    verb = "a cancel" if state == JobState.CANCELLED else "an expiry"
    raise IllegalTransition(
        f"job {job.id} is {state.value} and {verb} is final; "
        f"`routebatch resume {job.id} --reopen` sends its {state.value} items again"
    )


def _finish_cancel(s: Session, rt: Runtime, job: Job, *, force: bool, now: datetime) -> list[tuple[str, str, int | None]]:
    """A job left ``cancelling`` (its runner died mid-cancel): record the calls that may
    have been made, cancel what was never sent, and let ``finalize`` close it."""
    recover_lost(s, job_id=job.id, force=force, now=now, provider_of=lambda m: _provider_name(rt, m))
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state.in_(lifecycle.UNSENT_STATES))
        .values(state=ItemState.CANCELLED, lease_until=None, updated_at=now)
    )
    if job.phase == Phase.SCORING:
        job.phase = Phase.GENERATING  # so that maybe_finalize may close it
    from jobs.ledger.provider_batches import open_batches_exist

    # items in a provider batch are left to its poll (the reaper skips them): it cancels the
    # batch and settles what was answered, or they would stay sent, their holds open, for good
    polls: list[tuple[str, str, int | None]] = [("poll", job.id, None)] if open_batches_exist(s, job.id) else []
    return polls + [("finalize", job.id, None)]


def _reopen(
    rt: Runtime, job_id: str, *, retry_failed: bool, force: bool, reopen: bool = False, on_progress: ProgressFn | None
) -> list[tuple[str, str, int | None]]:
    with session_scope(rt.db_url) as s:
        job = get_job(s, job_id)
        if job.state in FINAL_STATES and not reopen:
            _refuse_final(job)
        complete = job.ingest_complete
    if not complete and _ingest(rt, job_id, on_progress) is None:
        return []
    now = utcnow()
    with session_scope(rt.db_url) as s:
        job = get_job(s, job_id)
        if job.state == JobState.CANCELLING and not reopen:
            return _finish_cancel(s, rt, job, force=force, now=now)
        was = JobState(job.state)
        adaptation = (job.spec or {}).get("adaptation") or {}
        if force and adaptation.get("judging_until"):  # no worker runs the job: its judging claim is stale
            job.spec = {**job.spec, "adaptation": {k: v for k, v in adaptation.items() if k != "judging_until"}}
        reopen_states = [ItemState.CANCELLED] + ([ItemState.FAILED] if retry_failed else [])
        if reopen:
            reopen_states.append(ItemState.EXPIRED)
            reopened = s.scalar(
                select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state.in_(reopen_states))
            )
            if job.completion_window:
                job.expires_at = now + parse_window(job.completion_window)
            add_event(
                s,
                "job_reopened",
                f"resume --reopen of a {was.value} job: {reopened} items back to be sent",
                job_id=job_id,
                data={
                    "from": was.value,
                    "items": int(reopened or 0),
                    "expires_at": job.expires_at.isoformat() if job.expires_at else None,
                },
            )
        s.execute(
            update(Item)
            .where(Item.job_id == job_id, Item.state.in_(reopen_states))
            .values(
                state=case(
                    (Item.score.is_(None), ItemState.PENDING), (Item.route.is_(None), ItemState.SCORED), else_=ItemState.ROUTED
                ),
                error=None,
                dispatch=None,  # a reopened item is sent as the configuration says now
                updated_at=now,
            )
        )
        recover_lost(s, job_id=job_id, force=force, now=now, provider_of=lambda m: _provider_name(rt, m))
        if retry_failed or job.state == JobState.BUDGET_EXHAUSTED:
            s.execute(
                update(Item)
                .where(Item.job_id == job_id, Item.state == ItemState.SKIPPED_BUDGET)
                .values(state=ItemState.ROUTED, error=None, dispatch=None, updated_at=now)
            )
        counts = dict(s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all())
        open_count = sum(n for st, n in counts.items() if ItemState(st) not in ITEM_TERMINAL)
        if open_count == 0:
            return []
        lifecycle.transition(job, JobState.IN_PROGRESS)
        job.error = None
        needs_scoring = counts.get(ItemState.PENDING, 0) + counts.get(ItemState.SCORED, 0) > 0
        job.phase = Phase.SCORING if needs_scoring else Phase.GENERATING
        return open_work(s, job_id, job.phase)


def export(
    rt: Runtime,
    job_id: str,
    out: Path,
    errors: Path | None = None,
    fmt: str = "openai",
    *,
    force: bool = False,
    partial: bool = False,
    errors_in_results: bool = False,
    native_bodies: bool = False,
) -> dict[str, int]:
    """Write the job's results (and optionally its errors file); returns line counts.
    ``native_bodies``: each provider's own answer body (an Anthropic Message), not a chat.completion."""
    from jobs.ledger.export import export_job

    return export_job(
        rt.db_url,
        job_id,
        out,
        errors,
        fmt,
        force=force,
        partial=partial,
        errors_in_results=errors_in_results,
        native_bodies=native_bodies,
    )
