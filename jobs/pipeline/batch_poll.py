"""Polling provider batches, and settling every item from their results exactly once.

The ``poll`` step of a job looks at its provider batches that are due:

* ``submitted`` ones are retrieved (and cancelled at the provider once the job is no
  longer running); the wait between two polls doubles from ``batch_poll_s`` up to
  ``batch_poll_max_s``;
* ``preparing`` ones whose uploader's lease ran out are *reconciled*: found at the provider
  by our id (OpenAI keeps our metadata; for Anthropic, which keeps none, a batch of the
  same size created since, whose results carry our ``custom_id`` prefix), or uploaded if
  the provider has none — never uploaded twice.

A batch that ended is settled in ONE transaction: it flips ``submitted`` -> ``settled``
under a conditional UPDATE (a second poller, a redelivery, finds nothing to do), and in
the same commit every answered line becomes an attempt charged at the batch price, its
item's outcome and its hold's settlement. Lines without an answer (expired, cancelled, a
429 or 5xx, missing) release their holds and follow the provider's ``batch_retry``: sent
at once synchronously, put in a new batch, or failed; on a job no longer running they end
as its unsent items do (cancelled, expired).

Only a poll that advanced some batch queues the next one, so the chain never multiplies;
the reaper and ``resume`` start it again if a worker died holding it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, or_, select, update

from jobs.ledger.models import Attempt, Item, Job, ProviderBatch, Reservation
from jobs.ledger.provider_batches import next_poll_delay
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, JobState
from jobs.money.budgets import FLOOR_PREFIX, hold_of, release
from jobs.money.pricing import sync_prices
from jobs.pipeline.batch_dispatch import (
    FORCED_SYNC,
    chat_request,
    client_of,
    dispatch_of,
    mark_submitted,
    numbered,
    prepare_lease,
    submit_recorded,
)
from jobs.runtime import Runtime

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from jobs.pipeline.tasks import TaskQueue
    from jobs.providers.batch_api import BatchResult, RemoteBatch

log = logging.getLogger(__name__)

_inline_deadline: ContextVar[InlineClock | None] = ContextVar("routebatch_inline_deadline", default=None)
"""When the running poll step stops answering unanswered lines itself (``time.monotonic``):
set once per step, so two batches settled by one step share its time."""

DUE_SLACK = timedelta(seconds=1)
"""A poll delivered this much before its batch's time still polls it (clocks, countdown rounding)."""
BATCH_ROUNDS_MAX = 3
"""``batch_retry = "batch"``: an item goes in at most this many provider batches, then synchronously
(a provider that expires every batch part-way must not keep a job open forever)."""
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
ITEM_COLUMNS = (Item.id, Item.chunk, Item.custom_id, Item.prompt, Item.messages, Item.params, Item.max_tokens, Item.model)


@dataclass
class Retry:
    """Items of a provider batch that got no answer, after ``batch_retry``: rows to send
    now (claimed under ``lease``), synchronously or (``batch_round`` > 0) in a new provider
    batch of that round."""

    rows: list[Any] = field(default_factory=list)
    lease: datetime | None = None
    batch_round: int = 0


def _claim(s: Session, job_id: str, now: datetime, rt: Runtime) -> tuple[list[ProviderBatch], list[ProviderBatch]]:
    """(due submitted batches, stale preparing ones), each advanced by a conditional UPDATE so
    that two pollers never work on the same batch at once."""
    due: list[ProviderBatch] = []
    stale: list[ProviderBatch] = []
    rows = s.scalars(
        select(ProviderBatch).where(
            ProviderBatch.job_id == job_id,
            or_(
                (ProviderBatch.state == "submitted") & (ProviderBatch.next_poll_at <= now + DUE_SLACK),
                (ProviderBatch.state == "preparing") & (ProviderBatch.lease_until <= now),
            ),
        )
    ).all()
    for pb in rows:
        if pb.state == "submitted":
            prov = rt.config.providers[pb.provider]
            interval = min(pb.poll_interval_s * 2, prov.batch_poll_max_s)
            won = rowcount(
                s.execute(
                    update(ProviderBatch)
                    .where(ProviderBatch.id == pb.id, ProviderBatch.next_poll_at == pb.next_poll_at)
                    .values(next_poll_at=now + timedelta(seconds=pb.poll_interval_s), poll_interval_s=interval)
                )
            )
            if won:
                due.append(pb)
        else:
            won = rowcount(
                s.execute(
                    update(ProviderBatch)
                    .where(ProviderBatch.id == pb.id, ProviderBatch.lease_until == pb.lease_until)
                    .values(lease_until=now + prepare_lease(rt, pb.provider))
                )
            )
            if won:
                stale.append(pb)
    for pb in due + stale:
        s.expunge(pb)
    return due, stale


def poll_batches(rt: Runtime, queue: TaskQueue, job_id: str) -> int:
    """The ``poll`` step; returns how many provider batches it settled."""
    token = _inline_deadline.set(InlineClock(time.monotonic() + inline_budget_s(rt)))  # one clock for the whole step
    try:
        return _poll_batches(rt, queue, job_id)
    finally:
        _inline_deadline.reset(token)


def _poll_batches(rt: Runtime, queue: TaskQueue, job_id: str) -> int:
    from jobs.pipeline.finalize import maybe_finalize

    now = utcnow()
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None:
            return 0
        stopping = job.state != JobState.IN_PROGRESS
        due, stale = _claim(s, job_id, now, rt)
        # ``auto`` dispatch near the deadline: what the provider has not answered yet goes sync
        late = {pb.id for pb in due if dispatch_of(rt.config, job, pb.model, now) == "sync"}
    settled = 0
    for pb in stale:
        _reconcile(rt, queue, pb)
    for pb in due:
        settled += _poll_one(rt, queue, pb, stopping or pb.id in late)
    if due or stale:
        with session_scope(rt.db_url) as s:
            delay = next_poll_delay(s, job_id, utcnow())
        if delay is not None:
            queue.enqueue("poll", job_id, None, delay)
    maybe_finalize(rt, job_id)
    return settled


def _poll_one(rt: Runtime, queue: TaskQueue, pb: ProviderBatch, stopping: bool) -> int:
    """Retrieve ``pb``; cancel it at the provider when ``stopping`` (the job stopped, or
    ``auto`` dispatch reached its deadline margin); settle it once it has ended."""
    from jobs.providers.batch_api import ENDED

    client = client_of(rt, pb.provider)
    try:
        assert pb.remote_id is not None  # a submitted batch has one
        remote = client.retrieve(pb.remote_id)
        if stopping and remote.phase != ENDED and not pb.cancel_requested:
            remote = client.cancel(pb.remote_id)
            with session_scope(rt.db_url) as s:
                s.execute(update(ProviderBatch).where(ProviderBatch.id == pb.id).values(cancel_requested=True))
        if remote.phase != ENDED:
            with session_scope(rt.db_url) as s:
                s.execute(
                    update(ProviderBatch)
                    .where(ProviderBatch.id == pb.id, ProviderBatch.state == "submitted")
                    .values(remote_status=remote.status, done_count=remote.done, failed_count=remote.failed)
                )
            return 0
        results = list(client.results(remote))
    except Exception as exc:  # the provider or the network: the next poll tries again
        log.warning("provider batch %s (%s): poll failed: %s", pb.id, pb.remote_id, exc)
        return 0
    finally:
        client.close()
    return settle(rt, queue, pb, remote, results)


def _index(pb_id: str, results: list[BatchResult], n: int) -> dict[int, BatchResult]:
    """Result lines by request number; lines that are not ours (or repeated) are ignored."""
    prefix = pb_id + "-"
    out: dict[int, BatchResult] = {}
    for line in results:
        tail = line.custom_id[len(prefix) :] if line.custom_id.startswith(prefix) else ""
        if tail.isdigit() and int(tail) < n:
            out.setdefault(int(tail), line)
    return out


def _open_holds(s: Session, item_ids: list[int]) -> dict[int, Any]:
    return {
        res.item_id: hold_of(res)
        for res in s.scalars(
            select(Reservation).where(
                Reservation.item_id.in_(item_ids), Reservation.state == "open", ~Reservation.id.startswith(FLOOR_PREFIX)
            )
        )
    }


def settle(rt: Runtime, queue: TaskQueue, pb: ProviderBatch, remote: RemoteBatch, results: list[BatchResult]) -> int:
    """Settle an ended provider batch from its result lines, exactly once; returns 1 if this
    call settled it."""
    from jobs.pipeline.record import charged_attempts, record_in_session
    from jobs.providers import ProviderPool

    cfg = rt.config
    pool = ProviderPool(cfg)
    lines = _index(pb.id, results, pb.request_count)
    now = utcnow()
    started = pb.submitted_at or pb.created_at
    with session_scope(rt.db_url) as s:
        won = rowcount(
            s.execute(
                update(ProviderBatch)
                .where(ProviderBatch.id == pb.id, ProviderBatch.state == "submitted")
                .values(
                    state="settled",
                    remote_status=remote.status,
                    output_file_id=remote.output_file_id,
                    error_file_id=remote.error_file_id,
                    done_count=remote.done,
                    failed_count=remote.failed,
                    ended_at=now,
                    settled_at=now,
                )
            )
        )
        if not won:
            return 0
        job = s.get_one(Job, pb.job_id)
        job_max = (job.spec or {}).get("max_tokens")
        prices = sync_prices(s, cfg, cfg.models_with_fallbacks([pb.model]), batch=True)
        items = {r.id: r for r in s.execute(select(*ITEM_COLUMNS).where(Item.id.in_(pb.item_ids), Item.state == ItemState.SENT))}
        holds = _open_holds(s, list(items))
        answered = []
        missing: dict[int, str] = {}
        extra_attempts: list[dict] = []
        for n, item_id in enumerate(pb.item_ids):
            row = items.get(item_id)
            if row is None:
                continue  # settled elsewhere (cancelled by the user, failed by a step)
            request = chat_request(cfg, pb.model, row, job_max)
            line = lines.get(n)
            if line is None:
                missing[item_id] = f"no result in provider batch {pb.remote_id} ({remote.status})"
                continue
            result = pool.batch_line_result(
                request,
                line.status_code,
                line.body,
                line.error_message or line.error_code,
                provider_batch_id=pb.id,
                started_at=started,
                finished_at=now,
            )
            if result.ok or (result.status_code is not None and result.status_code not in RETRYABLE_STATUS):
                answered.append((item_id, result, holds.get(item_id)))
                continue
            rows, _ = charged_attempts(rt, pb.job_id, item_id, result, prices)  # a 5xx line: in the ledger, at no cost
            extra_attempts.extend(rows)
            missing[item_id] = f"provider batch {pb.remote_id} ({remote.status}): {line.error_code or result.error}"
        record_in_session(s, rt, pb.job_id, answered, prices, pb.items_lease)
        if extra_attempts:
            s.execute(insert(Attempt), extra_attempts)
        retry = _retry(s, rt, job, pb, missing, holds)
    send_again(rt, queue, pb.job_id, retry)
    return 1


def _retry(s: Session, rt: Runtime, job: Job, pb: ProviderBatch, missing: dict[int, str], holds: dict[int, Any]) -> Retry:
    """Items of ``pb`` that got no answer: release their holds and apply ``batch_retry``."""
    from jobs.lifecycle import transitions

    if not missing:
        return Retry()
    now = utcnow()
    ids = list(missing)
    for item_id in ids:
        hold = holds.get(item_id)
        if hold is not None:
            release(s, hold, note="provider batch returned no answer: released")
    policy = rt.config.providers[pb.provider].batch_retry if job.state == JobState.IN_PROGRESS else "stop"
    if policy != "stop" and dispatch_of(rt.config, job, pb.model, now) == "sync":
        policy = "sync"  # ``auto`` near the deadline: answered now, a new batch would not end in time
    guard = (Item.id.in_(ids), Item.state == ItemState.SENT)
    if policy == "stop":
        s.execute(
            update(Item).where(*guard).values(lease_until=None, updated_at=now, **transitions.unsent_outcome(job)),
            execution_options={"synchronize_session": False},
        )
        return Retry()
    if policy == "fail":
        for item_id, reason in missing.items():
            s.execute(
                update(Item)
                .where(Item.id == item_id, Item.state == ItemState.SENT)
                .values(state=ItemState.FAILED, error=reason[:500], lease_until=None, updated_at=now)
            )
        return Retry()
    batch_round = pb.retry_round + 1 if policy == "batch" and pb.retry_round < BATCH_ROUNDS_MAX else 0
    lease = now + timedelta(seconds=rt.settings.send_lease_s)
    # bound for a synchronous send: marked in the same write, so a step killed before it sent
    # them leaves them (to the reaper, then generate) marked, not for a new batch of round 1
    mark = {"dispatch": FORCED_SYNC} if batch_round == 0 else {}
    s.execute(
        update(Item).where(*guard).values(lease_until=lease, updated_at=now, **mark),
        execution_options={"synchronize_session": False},
    )
    rows = s.execute(select(*ITEM_COLUMNS).where(Item.id.in_(ids), Item.lease_until == lease)).all()
    return Retry(rows=list(rows), lease=lease, batch_round=batch_round)


def send_again(rt: Runtime, queue: TaskQueue, job_id: str, retry: Retry) -> None:
    """After the commit: the retried items go out now, in a new provider batch (``batch``,
    up to :data:`BATCH_ROUNDS_MAX` rounds) or through the synchronous fan-out."""
    from jobs.money.admission import budget_plan
    from jobs.pipeline import inflight
    from jobs.pipeline.batch_dispatch import dispatch_batches
    from jobs.pipeline.fanout import FanOut

    rows = retry.rows
    if not rows:
        return
    with session_scope(rt.db_url) as s:
        job = s.get_one(Job, job_id)
        models = sorted({r.model for r in rows} | {job.weak_model})
        prices = sync_prices(s, rt.config, rt.config.models_with_fallbacks(models))
        job_max = (job.spec or {}).get("max_tokens")
        plan = budget_plan(job)
    if retry.batch_round:
        log.info("job %s: %d items of a provider batch sent again in a batch (round %d)", job_id, len(rows), retry.batch_round)
        assert retry.lease is not None  # set whenever rows are
        rows = dispatch_batches(rt, queue, job_id, rows, plan, job_max, retry.lease, batch_round=retry.batch_round)
        if not rows:
            return
    log.info("job %s: %d items of a provider batch sent again synchronously", job_id, len(rows))
    clock = _inline_deadline.get() or InlineClock(time.monotonic() + inline_budget_s(rt))
    for start in range(0, len(rows), SYNC_SLICE):
        began = time.monotonic()
        if began + clock.longest_slice_s > clock.deadline:  # it would end past the deadline
            hand_to_generate(rt, queue, job_id, rows[start:], retry.lease)
            return
        part = rows[start : start + SYNC_SLICE]
        asyncio.run(FanOut(rt, job_id, part, prices, job_max, retry.lease, plan).run())
        inflight.forget(job_id, [r.id for r in part])
        clock.longest_slice_s = max(clock.longest_slice_s, time.monotonic() - began)


@dataclass
class InlineClock:
    """A step's time for answering unanswered lines itself: when it ends (``time.monotonic``)
    and the longest slice so far, over every batch the step settles."""

    deadline: float
    longest_slice_s: float = 0.0


def inline_budget_s(rt: Runtime) -> float:
    """How long one step may spend answering unanswered batch lines itself."""
    return rt.settings.short_step_limit_s() * SYNC_INLINE_SHARE


SYNC_SLICE = 200
"""Items a poll step sends synchronously between two looks at its clock."""
SYNC_INLINE_SHARE = 0.5
"""The share of the poll step's time limit it may spend answering unanswered lines itself."""


def hand_to_generate(rt: Runtime, queue: TaskQueue, job_id: str, rows: list[Any], lease: datetime | None) -> None:
    """Unanswered lines the poll step has no time left to answer go back to ``routed``, and
    their chunks' generate steps send them.

    They are marked ``items.dispatch = "sync"``: the generate step sends them synchronously
    even where the provider dispatches ``batch``, as the policy that sent them here said.
    Why: a poll step has a short time limit (:meth:`Settings.short_step_limit_s`). An expired
    batch of 50,000 lines answered inline would be killed part-way, and every call in flight
    at the kill would be charged as lost by the reaper and sent again.
    """
    from jobs.lifecycle import transitions

    ids = [r.id for r in rows]
    with session_scope(rt.db_url) as s:  # marked first: a crash before the hand-off leaves them to the reaper, marked
        guard = [Item.id.in_(ids), Item.state == ItemState.SENT] + ([Item.lease_until == lease] if lease else [])
        s.execute(update(Item).where(*guard).values(dispatch=FORCED_SYNC), execution_options={"synchronize_session": False})
    back = transitions.return_unsent_items(rt.db_url, job_id, ids, None, lease)
    log.info("job %s: %d unanswered batch lines handed to generate steps (the poll's time is up)", job_id, back)
    for chunk in sorted({int(r.chunk) for r in rows}):
        queue.enqueue("generate", job_id, chunk)


def unanswered(rt: Runtime, pb_id: str, reason: str, state: str = "failed") -> Retry:
    """A provider batch that never reached the provider (refused at upload): it ends
    ``state`` and its items follow ``batch_retry``."""
    with session_scope(rt.db_url) as s:
        pb = s.get_one(ProviderBatch, pb_id)
        won = rowcount(
            s.execute(
                update(ProviderBatch)
                .where(ProviderBatch.id == pb_id, ProviderBatch.state == "preparing")
                .values(state=state, error=reason[:2000], ended_at=utcnow())
            )
        )
        if not won:
            return Retry()
        job = s.get_one(Job, pb.job_id)
        ids = [int(i) for i in pb.item_ids]
        return _retry(s, rt, job, pb, dict.fromkeys(ids, reason), _open_holds(s, ids))


def _reconcile(rt: Runtime, queue: TaskQueue, pb: ProviderBatch) -> None:
    """A ``preparing`` batch whose uploader is gone: adopt the provider's batch that is ours,
    or upload it now if the provider has none."""
    from jobs.pipeline.batch_dispatch import METADATA_KEY
    from jobs.providers import ProviderPool
    from jobs.providers.batch_api import BatchRequest

    prov = rt.config.providers[pb.provider]
    client = client_of(rt, pb.provider)
    try:
        listing = client.list_since(pb.created_at)
        if prov.kind == "anthropic":
            owner = _anthropic_owner(rt, client, pb, listing.batches)
        else:
            mine = [b for b in listing.batches if b.metadata.get(METADATA_KEY) == pb.id]
            owner = mine[0] if mine else None
        if owner is None and not listing.complete:
            log.warning(
                "provider batch %s: %d batches at %s since it was prepared and ours not among them; not uploaded "
                "again until the list can be read back to that time",
                pb.id,
                len(listing.batches),
                pb.provider,
            )
            owner = "wait"
    except Exception as exc:
        log.warning("provider batch %s: cannot look at the provider's batches (%s); tried again later", pb.id, exc)
        return
    finally:
        client.close()
    if owner == "wait":
        log.info("provider batch %s: cannot tell yet whether it reached %s; checked again later", pb.id, pb.provider)
        with session_scope(rt.db_url) as s:  # look again at the provider's poll pace, not after a whole lease
            s.execute(
                update(ProviderBatch)
                .where(ProviderBatch.id == pb.id, ProviderBatch.state == "preparing")
                .values(lease_until=utcnow() + timedelta(seconds=prov.batch_poll_s))
            )
        return
    if owner is not None:
        assert not isinstance(owner, str)
        _adopt(rt, pb.id, owner)
        return
    with session_scope(rt.db_url) as s:
        if s.scalar(select(ProviderBatch.state).where(ProviderBatch.id == pb.id)) != "preparing":
            return  # adopted meanwhile (another record's reconcile found it at the provider)
        job = s.get_one(Job, pb.job_id)
        job_state = str(job.state)
        job_max = (job.spec or {}).get("max_tokens")
        by_id = {r.id: r for r in s.execute(select(*ITEM_COLUMNS).where(Item.id.in_(pb.item_ids)))}
    if job_state != JobState.IN_PROGRESS:  # cancelled, stopped or expired since: nothing goes out after that
        send_again(rt, queue, pb.job_id, unanswered(rt, pb.id, f"the job was {job_state} before its batch was uploaded"))
        return
    pool = ProviderPool(rt.config)
    bodies = [BatchRequest("", pool.request_body(chat_request(rt.config, pb.model, by_id[int(i)], job_max))) for i in pb.item_ids]
    log.warning("provider batch %s: not at %s after a crash; uploading it now", pb.id, pb.provider)
    submit_recorded(rt, queue, pb.id, pb.provider, numbered(pb.id, bodies))


def _adopt(rt: Runtime, pb_id: str, remote: RemoteBatch) -> bool:
    """Record that the provider's ``remote`` is our ``pb_id`` (uploaded by a worker that died)."""
    won = mark_submitted(rt, pb_id, remote)
    if won:
        log.warning("provider batch %s: found at the provider as %s after a crash; not uploaded again", pb_id, remote.id)
    return won


def _anthropic_owner(rt: Runtime, client: Any, pb: ProviderBatch, recent: list[RemoteBatch]) -> RemoteBatch | str | None:
    """Anthropic keeps no metadata: the batch that is ``pb``'s is found by its results, whose
    ``custom_id``s carry our id. Candidates are batches of the same size created since the
    intent that no record has adopted. An ended candidate is read: ours is adopted; another
    record's (a second crash of the same size) is given to that record. While a candidate is
    still running nothing can tell whose it is: "wait" (nothing is uploaded meanwhile, so a
    request is never uploaded twice). None: the provider has no batch of ours."""
    from jobs.providers.batch_api import ENDED

    with session_scope(rt.db_url) as s:
        known = set(s.scalars(select(ProviderBatch.remote_id).where(ProviderBatch.remote_id.is_not(None))))
    candidates = [b for b in recent if b.id not in known and b.total == pb.request_count]
    running = False
    for remote in candidates:
        if remote.phase != ENDED:
            running = True
            continue
        first = next(iter(client.results(remote)), None)
        owner_id = first.custom_id.rsplit("-", 1)[0] if first is not None else None
        if owner_id == pb.id:
            return remote
        if owner_id and owner_id.startswith("pb_"):
            _adopt(rt, owner_id, remote)  # another record's upload: its own reconcile would find it too
    return "wait" if running else None
