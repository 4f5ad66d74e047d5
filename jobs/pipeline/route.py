"""Routing: fix the threshold (or allocate under the budget) and route the items.

Two ways, chosen by the job's rule (:func:`routing_rule`):

* **streaming** (a fixed ``--threshold``, or ``--strong-share`` with ``--share-from-sample
  N``): a chunk is routed as soon as it is scored and its ``generate`` is enqueued at once,
  so provider calls start while other chunks still wait to be scored. A sample threshold is
  the ``(1-P)`` quantile of the first N items' scores (whole chunks, in input order), fixed
  once those chunks are scored and then held for the rest of the job.
* **after scoring** (``--strong-share`` with exact quantiles, ``--allocate budget``): both
  need every score, so the phase winner of :func:`route_job` routes the whole job at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from jobs.ledger.models import Budget, Item, Job, LedgerEvent
from jobs.ledger.session import rowcount, session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.states import ItemState, Phase
from jobs.money.admission import worst_case_micro
from jobs.money.budgets import add_event, current_window
from jobs.money.pricing import sync_prices
from jobs.pipeline.request import request_shape
from jobs.pipeline.tasks import TaskQueue
from jobs.runtime import Runtime

log = logging.getLogger(__name__)

RuleKind = Literal["threshold", "sample", "exact", "budget"]


@dataclass(frozen=True)
class Rule:
    """How a job's items are routed, and so whether generation may start before all are scored.

    ``threshold`` is the fixed one, or the sample's once it is held (None before that, and
    for the exact and budget rules until ``route_job`` runs). ``tie_fraction``: of the items
    whose score equals a held sample threshold, the share that goes strong (so a router with
    many equal scores keeps the strong share chunk by chunk); None when the sample had no tie
    to break.
    """

    kind: RuleKind
    threshold: float | None = None
    strong_share: float | None = None
    tie_fraction: float | None = None
    sample_items: int = 0
    sample_chunks: int = 0

    @property
    def streams(self) -> bool:
        return self.kind in ("threshold", "sample")

    @property
    def held(self) -> bool:
        """True once a chunk can be routed the moment it is scored."""
        return self.streams and self.threshold is not None

    def note(self) -> str:
        """The one line ``status`` shows about the rule (a ``job_note`` event)."""
        if self.kind == "threshold":
            return f"streaming: fixed threshold {self.threshold:.6g}, chunks are generated as they are scored"
        if self.kind == "sample":
            return (
                f"streaming: strong share {self.strong_share:g} from a threshold estimated on the first "
                f"{self.sample_items:,} items ({self.sample_chunks} chunk{'s' if self.sample_chunks != 1 else ''}) "
                "and then held; chunks are generated as they are scored"
            )
        if self.kind == "budget":
            return "routing: --allocate budget, generation starts after all items are scored"
        return f"routing: exact strong share {self.strong_share:g}, generation starts after all items are scored"


def routing_rule(job: Job) -> Rule:
    """The job's rule, read from its row (``jobs.threshold``, ``strong_share``, ``spec``)."""
    if job.allocate == "budget":
        return Rule("budget")
    if job.strong_share is None:
        return Rule("threshold", threshold=job.threshold)
    spec = job.spec or {}
    sample = spec.get("share_from_sample")
    if not sample:
        return Rule("exact", strong_share=job.strong_share)
    chunk_size = max(int(spec.get("chunk_size") or 1), 1)
    chunks = max(1, min(math.ceil(int(sample) / chunk_size), job.chunks or 1))
    held = spec.get("held_threshold") or {}
    return Rule(
        "sample",
        threshold=job.threshold if held else None,
        strong_share=job.strong_share,
        tie_fraction=held.get("tie_fraction"),
        sample_items=int(held.get("items") or min(chunks * chunk_size, job.total or chunks * chunk_size)),
        sample_chunks=chunks,
    )


def note_rule(s: Session, job: Job) -> Rule:
    """Write the rule's ``job_note`` once per job (idempotent); returns the rule."""
    rule = routing_rule(job)
    add_event(s, "job_note", rule.note(), job_id=job.id, dedupe_key=f"job_note:routing:{job.id}", data={"rule": rule.kind})
    return rule


def decide(
    scores: Sequence[float], threshold: float, tie_fraction: float | None, strong_share: float | None = None
) -> list[tuple[bool, str]]:
    """(strong, reason) per score of one chunk, in item id order, under a held threshold.

    ``score >= threshold`` is strong; with a ``tie_fraction`` the items tied at the
    threshold go strong in id order up to ``floor(fraction * tied + 0.5)`` of them (the
    sample's tie-break, applied chunk by chunk). A share of 0 or 1 needs no score.
    """
    if strong_share is not None and strong_share <= 0.0:
        return [(False, "strong_share=0")] * len(scores)
    if strong_share is not None and strong_share >= 1.0:
        return [(True, "strong_share=1")] * len(scores)
    if tie_fraction is None:
        return [(sc >= threshold, "score>=threshold" if sc >= threshold else "score<threshold") for sc in scores]
    tied = sum(1 for sc in scores if sc == threshold)
    room = math.floor(tie_fraction * tied + 0.5)
    out: list[tuple[bool, str]] = []
    for sc in scores:
        if sc > threshold:
            out.append((True, "score>=threshold"))
        elif sc == threshold:
            out.append((room > 0, "score=threshold:tie_break_strong" if room > 0 else "score=threshold:tie_break_weak"))
            room -= 1
        else:
            out.append((False, "score<threshold"))
    return out


def routed_values(job: Job, rule: Rule, scores: Sequence[float]) -> list[dict[str, Any]]:
    """The columns a held rule writes for each score (merged into the scoring UPDATE)."""
    assert rule.threshold is not None
    return [
        {
            "state": ItemState.ROUTED,
            "threshold": rule.threshold,
            "route": "strong" if strong else "weak",
            "model": job.strong_model if strong else job.weak_model,
            "route_reason": reason,
        }
        for strong, reason in decide(scores, rule.threshold, rule.tie_fraction, rule.strong_share)
    ]


def hold_sample_threshold(s: Session, job: Job) -> Rule:
    """Sample rule: once the sample's chunks have no pending item, fix the threshold from
    their scores and hold it. Deterministic (the same sample gives the same threshold), and
    one conditional UPDATE decides who writes it, so concurrent scorers agree."""
    from routing.thresholds import cut_for_strong_share

    rule = routing_rule(job)
    if rule.kind != "sample" or rule.held:
        return rule
    in_sample = (Item.job_id == job.id, Item.chunk < rule.sample_chunks)
    if s.scalar(select(Item.id).where(*in_sample, Item.state == ItemState.PENDING).limit(1)) is not None:
        return rule
    scores = np.asarray(
        s.scalars(select(Item.score).where(*in_sample, Item.score.is_not(None)).order_by(Item.id)).all(), dtype=np.float64
    )
    if scores.size == 0:  # the sample's chunks all failed: estimate from whatever is scored so far
        scores = np.asarray(
            s.scalars(select(Item.score).where(Item.job_id == job.id, Item.score.is_not(None)).order_by(Item.id)).all(),
            dtype=np.float64,
        )
        if scores.size == 0:
            return rule
    share = float(rule.strong_share if rule.strong_share is not None else 0.5)
    cut = cut_for_strong_share(scores, share)
    tie_fraction = cut.tied_strong / cut.tied if cut.tie_broken and cut.tied else None
    held = {"threshold": cut.threshold, "tie_fraction": tie_fraction, "items": int(scores.size), "chunks": rule.sample_chunks}
    won = rowcount(
        s.execute(
            update(Job)
            .where(Job.id == job.id, Job.threshold.is_(None))
            .values(threshold=cut.threshold, spec={**(job.spec or {}), "held_threshold": held}),
            execution_options={"synchronize_session": False},
        )
    )
    if won:
        add_event(
            s,
            "job_note",
            f"streaming: threshold {cut.threshold:.6g} held from the first {scores.size:,} scored items "
            f"(strong share {share:g}"
            + (f", ties at the threshold split {tie_fraction:.3g} strong" if tie_fraction else "")
            + ")",
            job_id=job.id,
            dedupe_key=f"job_note:held_threshold:{job.id}",
            data=held,
        )
    s.refresh(job)
    return routing_rule(job)


def route_scored_chunks(s: Session, job: Job, rule: Rule, chunk: int | None = None) -> list[int]:
    """Route the ``scored`` items of one chunk (or of the whole job) under a held rule;
    returns the chunks that got routed items. Per-row values, so ties split chunk by chunk."""
    if not rule.held:
        return []
    where = [Item.job_id == job.id, Item.state == ItemState.SCORED]
    if chunk is not None:
        where.append(Item.chunk == chunk)
    rows = s.execute(select(Item.id, Item.chunk, Item.score).where(*where).order_by(Item.chunk, Item.id)).all()
    if not rows:
        return []
    now = utcnow()
    updates: list[dict[str, Any]] = []
    chunks: list[int] = []
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end].chunk == rows[start].chunk:
            end += 1
        group = rows[start:end]
        values = routed_values(job, rule, [float(r.score) for r in group])
        updates += [{"id": r.id, **v, "updated_at": now} for r, v in zip(group, values)]
        chunks.append(rows[start].chunk)
        start = end
    s.execute(update(Item).where(Item.state == ItemState.SCORED), updates, execution_options={"synchronize_session": False})
    return chunks


def route_job(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """Once every item is scored: fix the threshold, route every item, enqueue generation.

    For a streaming rule most chunks are routed (and generated) already: route what is
    left, enqueue ``generate`` for every chunk still holding routed items and a ``finalize``
    (their generate steps may all have ended while the phase was still ``scoring``).

    Returns True for the one caller that made the transition.
    """
    with session_scope(rt.db_url) as s:
        won = rowcount(s.execute(update(Job).where(Job.id == job_id, Job.phase == Phase.SCORING).values(phase=Phase.GENERATING)))
        if not won:
            return False
        job = s.get_one(Job, job_id)  # the UPDATE above just matched it
        rule = routing_rule(job)
        if rule.kind == "budget":
            allocate_items(rt, s, job)
        elif rule.kind == "exact":
            threshold, tie_cutoff_id = job.threshold, None  # kept when a resumed job routes again
            if threshold is None:
                threshold, tie_cutoff_id = _share_threshold(s, job)
                job.threshold = threshold
            route_scored_items(s, job, threshold, tie_cutoff_id)
        elif rule.kind == "threshold" and rule.threshold is not None:
            route_scored_items(s, job, rule.threshold)  # what a crash left scored: one UPDATE
        else:
            route_scored_chunks(s, job, hold_sample_threshold(s, job))
        if rule.streams:
            todo = sorted(
                s.scalars(select(Item.chunk).where(Item.job_id == job_id, Item.state == ItemState.ROUTED).distinct()).all()
            )
        else:
            todo = list(range(job.chunks))
    for chunk in todo:
        queue.enqueue("generate", job_id, chunk)
    if rule.streams:
        queue.enqueue("finalize", job_id, None)
    return True


def allocate_items(rt: Runtime, s: Session, job: Job) -> None:
    """``--allocate budget``: the strong set that maximises expected gain under the cap.

    Costs are the same worst cases the reservations will hold, so an allocation that fits
    the cap also passes every reservation; the weak call of every item is paid for first.
    """
    from routing.allocation import allocate_budget

    pair = [job.strong_model, job.weak_model]
    prices = sync_prices(s, rt.config, rt.config.models_with_fallbacks(pair))
    rows = s.execute(
        select(Item.id, Item.prompt, Item.messages, Item.max_tokens, Item.score)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .order_by(Item.id)
    ).all()
    cap = None
    for bid in (job.job_budget_id, job.budget_id):
        if bid is not None:
            w = current_window(s, s.get_one(Budget, bid))
            room = w.cap_micro_usd - w.spent_micro_usd - w.reserved_micro_usd
            cap = room if cap is None else min(cap, room)
    n = len(rows)
    p = np.fromiter((r.score for r in rows), dtype=np.float64, count=n)
    cs = np.empty(n)
    cw = np.empty(n)
    job_max = job.spec.get("max_tokens")
    for i, r in enumerate(rows):
        for costs, model in ((cs, job.strong_model), (cw, job.weak_model)):
            shape = request_shape(
                rt.config, model, prompt=r.prompt, messages=r.messages, row_max_tokens=r.max_tokens, job_max_tokens=job_max
            )
            costs[i] = worst_case_micro(shape, model, prices, rt.config)
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
    job.spec = {
        **job.spec,
        "allocation": {
            "strong": int(alloc.strong.sum()),
            "planned_worst_case_micro_usd": int(alloc.cost),
            "cap_micro_usd": None if cap is None else int(cap),
        },
    }


def _share_threshold(s: Session, job: Job) -> tuple[float, int | None]:
    """``--strong-share``: the threshold, and the tie-break cutoff item id when ties need one.

    With many equal scores ``score >= threshold`` alone would send them all strong (a
    share of 0.1 on a constant router becomes 1.0, at ten times the cost). The cut keeps
    exactly ``round(share * n)`` strong: tied items go strong in item id order up to the
    returned id, the rest weak. Such a split is logged and recorded as a ledger event.
    """
    from routing.thresholds import cut_for_strong_share

    share = job.strong_share if job.strong_share is not None else 0.5
    rows = s.execute(select(Item.id, Item.score).where(Item.job_id == job.id, Item.score.is_not(None)).order_by(Item.id)).all()
    ids = [r.id for r in rows]
    cut = cut_for_strong_share(np.fromiter((r.score for r in rows), dtype=np.float64, count=len(rows)), share)
    if not cut.tie_broken or cut.last_tied_strong is None:
        return cut.threshold, None
    strong = int(cut.strong.sum())
    message = (
        f"job {job.id}: {cut.tied} of {len(ids)} items have the same score {cut.threshold:.6g}; "
        f"--strong-share {share:g} holds only by breaking the tie: {cut.tied_strong} of them go strong "
        f"in input order ({strong} strong in all; score >= threshold alone would send {strong - cut.tied_strong + cut.tied})"
    )
    log.warning(message)
    s.add(
        LedgerEvent(
            at=utcnow(),
            kind="strong_share_tie_break",
            job_id=job.id,
            message=message,
            data={
                "strong_share": share,
                "threshold": cut.threshold,
                "items": len(ids),
                "strong": strong,
                "tied": cut.tied,
                "tied_strong": cut.tied_strong,
            },
        )
    )
    return cut.threshold, ids[cut.last_tied_strong]


def route_scored_items(s: Session, job: Job, threshold: float, tie_cutoff_id: int | None = None) -> None:
    """score >= threshold -> strong, else weak; one UPDATE for the whole job.

    With ``tie_cutoff_id`` (a strong share that needed a tie-break) an item whose score
    equals the threshold is strong only if its id is <= the cutoff.
    """
    if tie_cutoff_id is None:
        is_strong = Item.score >= threshold
        reason = case((is_strong, "score>=threshold"), else_="score<threshold")
    else:
        tied = Item.score == threshold
        tied_strong = and_(tied, Item.id <= tie_cutoff_id)
        is_strong = or_(Item.score > threshold, tied_strong)
        reason = case(
            (Item.score > threshold, "score>=threshold"),
            (tied_strong, "score=threshold:tie_break_strong"),
            (tied, "score=threshold:tie_break_weak"),
            else_="score<threshold",
        )
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .values(
            state=ItemState.ROUTED,
            threshold=threshold,
            route=case((is_strong, "strong"), else_="weak"),
            model=case((is_strong, job.strong_model), else_=job.weak_model),
            route_reason=reason,
            updated_at=utcnow(),
        )
    )
