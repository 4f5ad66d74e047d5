"""Generating a chunk: claim its routed items, fan them out to the providers, record the answers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from jobs.ledger.models import Item, Job
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, JobState
from jobs.money.admission import budget_plan
from jobs.money.pricing import sync_prices
from jobs.pipeline import inflight
from jobs.pipeline.adapt import adapt_when_sampled
from jobs.pipeline.batch_dispatch import FORCED_SYNC, dispatch_batches, dispatch_of
from jobs.pipeline.fanout import FanOut
from jobs.pipeline.finalize import maybe_finalize
from jobs.pipeline.route import route_after_pilot
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime

CLAIM_COLUMNS = (Item.id, Item.custom_id, Item.prompt, Item.messages, Item.params, Item.max_tokens, Item.model, Item.dispatch)
BATCH_CLAIM_MAX = 50_000
"""Most items one generate step claims for provider batches (OpenAI's per-batch limit)."""


def generate_chunk(rt: Runtime, queue: TaskQueue, job_id: str, chunk: int) -> int:
    """Send the chunk's routed items to their models; returns how many were sent."""
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.state != JobState.IN_PROGRESS:
            return 0
        rows = s.execute(
            select(*CLAIM_COLUMNS)
            .where(Item.job_id == job_id, Item.chunk == chunk, Item.state == ItemState.ROUTED)
            .order_by(Item.id)
        ).all()
        # Prices first, in their own transaction: the claim below then holds its row locks only
        # for one UPDATE (the models of the rows it may claim are a superset of those it gets).
        models = sorted({r.model for r in rows} | {job.weak_model})
        prices = sync_prices(s, rt.config, rt.config.models_with_fallbacks(models))
        job_max = job.spec.get("max_tokens")
        plan = budget_plan(job)
        batched = {m for m in models if dispatch_of(rt.config, job, m, utcnow()) == "batch"}
        if batched:
            # Provider batches as large as the provider allows, not one per chunk: this step also
            # takes the job's other routed items of those models (another chunk's step then finds
            # them claimed). Prices above cover them: the models are the same.
            rows = list(rows) + list(
                s.execute(
                    select(*CLAIM_COLUMNS)
                    .where(
                        Item.job_id == job_id,
                        Item.chunk != chunk,
                        Item.state == ItemState.ROUTED,
                        Item.model.in_(batched),
                        Item.dispatch.is_(None),  # one marked sync is its own chunk's to send
                    )
                    .order_by(Item.id)
                    .limit(BATCH_CLAIM_MAX)
                ).all()
            )
    now = utcnow()
    lease = now + timedelta(seconds=rt.settings.send_lease_s)
    inflight.claimed(job_id, chunk, lease)  # if this step raises, its cleanup takes only these
    if rows:
        with session_scope(rt.db_url) as s:
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
    if batched and rows:
        to_batch = [r for r in rows if r.model in batched and r.dispatch != FORCED_SYNC]
        rows = [r for r in rows if r.model not in batched or r.dispatch == FORCED_SYNC]
        if to_batch:
            rows += dispatch_batches(rt, queue, job_id, to_batch, plan, job_max, lease)
    if rows:
        asyncio.run(FanOut(rt, job_id, rows, prices, job_max, lease, plan).run())
        inflight.forget(job_id, [r.id for r in rows])  # answered and recorded (or provably unsent)
    inflight.take_claim(job_id, chunk)
    maybe_finalize(rt, job_id)
    route_after_pilot(rt, queue, job_id)  # --allocate budget: once its pilot has ended, route the rest
    adapt_when_sampled(rt, queue, job_id)  # --adapt: once its sample has ended, judge it and route the rest
    return len(rows)
