"""``--adapt F``: measure the router on this job's own items before routing them.

A batch job holds its whole dataset before it spends anything, so it can *measure* what a
router trained elsewhere cannot know (another model pair, another distribution). Once every
item is scored:

1. :func:`adapt_step` picks a stratified sample of ``F`` of the items (at least
   ``--adapt-min``; strata over the prior router's scores and embedding clusters,
   ``routing.adapt.stratified_sample``) and routes it to the strong model, with reason
   ``adapt_sample``. The rest stays ``scored``; the phase stays ``scoring``, so the job cannot
   be declared done meanwhile.
2. When the last sampled item has ended, :func:`judge_step` (the ``judge`` step on the
   generate queue, asked for by the generate step that ended the sample) sends each
   answered sample item to the weak model too (its *twin*), asks the judge whether the weak answer is as good (``jobs.judge``: both orders), and
   records both in ``judgements``. Every call is an attempt of its item, held on the budget
   and charged like any other. An item whose weak answer won keeps the weak answer (nothing
   bought is thrown away).
3. The ``adapt`` step again, on the score queue (it embeds the prompts):
   ``routing.adapt.adapt`` fits a per-job router on the verdicts on top of the prior and
   chooses, by cross-validation on the sample only, among the prior, the adapted router,
   ``length``, inverted ``length`` and random; the rest of the job is routed with the chosen
   scorer at ``--strong-share``.
4. ``routing.adapt.estimate_quality`` estimates the routed job's quality relative to
   all-strong from the judged sample, with a 90% bootstrap interval (``status``:
   ``quality_vs_strong``).

The job's ``spec["adaptation"]`` keeps the sample, the chosen scorer, its cross-validated
APGR and the reason, the verdict counts, the extra calls' cost and the estimate.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlalchemy import func, insert, select, update

from jobs.ledger.models import Attempt, Budget, Item, Job, Judgement
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, JobState, Phase
from jobs.money.admission import budget_plan, worst_case_micro
from jobs.money.budgets import Hold, add_event, current_window, extra_call_note, open_reservation
from jobs.money.pricing import PriceVersion, micro_to_usd, sync_prices
from jobs.pipeline.batch_dispatch import chat_request
from jobs.pipeline.request import request_shape
from jobs.providers.types import CallResult, ChatRequest
from jobs.runtime import Runtime

T = TypeVar("T")

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from jobs.pipeline.adapt_judge import SampleVerdict
    from jobs.pipeline.tasks import TaskQueue

log = logging.getLogger(__name__)

JUDGING_LEASE = timedelta(minutes=30)
"""A worker that claimed the judging of a sample and died is replaced after this."""
CALL_CONCURRENCY = 32
JUDGE_BATCH = 4 * CALL_CONCURRENCY  # sampled items whose twins (or verdicts) are recorded together
OPEN = (ItemState.PENDING, ItemState.SCORED, ItemState.ROUTED, ItemState.RESERVED, ItemState.SENT)
ITEM_COLUMNS = (
    Item.id,
    Item.chunk,
    Item.custom_id,
    Item.prompt,
    Item.messages,
    Item.params,
    Item.max_tokens,
    Item.model,
    Item.state,
    Item.response,
)


def adapting(job: Job) -> bool:
    return (job.spec or {}).get("adapt") is not None


def _state(job: Job) -> dict[str, Any]:
    return dict((job.spec or {}).get("adaptation") or {})


def _seed(job_id: str) -> int:
    """The job's own sample seed: the same job draws the same sample after a resume."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big")


def _design(prompts: list[str], scores: np.ndarray) -> Any:
    """The per-job features of ``routing.adapt`` (static embeddings: fast on a CPU)."""
    from routing.adapt.features import job_design
    from routing.embeddings import get_embedder

    embeddings = np.asarray(get_embedder("static").embed(prompts), dtype=np.float64)
    return embeddings, job_design(scores, embeddings, prompts)


def _scored(s: Session, job_id: str) -> list[Any]:
    """Every item that has a score (the sample and the rest), in id order: the arrays' index."""
    return list(
        s.execute(
            select(Item.id, Item.chunk, Item.prompt, Item.score)
            .where(Item.job_id == job_id, Item.score.is_not(None))
            .order_by(Item.id)
        ).all()
    )


CURVE_MAX = 20_000
"""Largest judged sample whose per-item data the job keeps for ``routebatch report --plot``."""
MEMORY_MAX = 5000
"""Most recent judged pairs of a memory a job learns from."""


def memory_pairs(s: Session, name: str, strong: str, weak: str, exclude_job: str | None = None) -> list[tuple[str, float]]:
    """(prompt, weak_good) of the judged pairs kept under ``--memory name`` for this model pair,
    newest first (at most :data:`MEMORY_MAX`)."""
    q = (
        select(Item.prompt, Judgement.weak_good)
        .join(Item, Item.id == Judgement.item_id)
        .where(
            Judgement.memory == name,
            Judgement.strong_model == strong,
            Judgement.weak_model == weak,
            Judgement.weak_good.is_not(None),
        )
        .order_by(Judgement.id.desc())
        .limit(MEMORY_MAX)
    )
    if exclude_job is not None:
        q = q.where(Judgement.job_id != exclude_job)
    return [(p, float(w)) for p, w in s.execute(q).all() if w is not None]


def _sample_cost(rt: Runtime, s: Session, job: Job, item_ids: list[int], sample: np.ndarray) -> dict[str, Any]:
    """The drawn sample's estimated weak-twin and judge cost, and its share of the job's
    (``jobs.reports.planning.sample_extra_cost``, the estimate ``plan --adapt`` makes)."""
    from jobs.datasets import PromptRow
    from jobs.reports.planning import sample_extra_cost

    found = {
        r.id: PromptRow(r.line_no, r.custom_id, r.prompt, r.messages, r.max_tokens)
        for r in s.execute(
            select(Item.id, Item.line_no, Item.custom_id, Item.prompt, Item.messages, Item.max_tokens).where(
                Item.job_id == job.id, Item.score.is_not(None)
            )
        )
    }
    spec = job.spec or {}
    return sample_extra_cost(
        rt.config,
        [found[i] for i in item_ids],
        job.strong_model,
        job.weak_model,
        sample,
        judge="llm" if not spec.get("judge") or spec["judge"] == "llm" else "none",
        strong_share=float(job.strong_share if job.strong_share is not None else 0.5),
        max_tokens=spec.get("max_tokens"),
        dispatch=spec.get("dispatch"),
        db_url=rt.db_url,
        seed=_seed(job.id),
    )


def _cost_words(cost: dict[str, Any]) -> str:
    basis = {
        "history": "",
        "proxy": " (one model's answers priced by the other's lengths: it has no answers in the ledger yet)",
    }.get(
        str(cost.get("basis", "history" if cost.get("from_history") else "max_tokens")),
        " (answers priced at max_tokens: no answers of these models in the ledger yet)",
    )
    return (
        f"the sample's weak twins and judge calls are estimated at ${micro_to_usd(int(cost['extra_micro_usd'])):.6f}, "
        f"{100 * float(cost['share']):.1f}% of the job's cost{basis}"
    )


def _over_cost_limit(job: Job, cost: dict[str, Any]) -> str | None:
    """Why the job does not adapt, when ``--adapt-max-cost`` says the sample costs too much."""
    limit = (job.spec or {}).get("adapt_max_cost")
    if limit is None or float(cost["share"]) <= float(limit):
        return None
    return f"{_cost_words(cost)}, over --adapt-max-cost {100 * float(limit):.1f}%"


def adapt_step(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """The ``adapt`` step. Every item is scored: route the sample to the strong model (once
    per job); once the sample is judged, fit the per-job router and route the rest.

    It runs on the score queue (``worker.app.QUEUE_OF``): choosing the sample and fitting
    the per-job router embed the job's prompts, which needs the ``[score]`` extra. The
    judging in between (provider calls only) is the ``judge`` step, on the generate queue, so
    a GPU score worker is not held for it; after a resume this step judges too, if needed."""
    from routing.adapt import stratified_sample
    from routing.adapt.sample import SMALL_JOB_MIN, job_sample

    chunks: list[int] = []
    with session_scope(rt.db_url) as s:  # closed before the steps below: they run for minutes
        job = s.get(Job, job_id)
        if job is None or job.phase != Phase.SCORING:
            return False
        stage = _state(job).get("stage")
    if stage == "judged":
        return _route_rest(rt, queue, job_id)
    if stage:
        return judge_step(rt, queue, job_id)
    with session_scope(rt.db_url) as s:
        job = s.get_one(Job, job_id)
        if not add_event(s, "adapt_sample", "adapt: choosing the sample", job_id=job_id, dedupe_key=f"adapt_sample:{job_id}"):
            return False  # another caller is choosing the sample
        rows = _scored(s, job_id)
        scores = np.array([r.score for r in rows], dtype=np.float64)
        minimum = int(job.spec.get("adapt_min") or 100)
        memory = job.spec.get("memory")
        remembered = len(memory_pairs(s, memory, job.strong_model, job.weak_model)) if memory else 0
        plan = job_sample(len(rows), float(job.spec["adapt"]), minimum, remembered)
        if plan is None:
            job.spec = {**job.spec, "adaptation": {"stage": "skipped", "reason": f"{len(rows)} items: too few to adapt"}}
            add_event(
                s,
                "job_note",
                f"adapt: {len(rows)} items are too few to sample (at least {2 * SMALL_JOB_MIN}); routed as usual",
                job_id=job_id,
            )
        else:
            _, design = _design([r.prompt for r in rows], scores)
            sample = stratified_sample(scores, design.reduced, plan.fraction, min_count=plan.min_count, seed=_seed(job_id))
            cost = _sample_cost(rt, s, job, [r.id for r in rows], sample.indices)
            over = _over_cost_limit(job, cost)
            if over is not None:
                job.spec = {**job.spec, "adaptation": {"stage": "skipped", "reason": over, "estimated_cost": cost}}
                add_event(s, "job_note", f"adapt: {over}; routed as usual", job_id=job_id)
            else:
                ids = [rows[i].id for i in sample.indices]
                s.execute(
                    update(Item)
                    .where(Item.id.in_(ids), Item.state == ItemState.SCORED)
                    .values(
                        state=ItemState.ROUTED,
                        route="strong",
                        model=job.strong_model,
                        route_reason="adapt_sample",
                        updated_at=utcnow(),
                    ),
                    execution_options={"synchronize_session": False},
                )
                job.spec = {
                    **job.spec,
                    "adaptation": {
                        "stage": "sampling",
                        "fraction": plan.fraction,
                        "min_count": plan.min_count,
                        "seed": _seed(job_id),
                        "sample_item_ids": ids,
                        "estimated_cost": cost,
                        **({"memory": memory, "remembered": remembered} if memory else {}),
                    },
                }
                chunks = sorted({rows[i].chunk for i in sample.indices})
                add_event(
                    s,
                    "job_note",
                    f"adapt: a sample of {len(ids)} of {len(rows)} items goes to both models and the judge first"
                    + (f" (under twice the minimum of {minimum}: the sample is half the job)" if plan.small_job else "")
                    + f"; {_cost_words(cost)}",
                    job_id=job_id,
                )
    if not chunks:
        from jobs.pipeline.route import route_job

        return route_job(rt, queue, job_id)  # skipped: the usual routing (spec stage is set)
    for chunk in chunks:
        queue.enqueue("generate", job_id, chunk)
    return True


def _sample_ended(s: Session, job: Job | None, now: datetime) -> bool:
    """The job's sample has ended (every sampled item answered or failed) and nobody holds
    the judging lease: the judging can start."""
    if job is None or job.phase != Phase.SCORING:
        return False
    st = _state(job)
    if st.get("stage") != "sampling":
        return False
    if s.scalar(select(func.count()).select_from(Item).where(Item.id.in_(st["sample_item_ids"]), Item.state.in_(OPEN))):
        return False
    until = st.get("judging_until")
    return not (until and datetime.fromisoformat(until) > now)


def adapt_when_sampled(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """At the end of every generate step: once the sample has ended, ask for the ``judge``
    step. Its own step, so that a judging that raises is the adapting's failure
    (:func:`adapt_failed`), never the generate chunk's (whose scored items would fail)."""
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if not _sample_ended(s, job, utcnow()):
            return False
    queue.enqueue("judge", job_id, None)
    return True


def adapt_failed(rt: Runtime, queue: TaskQueue, job_id: str, reason: str) -> bool:
    """The ``adapt`` or ``judge`` step raised the same error twice: route the rest of the job
    as usual.

    Adapting refines the routing; it must not hold the job. Without this the job stayed in
    ``scoring`` for good, every redelivery and every reaper pass raising the same error.
    What the sample bought is kept (its items have their answers, the twins and verdicts
    recorded so far stay in the ledger); the job has no quality estimate."""
    log.warning("adapting job %s failed twice (%s): routed as usual", job_id, reason)
    return _route_as_usual(
        rt,
        queue,
        job_id,
        f"adapting failed: {reason}",
        f"adapt: failed twice with {reason}; the rest of the job is routed as usual",
    )


def _route_as_usual(rt: Runtime, queue: TaskQueue, job_id: str, reason: str, note: str) -> bool:
    """The job stops adapting (its adaptation ``skipped`` for ``reason``) and the rest of it
    is routed as usual; what the sample bought stays."""
    from jobs.pipeline.route import route_job

    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.phase != Phase.SCORING:
            return False
        st = _without_lease(_state(job))
        job.spec = {**job.spec, "adaptation": {**st, "stage": "skipped", "reason": reason}}
        add_event(s, "job_note", note, job_id=job_id)
    return route_job(rt, queue, job_id)


def judge_step(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """The ``judge`` step. Once every sampled item has ended: twins and judge, then the
    ``adapt`` step (score queue) fits and routes the rest. One caller at a time (a lease in
    the job's spec, taken on the locked job row); a caller that died is replaced after
    :func:`judging_lease`, and what it recorded is not done again."""
    now = utcnow()
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or not _sample_ended(s, job, now):
            return False
        st = _state(job)
        progress = list(
            s.execute(
                select(func.count(), func.count(Judgement.verdict)).select_from(Judgement).where(Judgement.job_id == job_id)
            ).one()
        )
        lost = 0
        if st.get("judging_until"):  # its last holder never gave it back: that worker died (killed, out of memory)
            lost = int(st.get("judging_lost") or 0) + 1 if st.get("judging_progress") == progress else 1
        lease = (now + judging_lease(rt)).isoformat()
        job.spec = {
            **job.spec,
            "adaptation": {**st, "judging_until": lease, "judging_progress": progress, "judging_lost": lost},
        }
    if lost >= 2:  # as a step that raised twice: a batch that kills its worker would repeat for good
        return adapt_failed(rt, queue, job_id, "WorkerLost: the judge step's worker died twice with nothing recorded")
    if progress == [0, 0] and "estimated_cost_answered" not in st:
        over = _cost_once_answered(rt, job_id)
        if over is not None:
            note = f"adapt: {over}; no twin or judge call, the sample keeps its strong answers, the rest is routed as usual"
            return _route_as_usual(rt, queue, job_id, over, note)
    try:
        # half the step's time limit: the batch under way when it passes must still fit
        finished = _judge_sample(rt, job_id, time.monotonic() + rt.settings.generate_time_limit_s / 2)
    except BaseException:
        _release_judging(rt, job_id, lease)  # its retry judges at once, not after the lease
        raise
    if not finished:  # a large sample: the next judge step goes on from the last batch recorded
        _release_judging(rt, job_id, lease)
        queue.enqueue("judge", job_id, None)
        return True
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.phase != Phase.SCORING or _state(job).get("stage") != "sampling":
            return False
        st = _without_lease(_state(job))
        job.spec = {**job.spec, "adaptation": {**st, "stage": "judged"}}
    queue.enqueue("adapt", job_id, None)  # the fit embeds: on the score queue
    return True


def _cost_once_answered(rt: Runtime, job_id: str) -> str | None:
    """The sample's twins and judge calls priced again once its strong answers are in (and
    before any twin or judge call): on a ledger without answers of these models the first
    estimate priced every answer at ``max_tokens``, and these answers are a pilot of the job's
    own. Recorded as ``estimated_cost_answered``; why the job stops adapting, when
    ``--adapt-max-cost`` says it now costs too much."""
    with session_scope(rt.db_url) as s:
        job = s.get_one(Job, job_id, with_for_update=True)
        st = _state(job)
        rows = _scored(s, job_id)
        position = {r.id: n for n, r in enumerate(rows)}
        sample = np.array(sorted(position[i] for i in st["sample_item_ids"] if i in position), dtype=int)
        cost = _sample_cost(rt, s, job, [r.id for r in rows], sample)
        job.spec = {**job.spec, "adaptation": {**st, "estimated_cost_answered": cost}}
        over = _over_cost_limit(job, cost)
        if over is None and cost.get("basis") != (st.get("estimated_cost") or {}).get("basis"):
            add_event(s, "job_note", f"adapt: with the sample's answers in, {_cost_words(cost)}", job_id=job_id)
        return None if over is None else f"with the sample's answers in, {over}"


def judging_lease(rt: Runtime) -> timedelta:
    """:data:`JUDGING_LEASE`, or longer than a step may run: a live judge step's lease must
    not lapse, or a second worker would judge the same items (and pay their twins twice)."""
    return max(JUDGING_LEASE, timedelta(seconds=rt.settings.generate_time_limit_s + 60.0))


def _without_lease(st: dict[str, Any]) -> dict[str, Any]:
    """The adaptation record without the judging lease (``judging_until``, and the progress
    and lost-worker count kept with it)."""
    return {k: v for k, v in st.items() if not k.startswith("judging_")}


def _release_judging(rt: Runtime, job_id: str, lease: str) -> None:
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is not None and _state(job).get("judging_until") == lease:  # still this caller's
            st = _without_lease(_state(job))
            job.spec = {**job.spec, "adaptation": st}


# -- the sample's extra calls -------------------------------------------------------------------
def _windows(s: Session, job: Job) -> tuple[int | None, int | None]:
    job_w = current_window(s, s.get_one(Budget, job.job_budget_id)).id if job.job_budget_id else None
    named_w = current_window(s, s.get_one(Budget, job.budget_id)).id if job.budget_id else None
    return job_w, named_w


def call_and_record(
    rt: Runtime,
    job_id: str,
    calls: list[tuple[int, ChatRequest]],
    prices: dict[str, PriceVersion],
    purpose: str,
) -> tuple[list[CallResult], list[int]]:
    """Send extra calls for items that already have their outcome (the twin, the judge):
    each is held on the job's budget at its worst case first (a call that does not fit is
    not made), recorded as an attempt of its item (``purpose``: ``twin`` or ``judge``) and
    charged to it; the item's outcome is not touched. Returns the results and what each
    cost."""
    from jobs.pipeline.record import charged_attempts, record_in_session
    from jobs.providers import ProviderPool
    from jobs.providers.ratelimit import limiter_for

    cfg = rt.config
    holds: dict[int, Hold | None] = {}
    refused: dict[int, str] = {}
    with session_scope(rt.db_url) as s:
        job = s.get_one(Job, job_id)
        plan = budget_plan(job)
        windows = _windows(s, job) if plan.active else (None, None)
        now = utcnow()
        for n, (item_id, req) in enumerate(calls):
            if not plan.active:
                holds[n] = None
                continue
            shape = request_shape(
                cfg, req.model, prompt="", messages=req.messages, row_max_tokens=req.max_tokens, job_max_tokens=None
            )
            amount = worst_case_micro(shape, req.model, prices, cfg)
            hold = open_reservation(s, job_id, item_id, req.model, amount, *windows)
            if hold is None:
                refused[n] = f"budget: cannot afford {req.model} (worst case {amount} micro-USD) for the adapt sample"
            holds[n] = hold
        from jobs.ledger.models import Reservation

        held = [h.reservation_id for h in holds.values() if h is not None]
        if held:  # sent right after this commit: a crash charges them, as any call that may have left
            # the note names the purpose: a reaper charging a call lost in flight books it as such
            s.execute(update(Reservation).where(Reservation.id.in_(held)).values(sent_at=now, note=extra_call_note(purpose)))

    async def send_all() -> list[CallResult | None]:
        pool = ProviderPool(cfg, base_urls=rt.base_urls(), rate_limiter=limiter_for(cfg, rt.settings.broker_url))
        gate = asyncio.Semaphore(CALL_CONCURRENCY)

        async def one(n: int, req: ChatRequest) -> CallResult | None:
            if n in refused:
                return None
            async with gate:
                return await pool.complete(req)

        try:
            return await asyncio.gather(*(one(n, req) for n, (_, req) in enumerate(calls)))
        finally:
            await pool.aclose()

    got = asyncio.run(send_all()) if calls else []
    results: list[CallResult] = []
    answers = []
    for n, ((item_id, req), result) in enumerate(zip(calls, got, strict=True)):
        if result is None:
            result = CallResult(req, False, [], None, req.model, None, refused[n])
        results.append(result)
        answers.append((item_id, result, holds.get(n)))
    if answers:
        with session_scope(rt.db_url) as s:
            # only 'sent' items take an outcome: these keep theirs
            record_in_session(s, rt, job_id, answers, prices, None, purpose)
    costs = [charged_attempts(rt, job_id, item_id, result, prices, purpose)[1] for item_id, result, _ in answers]
    return results, costs


def _judge_sample(rt: Runtime, job_id: str, deadline: float) -> bool:
    """Twin calls and verdicts for the sampled items that have none yet, recorded a batch of
    :data:`JUDGE_BATCH` items at a time. After the batch that passes ``deadline``
    (``time.monotonic``) it stops: True once every sampled item has its verdict.

    Why batches: a sample of thousands of items needs more calls than one step's time limit
    allows. Recorded all at once, a step cut short lost every answer it had paid for, and
    its retry bought them again."""
    from jobs.pipeline.adapt_judge import judge_for
    from jobs.providers.answers import answer_text

    cfg = rt.config
    with session_scope(rt.db_url) as s:
        job = s.get_one(Job, job_id)
        st = _state(job)
        ids = st["sample_item_ids"]
        weak, strong = job.weak_model, job.strong_model
        job_max = (job.spec or {}).get("max_tokens")
        memory = (job.spec or {}).get("memory")
        judge = judge_for(rt, job)
        rows = {r.id: r for r in s.execute(select(*ITEM_COLUMNS).where(Item.id.in_(ids)))}
        done = set(s.scalars(select(Judgement.item_id).where(Judgement.job_id == job_id)))
        prices = sync_prices(s, cfg, cfg.models_with_fallbacks(sorted({weak, strong, *judge.models()})))
    answered = [i for i in ids if rows[i].state == ItemState.SUCCEEDED]
    twins = [(i, chat_request(cfg, weak, rows[i], job_max)) for i in answered if i not in done]
    clock = _StepClock(deadline)
    for calls in clock.batches(twins):
        results, costs = call_and_record(rt, job_id, calls, prices, purpose="twin")
        now = utcnow()
        with session_scope(rt.db_url) as s:
            for (item_id, _), result, cost in zip(calls, results, costs, strict=True):
                s.execute(
                    insert(Judgement).values(
                        job_id=job_id,
                        item_id=item_id,
                        judge=judge.name,
                        memory=memory,
                        strong_model=strong,
                        weak_model=weak,
                        weak_response=result.body if result.ok else None,
                        weak_error=None if result.ok else (result.error or "failed")[:2000],
                        verdict=None if result.ok else "failed",
                        reason=None if result.ok else "the weak twin call failed",
                        weak_cost_micro_usd=cost,
                        created_at=now,
                    )
                )
    if clock.expired:
        return False
    with session_scope(rt.db_url) as s:
        todo = list(
            s.scalars(
                select(Judgement).where(Judgement.job_id == job_id, Judgement.verdict.is_(None)).order_by(Judgement.item_id)
            )
        )
        for j in todo:
            s.expunge(j)
    for part in clock.batches(todo):
        inputs = [
            (j.item_id, rows[j.item_id].prompt, answer_text(rows[j.item_id].response) or "", answer_text(j.weak_response) or "")
            for j in part
        ]
        verdicts = judge.judge(rt, job_id, inputs, prices, functools.partial(call_and_record, purpose="judge"))
        _record_verdicts(rt, part, verdicts)
    return not clock.expired


class _StepClock:
    """Batches of :data:`JUDGE_BATCH` for one step: at least one, and none started after
    ``deadline`` (``time.monotonic``), which sets :attr:`expired`."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.started = False
        self.expired = False

    def batches(self, seq: list[T]) -> Iterator[list[T]]:
        for start in range(0, len(seq), JUDGE_BATCH):
            if self.started and time.monotonic() > self.deadline:
                self.expired = True
                return
            self.started = True
            yield seq[start : start + JUDGE_BATCH]


def _record_verdicts(rt: Runtime, part: list[Judgement], verdicts: list[SampleVerdict]) -> None:
    now = utcnow()
    with session_scope(rt.db_url) as s:
        for j, v in zip(part, verdicts, strict=True):
            s.execute(
                update(Judgement)
                .where(Judgement.id == j.id)
                .values(
                    verdict=v.verdict,
                    weak_good=v.weak_good,
                    reason=v.reason,
                    judge_cost_micro_usd=v.cost_micro_usd,
                    judged_at=now,
                )
            )
            if v.verdict == "weak_better" and j.weak_response is not None:  # keep the better answer
                _keep_weak(s, j)


def _keep_weak(s: Session, j: Judgement) -> None:
    """The sampled item's outcome becomes its weak twin's answer (the judge preferred it)."""
    usage = (j.weak_response or {}).get("usage") or {}
    last = s.execute(
        select(Attempt.prompt_tokens, Attempt.completion_tokens)
        .where(Attempt.item_id == j.item_id, Attempt.model == j.weak_model, Attempt.status_code == 200)
        .order_by(Attempt.finished_at.desc())
        .limit(1)
    ).first()
    s.execute(
        update(Item)
        .where(Item.id == j.item_id, Item.state == ItemState.SUCCEEDED)
        .values(
            response=j.weak_response,
            model=j.weak_model,
            prompt_tokens=last.prompt_tokens if last else int(usage.get("prompt_tokens") or 0),
            completion_tokens=last.completion_tokens if last else int(usage.get("completion_tokens") or 0),
            route_reason="adapt_sample:weak_won",
            updated_at=utcnow(),
        )
    )


# -- fit, route the rest, estimate ---------------------------------------------------------------
def _route_rest(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    from routing.adapt import adapt, estimate_quality, stratified_sample
    from routing.adapt.quality import route_weak
    from routing.adapt.sample import Sample
    from routing.baselines import LengthRouter

    with session_scope(rt.db_url) as s:
        # the locked row makes this the one caller; another waits, then finds the job routed
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.phase != Phase.SCORING or _state(job).get("stage") != "judged":
            return False
        st = _state(job)
        rows = _scored(s, job_id)
        ids = st["sample_item_ids"]
        scores = np.array([r.score for r in rows], dtype=np.float64)
        prompts = [r.prompt for r in rows]
        embeddings, design = _design(prompts, scores)
        full = stratified_sample(
            scores,
            design.reduced,
            st["fraction"],
            min_count=int(st.get("min_count") or job.spec.get("adapt_min") or 100),
            seed=st["seed"],
        )
        position = {r.id: n for n, r in enumerate(rows)}
        if sorted(position[i] for i in ids) != full.indices.tolist():
            raise RuntimeError(f"job {job_id}: the adapt sample cannot be drawn again as it was (items changed)")
        judged = {
            j.item_id: j for j in s.scalars(select(Judgement).where(Judgement.job_id == job_id, Judgement.weak_good.is_not(None)))
        }
        counts = dict(
            s.execute(select(Judgement.verdict, func.count()).where(Judgement.job_id == job_id).group_by(Judgement.verdict)).all()
        )
        extra, judge_extra = _adapting_costs(s, job_id)
        keep = np.array([rows[p].id in judged for p in full.indices], dtype=bool)
        sample = _kept(full, keep, Sample)
        wg = np.array([judged[rows[p].id].weak_good for p in sample.indices], dtype=np.float64)
        share = float(job.strong_share if job.strong_share is not None else 0.5)
        record: dict[str, Any] = {
            **_without_lease(st),
            "stage": "adapted",
            "judged": int(sample.n),
            "verdicts": {str(k): int(v) for k, v in counts.items()},
            "twin_cost_micro_usd": extra,
            "judge_cost_micro_usd": judge_extra,
            "sample_cost_micro_usd": extra + judge_extra,
        }
        rest = ~full.mask
        memory = job.spec.get("memory")
        remembered = memory_pairs(s, memory, job.strong_model, job.weak_model, exclude_job=job_id) if memory else []
        fit_wg = np.concatenate([wg, np.array([w for _, w in remembered], dtype=np.float64)])
        if sample.n + len(remembered) >= 6 and len(set(fit_wg.tolist())) > 1:
            n = len(rows)
            fit_idx = sample.indices
            fit_scores, fit_emb, fit_prompts, fit_design = scores, embeddings, prompts, design
            if remembered:  # remembered pairs join the training rows (never the estimate: they are another batch's)
                mem_prompts = [p for p, _ in remembered]
                mem_scores = np.asarray(rt.router(job.router).score(mem_prompts), dtype=np.float64)
                fit_prompts = prompts + mem_prompts
                fit_scores = np.concatenate([scores, mem_scores])
                fit_emb, fit_design = _design(fit_prompts, fit_scores)
                fit_idx = np.concatenate([sample.indices, np.arange(n, n + len(remembered))])
                record["memory_used"] = len(remembered)
            choice = adapt(fit_scores, fit_emb, fit_prompts, fit_idx, fit_wg, seed=st["seed"], job=fit_design)
            final = np.asarray(choice.scores, dtype=np.float64)[:n]
            positions = np.asarray(choice.sample_positions)[: sample.n]
            record.update(
                chosen=choice.chosen,
                reason=choice.reason,
                cv_apgr={k: (None if not np.isfinite(v) else round(float(v), 4)) for k, v in choice.cv_apgr.items()},
            )
            if sample.n <= CURVE_MAX:  # what `routebatch report --plot` draws the sample's curves from
                on_sample = np.asarray(choice.sample_scores, dtype=np.float64)[: sample.n]
                record["curve_data"] = {
                    "weak_good": [round(float(w), 4) for w in wg],
                    "inclusion": [round(float(x), 6) for x in sample.inclusion[sample.indices]],
                    "scores": {
                        choice.chosen: [round(float(x), 6) for x in on_sample],
                        "prior": [round(float(x), 6) for x in scores[sample.indices]],
                        "length": [round(float(x), 6) for x in LengthRouter().score([prompts[i] for i in sample.indices])],
                    },
                    "cost_ratio": _weak_to_strong_cost(s, job, [rows[p].id for p in sample.indices]),
                    "strong_share": share,
                }
            try:
                routed_weak = route_weak(final, sample, positions, share)
                # the choice is redone in every bootstrap draw (its uncertainty is in the interval),
                # unless remembered pairs took part in it: they are not this job's sample
                selection = None if remembered else choice.selection()
                est = estimate_quality(
                    sample, wg, routed_weak, costs=_costs(rt, job, rows, sample), seed=st["seed"], selection=selection
                )
                record["quality"] = est.to_dict()
            except (ValueError, ArithmeticError, MemoryError) as exc:  # cannot be made: said; anything else redoes the step
                record["quality_error"] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            final = scores
            record.update(chosen="prior", reason=f"{sample.n} judged items with one verdict only: nothing to learn from")
        _route_by(s, job, rows, final, rest, share, f"adapted:{record['chosen']}"[:40])
        job.spec = {**job.spec, "adaptation": record}
        job.phase = Phase.GENERATING
        add_event(
            s,
            "job_note",
            f"adapt: {sample.n} judged items; routing with {record['chosen']} ({record['reason']}); the sample's extra "
            f"calls (weak twins and judge) cost ${micro_to_usd(record['sample_cost_micro_usd']):.6f}",
            job_id=job_id,
            data={k: v for k, v in record.items() if k != "sample_item_ids"},
        )
        todo = sorted(s.scalars(select(Item.chunk).where(Item.job_id == job_id, Item.state == ItemState.ROUTED).distinct()).all())
        running = job.state == JobState.IN_PROGRESS
    if running:
        for chunk in todo:
            queue.enqueue("generate", job_id, chunk)
    queue.enqueue("finalize", job_id, None)
    return True


def _adapting_costs(s: Session, job_id: str) -> tuple[int, int]:
    """(twin, judge) micro-USD the job spent adapting: every such attempt, those the reaper
    charged as lost in flight and any bought twice after a crash included."""
    spent = dict(
        s.execute(
            select(Attempt.purpose, func.sum(Attempt.cost_micro_usd))
            .where(Attempt.job_id == job_id, Attempt.purpose.in_(("twin", "judge")))
            .group_by(Attempt.purpose)
        ).all()
    )
    return int(spent.get("twin") or 0), int(spent.get("judge") or 0)


def _weak_to_strong_cost(s: Session, job: Job, item_ids: list[int]) -> float | None:
    """Mean weak twin cost / mean strong answer cost on the sample (the cost axis of the curve)."""
    weak = s.scalar(select(func.avg(Judgement.weak_cost_micro_usd)).where(Judgement.item_id.in_(item_ids)))
    strong = s.scalar(
        select(func.avg(Attempt.cost_micro_usd)).where(
            Attempt.item_id.in_(item_ids), Attempt.model == job.strong_model, Attempt.attempt_no == 1, Attempt.status_code == 200
        )
    )
    if not weak or not strong:
        return None
    return round(float(weak) / float(strong), 6)


def _kept(full: Any, keep: np.ndarray, sample_cls: Any) -> Any:
    """The sample without the items that got no verdict; inclusion re-counted per stratum."""
    idx = full.indices[keep]
    inclusion = full.inclusion.copy()
    strata_all = full.strata
    for h in np.unique(strata_all):
        size = int((strata_all == h).sum())
        inclusion[strata_all == h] = int(np.isin(idx, np.flatnonzero(strata_all == h)).sum()) / max(size, 1)
    return sample_cls(idx, strata_all, inclusion)


def _costs(rt: Runtime, job: Job, rows: list[Any], sample: Any) -> Any:
    """Input costs of every item on both models (estimated) and the sample's observed output
    and judge costs, as ``routing.adapt.estimate_quality`` wants them for the cost share, each
    from the sampled items' attempts of that purpose."""
    from jobs.money.tokens import input_token_bound
    from routing.adapt.quality import Costs

    ids = [rows[p].id for p in sample.indices]
    with session_scope(rt.db_url) as s:
        prices = sync_prices(s, rt.config, [job.strong_model, job.weak_model])
        spent: dict[tuple[int, str], float] = {
            (item_id, purpose): float(cost)
            for item_id, purpose, cost in s.execute(
                select(Attempt.item_id, Attempt.purpose, func.sum(Attempt.cost_micro_usd))
                .where(Attempt.item_id.in_(ids))
                .group_by(Attempt.item_id, Attempt.purpose)
            )
        }
    tokens_in = np.array([input_token_bound([{"role": "user", "content": r.prompt}]) for r in rows], dtype=np.float64)
    in_s = tokens_in * prices[job.strong_model].input_micro_per_mtok / 1e6
    in_w = tokens_in * prices[job.weak_model].input_micro_per_mtok / 1e6
    strong, weak, judge = (np.array([spent.get((i, p), 0.0) for i in ids]) for p in ("answer", "twin", "judge"))
    pos = sample.indices
    return Costs(in_s, in_w, np.maximum(strong - in_s[pos], 0.0), np.maximum(weak - in_w[pos], 0.0), judge)


def _route_by(s: Session, job: Job, rows: list[Any], scores: np.ndarray, rest: np.ndarray, share: float, reason: str) -> None:
    """The items outside the sample: the top ``share`` of ``scores`` go strong (ties by id)."""
    idx = np.flatnonzero(rest)
    order = idx[np.lexsort((idx, -scores[idx]))]
    n_strong = int(round(share * idx.size))
    strong = set(order[:n_strong].tolist())
    threshold = float(scores[order[n_strong - 1]]) if n_strong else float("inf")
    now = utcnow()
    updates = [
        {
            "id": rows[i].id,
            "state": ItemState.ROUTED,
            "score": float(scores[i]),
            "threshold": threshold,
            "route": "strong" if i in strong else "weak",
            "model": job.strong_model if i in strong else job.weak_model,
            "route_reason": reason,
            "updated_at": now,
        }
        for i in idx.tolist()
    ]
    if updates:
        s.execute(update(Item).where(Item.state == ItemState.SCORED), updates, execution_options={"synchronize_session": False})
