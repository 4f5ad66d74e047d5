"""Sending routed items through the providers' own batch APIs, at batch prices.

OpenAI's Batch API and Anthropic's Message Batches answer within 24 hours for half the
synchronous price: what an offline job wants. The generate step hands the items of models
whose provider dispatches ``batch`` here instead of to the synchronous fan-out.

The order of writes is what makes it crash-safe:

1. admission reserves each item's worst case at batch prices (no deferral: nothing is in
   flight to wait for);
2. one transaction records the provider batch (``preparing``, with its item ids and our id
   ``pb_...``), stamps the holds sent, and extends the items' and holds' leases past the
   provider's window, *before* anything is uploaded;
3. the upload carries our id in its metadata and in every request's ``custom_id``
   (``<pb id>-<n>``, Anthropic's pattern whatever the dataset's ids are);
4. the batch is recorded ``submitted`` and a ``poll`` step is queued with a delay.

A worker killed between 2 and 4 leaves a ``preparing`` row whose lease runs out: the poll
step reconciles it with the provider's list of batches (``jobs.pipeline.batch_poll``)
instead of uploading the same requests again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from jobs.errors import ProviderError
from jobs.ledger.models import Item, Job, ProviderBatch, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState
from jobs.money.admission import BudgetPlan, admit
from jobs.money.budgets import release
from jobs.money.pricing import sync_prices
from jobs.pipeline.request import request_shape
from jobs.providers.types import CallResult, ChatRequest
from jobs.runtime import Runtime

if TYPE_CHECKING:
    from jobs.config import AppConfig
    from jobs.pipeline.tasks import TaskQueue
    from jobs.providers.batch_api import BatchClient, BatchRequest, RemoteBatch

log = logging.getLogger(__name__)


FORCED_SYNC = "sync"
"""``items.dispatch`` of an item that goes out synchronously whatever its provider's
dispatch (migration 0013): a poll step handed it on to a generate step."""


def prepare_lease(rt: Runtime, provider: str) -> timedelta:
    """How long a ``preparing`` batch is left to its uploader before the poll reconciles it:
    longer than an upload can take (two calls, the file and the create, each with all its
    retries), and a margin. A reconcile while the upload still runs would find nothing at the
    provider and upload the batch a second time (both billed)."""
    from jobs.providers.batch_api import longest_call_s

    return timedelta(seconds=2 * longest_call_s(client_timeout_s(rt, provider)) + 300)


def client_timeout_s(rt: Runtime, provider: str) -> float:
    return max(rt.config.providers[provider].timeout_s, 120.0)


ITEMS_LEASE = timedelta(hours=26)
"""An item in a provider batch is claimed for the provider's 24 h window and two hours to settle."""
AUTO_MIN_LEFT = timedelta(hours=1)
"""``auto`` dispatch sends synchronously once the job's deadline is less than this away."""
METADATA_KEY = "routebatch_batch"


def dispatch_of(config: AppConfig, job: Job, model: str, now: datetime) -> str:
    """``sync`` or ``batch`` for the calls of ``model`` in ``job``: the job's ``--dispatch``,
    else the model's provider's ``dispatch``; ``auto`` is batch unless the deadline is near."""
    mode = (job.spec or {}).get("dispatch") or config.provider_of(model).dispatch
    if mode == "auto":
        near = job.expires_at is not None and job.expires_at - now < AUTO_MIN_LEFT
        mode = "sync" if near else "batch"
    return str(mode)


def chat_request(config: AppConfig, model: str, row: Any, job_max_tokens: int | None) -> ChatRequest:
    """The request a call of ``row`` to ``model`` carries (the one request-shape policy)."""
    shape = request_shape(
        config, model, prompt=row.prompt, messages=row.messages, row_max_tokens=row.max_tokens, job_max_tokens=job_max_tokens
    )
    return ChatRequest(
        custom_id=row.custom_id, model=model, messages=shape.messages, max_tokens=shape.max_tokens, params=dict(row.params or {})
    )


def client_of(rt: Runtime, provider: str) -> BatchClient:
    from jobs.providers.batch_api import client_for

    prov = rt.config.providers[provider]
    base = rt.base_urls().get(provider) or prov.base_url
    return client_for(prov.kind, base, prov.api_key(), timeout_s=client_timeout_s(rt, provider))


def after_upload(pb_id: str) -> None:
    """Called right after a provider accepted an upload, before it is recorded: the chaos
    tests kill the process here. Does nothing."""


def dispatch_batches(
    rt: Runtime,
    queue: TaskQueue,
    job_id: str,
    rows: list[Any],
    plan: BudgetPlan,
    job_max_tokens: int | None,
    lease: datetime,
    batch_round: int = 1,
) -> list[Any]:
    """Upload the claimed ``rows`` as provider batches; returns the rows to send synchronously
    instead (admission moved them to a model whose provider dispatches ``sync``).
    ``batch_round`` counts how many batches these items have been in (``batch_retry``)."""
    from jobs.lifecycle import transitions
    from jobs.pipeline.record import record_results
    from jobs.providers import ProviderPool
    from jobs.providers.batch_api import batch_limits

    cfg = rt.config
    now = utcnow()
    with session_scope(rt.db_url) as s:
        job = s.get_one(Job, job_id)
        models = sorted({r.model for r in rows} | {job.weak_model})
        prices = sync_prices(s, cfg, cfg.models_with_fallbacks(models), batch=True)
        s.expunge(job)
    outcome = admit(rt, job_id, rows, plan, prices, job_max_tokens, final=True)
    if outcome.stop:
        holds = [a.hold for a in outcome.admitted if a.hold is not None]
        transitions.cancel_unsent_items(rt.db_url, job_id, [r.id for r in rows], holds)  # nothing was uploaded
        return []
    to_sync: list[Any] = []
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    back: list[Any] = []
    for adm in outcome.admitted:
        if dispatch_of(cfg, job, adm.model, now) != "batch":
            back.append(adm)
            continue
        groups[(cfg.model(adm.model).provider, adm.model)].append(adm)
    if back:
        _release(rt, [a.hold for a in back], "admitted to a model sent synchronously: held again by the fan-out")
        to_sync.extend(a.row for a in back)
    pool = ProviderPool(cfg)
    unbuildable: list[tuple[int, CallResult, Any]] = []
    uploaded = False
    for (provider, model), adms in groups.items():
        prov = cfg.providers[provider]
        max_n, max_bytes = batch_limits(prov.kind, prov.batch_max_requests)
        part: list[tuple[Any, dict]] = []
        size = 0
        for adm in adms:
            request = chat_request(cfg, model, adm.row, job_max_tokens)
            try:
                body = pool.request_body(request)
                body_bytes = len(json.dumps(body))  # sizes the batch; a body JSON cannot hold fails here
            except Exception as exc:
                reason = f"request cannot be built: {type(exc).__name__}: {exc}"[:500]
                unbuildable.append((adm.row.id, CallResult(request, False, [], None, model, None, reason), adm.hold))
                continue
            if part and (len(part) >= max_n or size + body_bytes > max_bytes):
                uploaded |= _upload(rt, queue, job_id, provider, model, part, batch_round)
                part, size = [], 0
            part.append((adm, body))
            size += body_bytes
        if part:
            uploaded |= _upload(rt, queue, job_id, provider, model, part, batch_round)
    if unbuildable:
        record_results(rt, job_id, unbuildable, prices, lease)
    if uploaded:
        first = min(cfg.providers[p].batch_poll_s for p, _ in groups)
        queue.enqueue("poll", job_id, None, first)
    return to_sync


def _release(rt: Runtime, holds: list[Any], note: str) -> None:
    holds = [h for h in holds if h is not None]
    if not holds:
        return
    with session_scope(rt.db_url) as s:
        for hold in holds:
            release(s, hold, note=note)


def numbered(pb_id: str, bodies: list[BatchRequest]) -> list[BatchRequest]:
    """Request ``n`` of provider batch ``pb_id`` is ``<pb id>-<n>``: ours whatever the dataset's ids."""
    from jobs.providers.batch_api import BatchRequest

    return [BatchRequest(f"{pb_id}-{i}", r.body) for i, r in enumerate(bodies)]


def _upload(
    rt: Runtime, queue: TaskQueue, job_id: str, provider: str, model: str, part: list[tuple[Any, dict]], batch_round: int = 1
) -> bool:
    """Record, upload, record again; True when the batch is (or may be) at the provider."""
    from jobs.providers.batch_api import BatchRequest

    prov = rt.config.providers[provider]
    pb_id = "pb_" + uuid.uuid4().hex[:28]
    now = utcnow()
    items_lease = now + ITEMS_LEASE
    item_ids = [adm.row.id for adm, _ in part]
    hold_ids = [adm.hold.reservation_id for adm, _ in part if adm.hold is not None]
    with session_scope(rt.db_url) as s:
        s.add(
            ProviderBatch(
                id=pb_id,
                job_id=job_id,
                provider=provider,
                model=model,
                state="preparing",
                item_ids=item_ids,
                request_count=len(item_ids),
                created_at=now,
                lease_until=now + prepare_lease(rt, provider),
                items_lease=items_lease,
                poll_interval_s=prov.batch_poll_s,
                retry_round=batch_round,
            )
        )
        if hold_ids:
            s.execute(
                update(Reservation).where(Reservation.id.in_(hold_ids)).values(sent_at=now, lease_until=items_lease),
                execution_options={"synchronize_session": False},
            )
        s.execute(
            update(Item)
            .where(Item.id.in_(item_ids), Item.state == ItemState.SENT)
            .values(lease_until=items_lease, updated_at=now),
            execution_options={"synchronize_session": False},
        )
    return submit_recorded(rt, queue, pb_id, provider, numbered(pb_id, [BatchRequest("", body) for _, body in part]))


def submit_recorded(rt: Runtime, queue: TaskQueue, pb_id: str, provider: str, requests: list[BatchRequest]) -> bool:
    """Upload the requests of the recorded batch ``pb_id`` and mark it ``submitted``.

    A provider that refuses the batch (a 4xx: nothing was accepted) fails it: its items are
    answered by the ``batch_retry`` policy. Any other error leaves it ``preparing``: the poll
    reconciles it with the provider once its lease runs out (it may have been accepted)."""
    from jobs.pipeline.batch_poll import send_again, unanswered

    prov = rt.config.providers[provider]
    with session_scope(rt.db_url) as s:
        job_id = s.get_one(ProviderBatch, pb_id).job_id
    client = client_of(rt, provider)
    try:
        remote = client.submit(requests, {METADATA_KEY: pb_id, "routebatch_job": job_id})
    except ProviderError as exc:
        log.warning("provider %s refused batch %s: %s", provider, pb_id, exc)
        send_again(rt, queue, job_id, unanswered(rt, pb_id, f"provider batch refused: {exc}"))
        return False
    except Exception as exc:
        log.warning("upload of batch %s to %s did not complete (%s); it is reconciled later", pb_id, provider, exc)
        return True
    finally:
        client.close()
    after_upload(pb_id)
    mark_submitted(rt, pb_id, remote, poll_in_s=prov.batch_poll_s)
    return True


def mark_submitted(rt: Runtime, pb_id: str, remote: RemoteBatch, poll_in_s: float = 0.0) -> bool:
    """Record that the provider holds our ``preparing`` batch ``pb_id`` as ``remote`` (just
    uploaded, or found again after a crash); True for the one caller whose UPDATE won."""
    from jobs.ledger.session import rowcount

    now = utcnow()
    with session_scope(rt.db_url) as s:
        return bool(
            rowcount(
                s.execute(
                    update(ProviderBatch)
                    .where(ProviderBatch.id == pb_id, ProviderBatch.state == "preparing")
                    .values(
                        state="submitted",
                        remote_id=remote.id,
                        remote_status=remote.status,
                        input_file_id=(remote.raw or {}).get("input_file_id"),
                        submitted_at=now,
                        next_poll_at=now + timedelta(seconds=poll_in_s),
                        lease_until=None,
                    )
                )
            )
        )
