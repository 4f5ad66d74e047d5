"""The ledger schema. Changed only together with a migration under ``migrations/``.

Money is integer micro-USD (BIGINT) everywhere; prices are integer micro-USD per million
tokens, so ``tokens * price // 1e6`` stays exact integer arithmetic.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs.ledger.types import UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PKs


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    input_file: Mapped[str] = mapped_column(Text)
    input_format: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict] = mapped_column(JSON, doc="Everything needed to rerun: router, models, threshold rule, options.")
    router: Mapped[str] = mapped_column(String(200))
    strong_model: Mapped[str] = mapped_column(String(200))
    weak_model: Mapped[str] = mapped_column(String(200))
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    strong_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    phase: Mapped[str] = mapped_column(
        String(20),
        default="scoring",
        server_default="scoring",
        doc="scoring -> generating -> done; advanced by one conditional UPDATE.",
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    invalid: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    chunks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    budget_id: Mapped[int | None] = mapped_column(ForeignKey("budgets.id"), nullable=True, doc="Named budget drawn from.")
    job_budget_id: Mapped[int | None] = mapped_column(
        ForeignKey("budgets.id"), nullable=True, doc="The job's own cap (--budget-usd), as an anonymous budget."
    )
    on_exhausted: Mapped[str] = mapped_column(String(20), default="downgrade", server_default="downgrade")
    allocate: Mapped[str] = mapped_column(String(20), default="threshold", server_default="threshold")
    validating_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    budget_exhausted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How far ingest got (migration 0005): written with each committed batch.
    ingest_line: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Line (row) number of the last committed row."
    )
    ingest_offset: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, doc="Byte offset after the last committed row, when the reader knows it."
    )
    ingest_bytes: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, doc="Bytes of the file on disk read so far (compressed bytes), for progress vs input_size."
    )
    ingest_seq: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Valid rows staged so far: the next chunk number's base."
    )
    ingest_complete: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=true(), doc="The whole input was read; only then may a job leave validating."
    )
    input_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True, doc="Input size in bytes at ingest start.")
    input_mtime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True, doc="Input mtime at ingest start.")
    input_seekable: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), doc="False for pipes/FIFOs/stdin: resume cannot re-read it."
    )
    input_changed: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), doc="Size or mtime changed while it was being read."
    )
    # The one runner holding the job (jobs/lifecycle/lease.py).
    runner_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    runner_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    runner_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runner_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=true(), doc="Its messages reached a broker; the reaper re-enqueues only these."
    )
    # OpenAI Batch's job fields (migration 0007).
    name: Mapped[str | None] = mapped_column(String(256), nullable=True, index=True, doc="--name: what `list --name` finds.")
    batch_metadata: Mapped[dict | None] = mapped_column(
        "metadata", JSON, nullable=True, doc="--metadata k=v pairs (OpenAI: at most 16, str -> str)."
    )
    completion_window: Mapped[str | None] = mapped_column(String(20), nullable=True, doc="--completion-window as given: 24h.")
    expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, doc="created_at + completion window: unfinished items then end expired."
    )


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "custom_id"),
        Index("ix_items_job_state", "job_id", "state"),
        Index("ix_items_job_chunk", "job_id", "chunk"),
        Index("ix_items_job_updated", "job_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(Integer)
    chunk: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str] = mapped_column(String(512))
    prompt: Mapped[str] = mapped_column(Text, doc="Text the router scores: the prompt, or the messages' last user turn.")
    messages: Mapped[list | None] = mapped_column(JSON, nullable=True)
    params: Mapped[dict | None] = mapped_column(JSON, nullable=True, doc="Extra request body fields (OpenAI Batch body).")
    max_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(20))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    route: Mapped[str | None] = mapped_column(String(10), nullable=True, doc="strong | weak")
    route_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    dispatch: Mapped[str | None] = mapped_column(
        String(10), nullable=True, doc="sync: sent synchronously whatever the provider's dispatch (a poll step handed it on)."
    )
    model: Mapped[str | None] = mapped_column(String(200), nullable=True, doc="Model key that answered.")
    response: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    attempts_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Price(Base):
    """A price version: the price of ``model`` from ``valid_from`` until the next version."""

    __tablename__ = "prices"
    __table_args__ = (UniqueConstraint("model", "valid_from"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    input_micro_per_mtok: Mapped[int] = mapped_column(BigInteger)
    cached_input_micro_per_mtok: Mapped[int] = mapped_column(BigInteger)
    output_micro_per_mtok: Mapped[int] = mapped_column(BigInteger)
    cache_write_micro_per_mtok: Mapped[int | None] = mapped_column(
        BigInteger, nullable=True, doc="input written to a prompt cache (Anthropic); NULL: the input price"
    )


class Attempt(Base):
    """One provider call. Rows are only ever inserted; the price used is stored with it."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_job_item", "job_id", "item_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, doc="uuid made before sending: idempotency key")
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(200))
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    request_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_class: Mapped[str | None] = mapped_column(String(100), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    price_id: Mapped[int | None] = mapped_column(ForeignKey("prices.id"), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    provider_batch_id: Mapped[str | None] = mapped_column(
        String(40), nullable=True, doc="The provider batch that carried this call (batch dispatch); NULL for a sync call."
    )
    purpose: Mapped[str] = mapped_column(
        String(20),
        default="answer",
        server_default="answer",
        doc="answer: the item's own answer; twin, judge: an --adapt sample's weak twin and judge calls",
    )


class ProviderBatch(Base):
    """One batch uploaded to a provider's batch API (OpenAI Batch, Anthropic Message Batches).

    The row is written (``preparing``) *before* the upload, with the item ids it carries, so
    a worker killed between upload and record leaves a trace: recovery finds the upload at
    the provider by our id (its metadata, or the requests' ``custom_id`` prefix) instead of
    uploading again. States: preparing -> submitted -> settled, or failed (never uploaded).
    """

    __tablename__ = "provider_batches"
    __table_args__ = (Index("ix_provider_batches_job_id_state", "job_id", "state"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, doc="Ours; every request's custom_id is '<id>-<n>'.")
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))
    remote_id: Mapped[str | None] = mapped_column(String(200), nullable=True, doc="The provider's batch id.")
    remote_status: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="The provider's own word for it.")
    input_file_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    item_ids: Mapped[list] = mapped_column(JSON, doc="Item ids in request order: request n is item_ids[n].")
    request_count: Mapped[int] = mapped_column(Integer)
    done_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    poll_interval_s: Mapped[float] = mapped_column(Float, default=30.0, server_default="30")
    lease_until: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, doc="A 'preparing' row past this is reconciled with the provider's list."
    )
    items_lease: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, doc="The items' claim while in this batch.")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    retry_round: Mapped[int] = mapped_column(
        Integer, default=1, server_default="1", doc="1 for a first upload; n for items sent in a batch for the n-th time."
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Judgement(Base):
    """One sampled item of an adapting job (``--adapt F``): its weak twin answer and the judge's
    verdict on it against the strong answer. The sample's membership, both answers (the
    strong one is the item's outcome unless the weak one won), and the verdict that trained
    the job's router; the calls themselves are attempts of the item, charged like any other."""

    __tablename__ = "judgements"
    __table_args__ = (UniqueConstraint("item_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    judge: Mapped[str] = mapped_column(String(200), doc="Which judge: a model key, labels:FILE, sim.")
    memory: Mapped[str | None] = mapped_column(
        String(200), nullable=True, index=True, doc="--memory NAME: later jobs of that name learn from this verdict too."
    )
    strong_model: Mapped[str] = mapped_column(String(200), doc="The pair the verdict is about (memory is per pair).")
    weak_model: Mapped[str] = mapped_column(String(200))
    weak_response: Mapped[dict | None] = mapped_column(JSON, nullable=True, doc="The weak twin's answer body.")
    weak_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    verdict: Mapped[str | None] = mapped_column(
        String(20), nullable=True, doc="strong_better | weak_better | tie | unparseable | missing | failed; NULL: not judged yet"
    )
    weak_good: Mapped[float | None] = mapped_column(Float, nullable=True, doc="1: the weak answer is as good; 0: it is not.")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    weak_cost_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", doc="The twin call's cost.")
    judge_cost_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", doc="The judge calls' cost.")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    judged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InvalidRow(Base):
    __tablename__ = "invalid_rows"
    __table_args__ = (Index("ix_invalid_rows_job_line", "job_id", "line_no"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    line_no: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    field: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text, nullable=True, doc="The first 500 characters of the line.")


class Budget(Base):
    """A spending cap: named (``budget create``) or a job's own ``--budget-usd``.

    Money lives in ``BudgetWindow`` rows, one per window period, so a daily budget keeps
    its history and the CHECK constraint guards each period's cap.
    """

    __tablename__ = "budgets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10), doc="named | job")
    cap_micro_usd: Mapped[int] = mapped_column(BigInteger)
    window: Mapped[str] = mapped_column("period", String(10), doc="none | daily | weekly | monthly")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BudgetWindow(Base):
    __tablename__ = "budget_windows"
    __table_args__ = (
        UniqueConstraint("budget_id", "window_start"),
        CheckConstraint("spent_micro_usd + reserved_micro_usd <= cap_micro_usd", name="within_cap"),
        CheckConstraint("spent_micro_usd >= 0 AND reserved_micro_usd >= 0", name="non_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    cap_micro_usd: Mapped[int] = mapped_column(BigInteger)
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    overdraft_micro_usd: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0", doc="Real cost above the reservation that did not fit the cap."
    )


_FLOOR_OWED = "state <> 'open' AND floor_draw_micro_usd > 0"
"""Closed holds whose weak share the floor has not taken back yet (migration 0012)."""


class Reservation(Base):
    """Worst-case money held for one item's call until it is settled to the real cost."""

    __tablename__ = "reservations"
    __table_args__ = (
        Index("ix_reservations_state_lease", "state", "lease_until"),
        Index(
            "ix_reservations_floor_owed",
            "job_id",
            postgresql_where=text(_FLOOR_OWED),
            sqlite_where=text(_FLOOR_OWED),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    amount_micro_usd: Mapped[int] = mapped_column(BigInteger)
    job_window_id: Mapped[int | None] = mapped_column(ForeignKey("budget_windows.id"), nullable=True)
    named_window_id: Mapped[int | None] = mapped_column(ForeignKey("budget_windows.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(10), doc="open | settled | released")
    settled_micro_usd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, doc="set, durably, before the call goes out: only such holds are charged after a crash"
    )
    floor_draw_micro_usd: Mapped[int] = mapped_column(
        BigInteger,
        default=0,
        server_default="0",
        doc="the part of this hold taken from the job's weak floor; a hold whose item is sent again gives it back",
    )
    floor_kept_micro_usd: Mapped[int] = mapped_column(
        BigInteger,
        default=0,
        server_default="0",
        doc="of a released hold's floor draw, what is still reserved on its windows for the job's floor",
    )


class LedgerEvent(Base):
    """Things worth an audit line: budget alerts, exhaustion, reaper decisions."""

    __tablename__ = "ledger_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    budget_id: Mapped[int | None] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), nullable=True)
    window_id: Mapped[int | None] = mapped_column(ForeignKey("budget_windows.id", ondelete="CASCADE"), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
