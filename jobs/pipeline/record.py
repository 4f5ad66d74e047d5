"""Recording provider answers: attempts, item outcomes and budget settlement in one transaction."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from jobs.ledger.models import Job
from jobs.ledger.session import session_scope
from jobs.ledger.transient import is_integrity_error, is_transient_db_error
from jobs.ledger.types import utcnow
from jobs.ledger.writer import Outcome, attempt_row, write_outcomes
from jobs.lifecycle.states import ItemState
from jobs.money.budgets import Hold, settle
from jobs.money.pricing import PriceVersion
from jobs.money.tokens import input_token_bound
from jobs.providers.pool import check_usage
from jobs.providers.types import Attempt, CallResult, ChatRequest
from jobs.runtime import Runtime

log = logging.getLogger(__name__)

RECORD_RETRY_S = 120.0
"""How long a batch of provider answers is retried against an unreachable database before
the task gives up (the items then stay 'sent' until the reaper records them as lost)."""

Answer = tuple[int, CallResult, Hold | None]


def job_state(rt: Runtime, job_id: str) -> str:
    from jobs.lifecycle.expiry import expire_due

    expire_due(rt, job_id)  # a deadline that passed ends the job expired: the fan-out stops like on a cancel
    with session_scope(rt.db_url) as s:
        return s.scalar(select(Job.state).where(Job.id == job_id)) or ""


def db_retrying(warning: str) -> AsyncRetrying:
    """The one retry policy for the fan-out's own writes: transient database errors are
    retried with backoff for up to ``RECORD_RETRY_S``, then the error is raised."""
    return AsyncRetrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and is_transient_db_error(exc)),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        stop=stop_after_delay(RECORD_RETRY_S),
        reraise=True,
        before_sleep=lambda _: log.warning("%s", warning),
    )


async def record_with_retry(
    rt: Runtime, job_id: str, batch: list[Answer], prices: dict[str, PriceVersion], lease: datetime | None
) -> str:
    """Answers already paid for are kept in memory and retried while the database is away
    (a restart, a failover), instead of being lost and sent again after the lease.

    An integrity error on a retry means the previous try's commit landed but its
    acknowledgement was lost: the batch is recorded, so it is not written again.
    """
    tried = 0
    async for attempt in db_retrying(f"job {job_id}: database unreachable while recording {len(batch)} results; retrying"):
        with attempt:
            tried += 1
            try:
                return await asyncio.to_thread(record_results, rt, job_id, batch, prices, lease)
            except Exception as exc:
                if tried > 1 and is_integrity_error(exc):
                    return await asyncio.to_thread(job_state, rt, job_id)
                raise
    raise AssertionError("unreachable: tenacity either returns or reraises")


def bound_estimated_usage(attempt: Attempt, request: ChatRequest) -> None:
    """A response without ``usage`` is counted locally; a local count can exceed what the
    provider could have billed (another tokenizer), so it is bounded by what the request
    allowed: ``max_tokens`` of output and the byte bound of the input. The attempt stays
    flagged ``usage_estimated``."""
    if request.max_tokens and attempt.completion_tokens > request.max_tokens:
        attempt.completion_tokens = request.max_tokens
    attempt.prompt_tokens = min(attempt.prompt_tokens, input_token_bound(request.messages))


def bound_usage(rt: Runtime, attempt: Attempt, request: ChatRequest) -> None:
    """Before anything is charged: the provider's usage within what the request allows
    (:func:`jobs.providers.pool.check_usage`: never negative, never above the bounds, flagged
    when capped; the pool checks it when parsing, this is the ledger's own guard), then a local
    count bounded as :func:`bound_estimated_usage` says."""
    max_tokens = request.max_tokens if request.max_tokens and request.max_tokens > 0 else rt.config.max_tokens_for(attempt.model)
    check_usage(attempt, request, max_tokens)
    if attempt.usage_estimated:
        bound_estimated_usage(attempt, request)


def record_results(
    rt: Runtime, job_id: str, batch: list[Answer], prices: dict[str, PriceVersion], lease: datetime | None = None
) -> str:
    """Write attempts and item outcomes for a batch in one transaction; returns the job state.

    Attempts are always inserted and their cost always added to the item (a call that was
    made is in the ledger). The item's outcome is written only while the item is still held
    by this claim (``lease``): if the reaper declared it lost and another worker re-sent it,
    the late answer is recorded as a duplicate attempt and does not overwrite the outcome.
    """
    with session_scope(rt.db_url) as s:
        record_in_session(s, rt, job_id, batch, prices, lease)
        return s.scalar(select(Job.state).where(Job.id == job_id)) or ""


def charged_attempts(
    rt: Runtime, job_id: str, item_id: int, result: CallResult, prices: dict[str, PriceVersion], purpose: str = "answer"
) -> tuple[list[dict], int]:
    """The ``attempts`` rows of one result, each charged at its model's price; and their total."""
    rows = []
    total = 0
    for a in result.attempts:
        price = prices.get(a.model)
        bound_usage(rt, a, result.request)
        cost = (
            max(price.cost_micro_usd(a.prompt_tokens, a.completion_tokens, a.cached_tokens, a.cache_write_tokens), 0)
            if price
            else 0
        )
        total += cost
        rows.append(attempt_row(job_id, item_id, a, cost, price.id if price else None, purpose))
    return rows, total


def record_in_session(
    s: Session,
    rt: Runtime,
    job_id: str,
    batch: list[Answer],
    prices: dict[str, PriceVersion],
    lease: datetime | None,
    purpose: str = "answer",
) -> None:
    """:func:`record_results` inside the caller's transaction (a provider batch settles its
    results and flips its own state in the same commit, so it is settled exactly once)."""
    now = utcnow()
    attempt_rows = []
    outcomes = []
    settles: list[tuple[Hold, int]] = []
    for item_id, result, hold in batch:
        rows, total_cost = charged_attempts(rt, job_id, item_id, result, prices, purpose)
        attempt_rows.extend(rows)
        final = result.attempts[-1] if result.attempts else None
        answered = final is not None and result.ok
        outcomes.append(
            Outcome(
                item_id=item_id,
                state=ItemState.SUCCEEDED if result.ok else ItemState.FAILED,
                model=result.model,
                response=result.body,
                status_code=result.status_code,
                error=None if result.ok else (result.error or "failed"),
                prompt_tokens=final.prompt_tokens if final and answered else 0,
                completion_tokens=final.completion_tokens if final and answered else 0,
                cost_micro_usd=total_cost,
                attempts=len(result.attempts),
            )
        )
        if hold is not None:
            settles.append((hold, total_cost))
    # windows locked in one order in every transaction (an older named window first at a
    # rollover, as the floor takes them): in answer order, two batches could deadlock
    for hold, cost in sorted(settles, key=lambda x: x[0].window_ids):
        settle(s, hold, cost, job_id=job_id)
    write_outcomes(s, attempt_rows, outcomes, now, lease)
