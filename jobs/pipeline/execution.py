"""The task functions: score a chunk, route the job, generate a chunk, finalize.

The same functions run inline in the CLI (embedded mode) and inside Celery tasks
(``worker/``). Each is idempotent under redelivery: it only touches items still in the
state it expects, guarded in SQL, and the job advances between phases by one conditional
UPDATE of ``jobs.phase`` that exactly one caller wins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
from sqlalchemy import func, select, update

from jobs.ledger.models import Budget, Item, Job
from jobs.ledger.session import session_scope
from jobs.money.admission import BudgetPlan, admit, budget_plan
from jobs.money.budgets import settle
from jobs.ledger.types import utcnow
from jobs.ledger.writer import write_outcomes
from jobs.money.pricing import PriceVersion, sync_prices
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime
from jobs.lifecycle.states import ITEM_TERMINAL, ItemState, JobState
from jobs.lifecycle import transitions as lifecycle

log = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=15)
"""Default lease of a 'sent' item; ``Settings.send_lease_s`` overrides it per process."""
RECORD_RETRY_S = 120.0
"""How long a batch of provider answers is retried against an unreachable database before
the task gives up (the items then stay 'sent' until the reaper records them as lost)."""
ADMIT_BATCH = 16
DEFER_SLEEP_S = 0.2
DEFER_MAX_S = 60.0
FLUSH_EVERY = 200
FLUSH_SECONDS = 0.5


# ---------------------------------------------------------------- scoring


def score_chunk(rt: Runtime, queue: TaskQueue, job_id: str, chunk: int) -> int:
    """Score the chunk's pending items; returns how many were scored by this call."""
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or JobState(job.state).terminal or job.state == JobState.CANCELLING:
            return 0
        rows = s.execute(
            select(Item.id, Item.prompt)
            .where(Item.job_id == job_id, Item.chunk == chunk, Item.state == ItemState.PENDING)
            .order_by(Item.id)
        ).all()
        router_spec = job.router
    scored = 0
    if rows:
        scores = np.asarray(rt.router(router_spec).score([r.prompt for r in rows]), dtype=np.float64)
        with session_scope(rt.db_url) as s:
            s.execute(
                update(Item).where(Item.state == ItemState.PENDING),
                [
                    {"id": r.id, "score": float(sc), "state": ItemState.SCORED, "updated_at": utcnow()}
                    for r, sc in zip(rows, scores)
                ],
                execution_options={"synchronize_session": False},
            )
        scored = len(rows)
    if _count(rt, job_id, [ItemState.PENDING]) == 0:
        route_job(rt, queue, job_id)
    return scored


def _count(rt: Runtime, job_id: str, states: Sequence[str]) -> int:
    with session_scope(rt.db_url) as s:
        return s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state.in_(states))) or 0


# ---------------------------------------------------------------- routing


def route_job(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """Once every item is scored: fix the threshold, route every item, enqueue generation.

    Returns True for the one caller that made the transition.
    """
    with session_scope(rt.db_url) as s:
        won = s.execute(
            update(Job).where(Job.id == job_id, Job.phase == "scoring").values(phase="generating")
        ).rowcount
        if not won:
            return False
        job = s.get(Job, job_id)
        if job.allocate == "budget":
            allocate_items(rt, s, job)
        else:
            threshold = job.threshold
            if threshold is None:
                from routing import threshold_for_strong_share

                scores = np.fromiter(
                    s.scalars(select(Item.score).where(Item.job_id == job_id, Item.score.is_not(None))), dtype=np.float64
                )
                threshold = threshold_for_strong_share(scores, job.strong_share if job.strong_share is not None else 0.5)
                job.threshold = threshold
            route_scored_items(s, job, threshold)
        chunks = job.chunks
    for chunk in range(chunks):
        queue.enqueue("generate", job_id, chunk)
    return True


def allocate_items(rt: Runtime, s, job: Job) -> None:
    """``--allocate budget``: the strong set that maximises expected gain under the cap.

    Costs are the same worst cases the reservations will hold, so an allocation that fits
    the cap also passes every reservation; the weak call of every item is paid for first.
    """
    from routing.allocation import allocate_budget

    from jobs.money.admission import worst_case_micro
    from jobs.money.budgets import current_window

    prices = sync_prices(s, rt.config, sorted({job.strong_model, job.weak_model} | _fallbacks(rt, {job.strong_model, job.weak_model})))
    default_max = job.spec.get("max_tokens") or rt.config.defaults.max_tokens
    rows = s.execute(
        select(Item.id, Item.prompt, Item.messages, Item.max_tokens, Item.score)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .order_by(Item.id)
    ).all()
    cap = None
    for bid in (job.job_budget_id, job.budget_id):
        if bid is not None:
            w = current_window(s, s.get(Budget, bid))
            room = w.cap_micro_usd - w.spent_micro_usd - w.reserved_micro_usd
            cap = room if cap is None else min(cap, room)
    n = len(rows)
    p = np.fromiter((r.score for r in rows), dtype=np.float64, count=n)
    cs = np.empty(n)
    cw = np.empty(n)
    for i, r in enumerate(rows):
        messages = r.messages or [{"role": "user", "content": r.prompt}]
        cs[i] = worst_case_micro(messages, r.max_tokens or rt.config.model(job.strong_model).max_tokens or default_max, job.strong_model, prices, rt)
        cw[i] = worst_case_micro(messages, r.max_tokens or rt.config.model(job.weak_model).max_tokens or default_max, job.weak_model, prices, rt)
    alloc = allocate_budget(p, cs, cw, float(cap if cap is not None else np.inf))
    now = utcnow()
    updates = [
        {
            "id": r.id,
            "state": ItemState.ROUTED,
            "route": "strong" if strong else "weak",
            "model": job.strong_model if strong else job.weak_model,
            "route_reason": "budget_allocation" if alloc.affordable else "budget_allocation:unaffordable",
            "updated_at": now,
        }
        for r, strong in zip(rows, alloc.strong)
    ]
    if updates:
        s.execute(update(Item), updates, execution_options={"synchronize_session": False})
    job.spec = {**job.spec, "allocation": {"strong": int(alloc.strong.sum()), "planned_worst_case_micro_usd": int(alloc.cost), "cap_micro_usd": None if cap is None else int(cap)}}


def route_scored_items(s, job: Job, threshold: float) -> None:
    """score >= threshold -> strong, else weak; one UPDATE for the whole job."""
    from sqlalchemy import case

    is_strong = Item.score >= threshold
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .values(
            state=ItemState.ROUTED,
            threshold=threshold,
            route=case((is_strong, "strong"), else_="weak"),
            model=case((is_strong, job.strong_model), else_=job.weak_model),
            route_reason=case((is_strong, "score>=threshold"), else_="score<threshold"),
            updated_at=utcnow(),
        )
    )


# ---------------------------------------------------------------- generation


def generate_chunk(rt: Runtime, queue: TaskQueue, job_id: str, chunk: int) -> int:
    """Send the chunk's routed items to their models; returns how many were sent."""
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.state != JobState.IN_PROGRESS:
            return 0
        now = utcnow()
        rows = s.execute(
            select(Item.id, Item.custom_id, Item.prompt, Item.messages, Item.params, Item.max_tokens, Item.model)
            .where(Item.job_id == job_id, Item.chunk == chunk, Item.state == ItemState.ROUTED)
            .order_by(Item.id)
        ).all()
        lease = now + _send_lease(rt)
        if rows:
            # Mark sent before sending: a crash after this leaves a visible, leased 'sent' item.
            # Only the rows this UPDATE claimed are sent: a duplicate delivery of the same chunk
            # running at the same time gets the others' ids back from RETURNING, not its own.
            claimed = set(
                s.scalars(
                    update(Item)
                    .where(Item.id.in_([r.id for r in rows]), Item.state == ItemState.ROUTED)
                    .values(state=ItemState.SENT, lease_until=lease, updated_at=now)
                    .returning(Item.id),
                    execution_options={"synchronize_session": False},
                )
            )
            rows = [r for r in rows if r.id in claimed]
        models = {r.model for r in rows} | {job.weak_model}
        prices = sync_prices(s, rt.config, sorted(models | _fallbacks(rt, models)))
        default_max = job.spec.get("max_tokens") or rt.config.defaults.max_tokens
        plan = budget_plan(job)
    if rows:
        asyncio.run(_fan_out(rt, job_id, rows, prices, default_max, lease, plan))
    maybe_finalize(rt, job_id)
    return len(rows)


def _send_lease(rt: Runtime) -> timedelta:
    seconds = getattr(rt.settings, "send_lease_s", None)
    return timedelta(seconds=seconds) if seconds else SEND_LEASE


def _fallbacks(rt: Runtime, models: set[str]) -> set[str]:
    out: set[str] = set()
    for m in models:
        while (fb := rt.config.model(m).fallback) and fb not in out:
            out.add(fb)
            m = fb
    return out


def _request_for(adm) -> "ChatRequest":  # noqa: F821
    from jobs.providers import ChatRequest

    row = adm.row
    return ChatRequest(
        custom_id=row.custom_id, model=adm.model, messages=adm.messages, max_tokens=adm.max_tokens, params=dict(row.params or {})
    )


async def _fan_out(
    rt: Runtime, job_id: str, rows, prices: dict[str, PriceVersion], default_max: int, lease=None, plan: BudgetPlan | None = None
) -> None:
    from collections import deque

    from jobs.providers import ProviderPool

    pool = ProviderPool(rt.config, base_urls=rt.base_urls(), rate_limiter=_rate_limiter(rt))
    todo = deque(rows)  # claimed, not yet admitted
    ready: deque = deque()  # admitted (money held when the job has a budget), not yet sent
    admit_lock = asyncio.Lock()
    plan = plan or BudgetPlan(None, None, "downgrade", "", "")
    results: list = []
    cancelled = asyncio.Event()
    flush_wanted = asyncio.Event()
    flushed = asyncio.Event()
    finishing = False
    failure: list[BaseException] = []

    async def flusher() -> None:
        """Writes answers to the ledger in batches, off the senders' path: a sender never
        waits for the database, only for its provider."""
        while True:
            try:
                await asyncio.wait_for(flush_wanted.wait(), FLUSH_SECONDS)
            except TimeoutError:
                pass
            flush_wanted.clear()
            if results:
                batch = results[:]
                results.clear()
                try:
                    state = await _record_with_retry(rt, job_id, batch, prices, lease)
                except BaseException as exc:  # noqa: BLE001 - surfaced after the senders stop
                    failure.append(exc)
                    cancelled.set()
                    flushed.set()
                    return
                if state == JobState.CANCELLING:
                    cancelled.set()
                flushed.set()
            if finishing and not results:
                return

    async def flush_now() -> None:
        flushed.clear()
        flush_wanted.set()
        await flushed.wait()

    async def watch_cancel() -> None:
        # Other workers' cancels arrive through the database: poll it so that no new call
        # starts more than ``cancel_poll_s`` after ``cancel`` even while no answer comes back.
        every = getattr(rt.settings, "cancel_poll_s", 1.0)
        while not cancelled.is_set():
            await asyncio.sleep(every)
            try:
                state = await asyncio.to_thread(_job_state, rt, job_id)
            except Exception:  # noqa: BLE001 - a DB blip must not kill the sends; next poll retries
                log.warning("job %s: cannot read the job state to check for a cancel", job_id, exc_info=True)
                continue
            if state != JobState.IN_PROGRESS:
                cancelled.set()

    deferred: deque = deque()  # affordable once holds in flight settle
    in_flight = 0
    answered = asyncio.Event()

    async def next_admitted():
        nonlocal in_flight
        async with admit_lock:
            waited = 0.0
            while not ready and not cancelled.is_set():
                final = False
                if todo:
                    batch = [todo.popleft() for _ in range(min(ADMIT_BATCH, len(todo)))]
                elif deferred:
                    # Money is held for calls in flight (here or in other workers): let them
                    # settle, then try again; give up (apply the policy) after DEFER_MAX_S.
                    if results:
                        await flush_now()
                    elif in_flight:
                        answered.clear()
                        await answered.wait()
                    else:
                        await asyncio.sleep(DEFER_SLEEP_S)
                        waited += DEFER_SLEEP_S
                    final = waited >= DEFER_MAX_S
                    batch = list(deferred)
                    deferred.clear()
                else:
                    return None
                if plan.active:
                    outcome = await asyncio.to_thread(admit, rt, job_id, batch, plan, prices, default_max, final)
                else:  # no budget: admission is pure bookkeeping, no database
                    outcome = admit(rt, job_id, batch, plan, prices, default_max, final)
                ready.extend(outcome.admitted)
                deferred.extend(outcome.deferred)
                if outcome.stop:
                    cancelled.set()
            if not ready or cancelled.is_set():
                return None
            in_flight += 1
            return ready.popleft()

    async def worker() -> None:
        nonlocal in_flight
        while not cancelled.is_set():
            adm = await next_admitted()
            if adm is None:
                return
            try:
                result = await pool.complete(_request_for(adm))
            finally:
                in_flight -= 1
            results.append((adm.row.id, result, adm.hold))
            answered.set()
            if len(results) >= FLUSH_EVERY:
                flush_wanted.set()

    width = max(p.concurrency for p in rt.config.providers.values()) * max(1, len(rt.config.providers))
    watcher = asyncio.create_task(watch_cancel())
    writer = asyncio.create_task(flusher())
    try:
        await asyncio.gather(*(worker() for _ in range(min(width, len(rows)))))
    finally:
        finishing = True
        flush_wanted.set()
        await writer
        watcher.cancel()
        await pool.aclose()
    if failure:
        raise failure[0]
    if cancelled.is_set():
        unsent = [r.id for r in todo] + [r.id for r in deferred] + [a.row.id for a in ready]
        holds = [a.hold for a in ready if a.hold is not None]
        await asyncio.to_thread(lifecycle.cancel_unsent_items, rt.db_url, job_id, unsent, holds)


def _rate_limiter(rt: Runtime):
    try:
        from jobs.providers.ratelimit import limiter_for
    except ImportError:
        return None
    return limiter_for(rt.config, rt.settings.broker_url)


def _job_state(rt: Runtime, job_id: str) -> str:
    with session_scope(rt.db_url) as s:
        return s.scalar(select(Job.state).where(Job.id == job_id)) or ""


async def _record_with_retry(rt: Runtime, job_id: str, batch: list, prices: dict[str, PriceVersion], lease) -> str:
    """Answers already paid for are kept in memory and retried while the database is away
    (a restart, a failover), instead of being lost and sent again after the lease."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_RETRY_S
    delay = 0.2
    retried = False
    while True:
        try:
            return await asyncio.to_thread(record_results, rt, job_id, batch, prices, lease)
        except Exception as exc:
            if retried and _is_integrity_error(exc):
                # The commit of the previous try landed but its acknowledgement was lost.
                return await asyncio.to_thread(_job_state, rt, job_id)
            if not _is_connection_error(exc) or loop.time() > deadline:
                raise
            retried = True
            log.warning("job %s: database unreachable while recording %d results; retrying", job_id, len(batch))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _driver_errors(*names: str) -> tuple[type[BaseException], ...]:
    """psycopg's own classes: the ledger writer's COPY path raises them unwrapped."""
    try:
        import psycopg
    except ImportError:
        return ()
    return tuple(getattr(psycopg, n) for n in names)


def _is_connection_error(exc: Exception) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError, *_driver_errors("OperationalError", "InterfaceError")))


def _is_integrity_error(exc: Exception) -> bool:
    from sqlalchemy.exc import IntegrityError

    return isinstance(exc, (IntegrityError, *_driver_errors("IntegrityError")))


def _bound_estimated_usage(attempt, request) -> None:
    """A response without ``usage`` is counted locally; a local count can exceed what the
    provider could have billed (another tokenizer), so it is bounded by what the request
    allowed: ``max_tokens`` of output and the byte bound of the input. The attempt stays
    flagged ``usage_estimated``."""
    from jobs.money.admission import input_token_bound

    if request.max_tokens and attempt.completion_tokens > request.max_tokens:
        attempt.completion_tokens = request.max_tokens
    attempt.prompt_tokens = min(attempt.prompt_tokens, input_token_bound(request.messages))


def record_results(rt: Runtime, job_id: str, batch: list, prices: dict[str, PriceVersion], lease=None) -> str:
    """Write attempts and item outcomes for a batch in one transaction; returns the job state.

    Attempts are always inserted and their cost always added to the item (a call that was
    made is in the ledger). The item's outcome is written only while the item is still held
    by this claim (``lease``): if the reaper declared it lost and another worker re-sent it,
    the late answer is recorded as a duplicate attempt and does not overwrite the outcome.
    """
    now = utcnow()
    with session_scope(rt.db_url) as s:
        attempt_rows = []
        outcomes = []
        for item_id, result, hold in batch:
            total_cost = 0
            for a in result.attempts:
                price = prices.get(a.model)
                if a.usage_estimated:
                    _bound_estimated_usage(a, result.request)
                cost = price.cost_micro_usd(a.prompt_tokens, a.completion_tokens, a.cached_tokens) if price else 0
                total_cost += cost
                attempt_rows.append(
                    {
                        "id": a.attempt_id,
                        "job_id": job_id,
                        "item_id": item_id,
                        "attempt_no": a.attempt_no,
                        "model": a.model,
                        "provider": a.provider,
                        "is_fallback": a.is_fallback,
                        "request_id": a.request_id,
                        "status_code": a.status_code,
                        "error_class": a.error_class,
                        "error_message": a.error_message,
                        "latency_ms": a.latency_ms,
                        "prompt_tokens": a.prompt_tokens,
                        "cached_tokens": a.cached_tokens,
                        "completion_tokens": a.completion_tokens,
                        "usage_estimated": a.usage_estimated,
                        "cost_micro_usd": cost,
                        "price_id": price.id if price else None,
                        "started_at": a.started_at,
                        "finished_at": a.finished_at,
                    }
                )
            final = result.attempts[-1] if result.attempts else None
            outcomes.append(
                {
                    "b_id": item_id,
                    "state": ItemState.SUCCEEDED if result.ok else ItemState.FAILED,
                    "model": result.model,
                    "response": result.body,
                    "status_code": result.status_code,
                    "error": None if result.ok else (result.error or "failed"),
                    "prompt_tokens": final.prompt_tokens if final and result.ok else 0,
                    "completion_tokens": final.completion_tokens if final and result.ok else 0,
                    "b_cost": total_cost,
                    "b_n": len(result.attempts),
                }
            )
            if hold is not None:
                settle(s, hold, total_cost, job_id=job_id)
        write_outcomes(s, attempt_rows, outcomes, now, lease)
        return s.scalar(select(Job.state).where(Job.id == job_id)) or ""


# ---------------------------------------------------------------- finishing


def maybe_finalize(rt: Runtime, job_id: str) -> bool:
    """Close the job when no item is open; exactly one caller wins."""
    open_states = [st for st in ItemState if st not in ITEM_TERMINAL]
    if _count(rt, job_id, open_states):
        return False
    with session_scope(rt.db_url) as s:
        won = s.execute(update(Job).where(Job.id == job_id, Job.phase == "generating").values(phase="done")).rowcount
        if not won:
            return False
        job = s.get(Job, job_id)
        if job.state == JobState.CANCELLING:
            lifecycle.transition(job, JobState.CANCELLED)
        elif job.state == JobState.IN_PROGRESS:
            lifecycle.transition(job, JobState.FINALIZING)
            lifecycle.transition(job, JobState.COMPLETED)
    return True


TASKS = {"score": score_chunk, "generate": generate_chunk}


def run_task(rt: Runtime, queue: TaskQueue, task: str, job_id: str, chunk: int | None) -> None:
    if task == "route":
        route_job(rt, queue, job_id)
    elif task == "finalize":
        maybe_finalize(rt, job_id)
    else:
        TASKS[task](rt, queue, job_id, chunk if chunk is not None else 0)
