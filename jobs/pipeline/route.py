"""Routing: fix the threshold (or allocate under the budget) and route the items.

Two ways, chosen by the job's rule (:func:`routing_rule`):

* **streaming** (a fixed ``--threshold``, or ``--strong-share`` with ``--share-from-sample
  N``): a chunk is routed as soon as it is scored and its ``generate`` is enqueued at once,
  so provider calls start while other chunks still wait to be scored. A sample threshold is
  the ``(1-P)`` quantile of the first N items' scores (whole chunks, in input order), fixed
  once those chunks are scored and then held for the rest of the job.
* **after scoring** (``--strong-share`` with exact quantiles, ``--allocate budget``): both
  need every score, so the phase winner of :func:`route_job` routes the whole job at once.
  ``--allocate budget`` sizes the allocation on estimated costs (``jobs.money.estimates``);
  when the ledger has no answers of a model to estimate from, a small pilot is answered
  first and the rest routed once it has ended (:func:`route_budget`,
  :func:`route_after_pilot`).
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
from jobs.lifecycle.states import ItemState, JobState, Phase
from jobs.money.admission import worst_case_micro
from jobs.money.budgets import add_event, current_window
from jobs.money.estimates import LengthModel, call_estimate, history_in, text_bytes
from jobs.money.pricing import micro_to_usd, sync_prices
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
    ``--allocate budget`` goes through :func:`route_budget` (a pilot may come first).

    Returns True for the one caller that made the transition.
    """
    from jobs.pipeline.adapt import adapting

    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        allocates = job is not None and job.allocate == "budget"
        adapts = job is not None and adapting(job) and ((job.spec or {}).get("adaptation") or {}).get("stage") != "skipped"
    if adapts:
        queue.enqueue("adapt", job_id, None)  # on the score queue: it embeds (adapt_step)
        return True
    if allocates:
        return route_budget(rt, queue, job_id)
    with session_scope(rt.db_url) as s:
        won = rowcount(s.execute(update(Job).where(Job.id == job_id, Job.phase == Phase.SCORING).values(phase=Phase.GENERATING)))
        if not won:
            return False
        job = s.get_one(Job, job_id)  # the UPDATE above just matched it
        rule = routing_rule(job)
        if rule.kind == "exact":
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


# ------------------------------------------------------------------ --allocate budget


def job_models(job: Job) -> list[str]:
    """The job's models, most capable first: its ``--models`` tiers, else (strong, weak)."""
    tiers = (job.spec or {}).get("models")
    return list(tiers) if tiers else [job.strong_model, job.weak_model]


def route_label(job: Job, model: str) -> str:
    """``items.route``: strong (the first model), weak (the last), ``tier2``.. in between."""
    models = job_models(job)
    if model == models[0]:
        return "strong"
    if model == models[-1] or model not in models:
        return "weak"
    return f"tier{models.index(model) + 1}"


def tier_quality(p: np.ndarray, costs: list[np.ndarray]) -> np.ndarray:
    """Expected quality of each item on each tier from the strong-vs-weak score ``p``: the
    top model scores 1, the cheapest ``1 - p`` (what routing to it risks), and a model in
    between loses the share of that risk its price position says: ``gap = log(c_top / c) /
    log(c_top / c_bottom)`` on the mean estimated costs (a mid model priced halfway in log
    terms is taken to close half the gap). A prior, not a measurement: ``routebatch
    eval-tiers`` fits per-model quality on labels (``routing.tier_quality``)."""
    means = np.array([max(float(np.mean(c)), 1e-9) for c in costs])
    span = np.log(means[0] / means[-1]) if means[0] > means[-1] else 0.0
    gaps = np.array([np.clip(np.log(means[0] / m) / span, 0.0, 1.0) if span else 1.0 for m in means])
    gaps[0], gaps[-1] = 0.0, 1.0
    return 1.0 - np.outer(np.clip(p, 0.0, 1.0), gaps)


PILOT_SHARE = 1 / 20
"""Items answered by each model in a pilot, as a share of the job's items ..."""
PILOT_MIN, PILOT_MAX = 5, 24
"""... and at least / at most this many per model."""
MIN_HISTORY = 20
"""Answers of a model the ledger must hold for an allocation without a pilot."""
OPEN_AFTER_ROUTING = (ItemState.PENDING, ItemState.ROUTED, ItemState.RESERVED, ItemState.SENT)
"""Item states that mean a pilot has not ended (scoring or calls still to come)."""

Basis = Literal["history", "pilot", "worst_case"]


def _start_generating(s: Session, job: Job) -> bool:
    """Move the job from scoring to generating; True for the one caller whose UPDATE won."""
    won = rowcount(
        s.execute(
            update(Job).where(Job.id == job.id, Job.phase == Phase.SCORING).values(phase=Phase.GENERATING),
            execution_options={"synchronize_session": False},
        )
    )
    if won:
        s.refresh(job)
    return bool(won)


def pilot_size(n: int) -> int:
    """Items per model in a pilot of a job of ``n`` items: about n/20, within 5..24."""
    return max(PILOT_MIN, min(PILOT_MAX, round(n * PILOT_SHARE)))


def choose_pilot(prompt_bytes: Sequence[int], models: Sequence[str]) -> dict[int, str]:
    """{row index: model} of a pilot over ``models``, by prompt-length strata.

    The rows are sorted by prompt length and cut into equal strata, one per pilot item; the
    middle row of each stratum is taken and the models alternate along them, so each model
    answers short and long prompts alike (answer lengths grow with prompt length).
    Deterministic: the same rows give the same pilot. Empty when the job is too small for
    a pilot to pay off (the pilot would be more than half of it): it is then allocated on
    the worst cases.
    """
    n = len(prompt_bytes)
    if not models:
        return {}
    m = pilot_size(n) * len(models)
    if n < 2 * m:
        return {}
    order = sorted(range(n), key=lambda i: (prompt_bytes[i], i))
    return {order[int((j + 0.5) * n / m)]: models[j % len(models)] for j in range(m)}


def route_budget(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """``--allocate budget`` once every item is scored: allocate on estimates, or pilot first.

    When the ledger holds at least ``MIN_HISTORY`` answers of both models, the allocation is
    sized on estimates from that history at once (phase ``generating``). Otherwise a small
    pilot (:func:`choose_pilot`) is routed to the models that lack history (reason
    ``budget_pilot``) and generated while the phase stays ``scoring``: ``finalize`` cannot
    close the job, and the rest stays ``scored`` until :func:`route_after_pilot` routes it
    on what the pilot's answers show. One ``budget_route`` event per job (an insert that
    conflicts) decides which caller makes the choice; the others go on to
    :func:`route_after_pilot`, which does nothing until the pilot has ended.
    """
    todo: list[int] = []
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.phase != Phase.SCORING:
            return False
        decided = bool(((job.spec or {}).get("allocation") or {}).get("stage"))
        if not decided:
            pair = job_models(job)
            histories = {m: history_in(s, m) for m in pair}
            lacking = [m for m in pair if histories[m].answers < MIN_HISTORY]
            rows = s.execute(
                select(Item.id, Item.chunk, Item.prompt, Item.messages)
                .where(Item.job_id == job_id, Item.state == ItemState.SCORED)
                .order_by(Item.id)
            ).all()
            picks = {}
            if lacking and job.state == JobState.IN_PROGRESS:
                sizes = [text_bytes(r.messages or [{"role": "user", "content": r.prompt}]) for r in rows]
                picks = choose_pilot(sizes, lacking)
            won = _claim(s, job_id, f"--allocate budget: {'a pilot first' if picks else 'allocated on estimates'}")
            if won and picks:
                todo = _route_pilot(s, job, rows, picks, lacking)
            elif won:
                if not _start_generating(s, job):
                    return False
                allocate_items(rt, s, job, {m: (h, "history" if h.answers else "worst_case") for m, h in histories.items()})
                todo = list(range(job.chunks))
    if todo:
        for chunk in todo:
            queue.enqueue("generate", job_id, chunk)
        return True
    return route_after_pilot(rt, queue, job_id)


def _claim(s: Session, job_id: str, message: str) -> bool:
    """Insert the job's one ``budget_route`` event; True for the one caller whose row went in.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: a concurrent inserter waits for the
    first one's transaction and then gets no row. (The row coming back, not ``rowcount``,
    says who won: psycopg 3 reports -1 for this statement.)
    """
    values = {
        "at": utcnow(),
        "kind": "budget_route",
        "job_id": job_id,
        "dedupe_key": f"budget_route:{job_id}",
        "message": message,
    }
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(LedgerEvent).values(**values).on_conflict_do_nothing().returning(LedgerEvent.id)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(LedgerEvent).values(**values).on_conflict_do_nothing().returning(LedgerEvent.id)
    return s.execute(stmt).first() is not None


def _route_pilot(s: Session, job: Job, rows: Sequence[Any], picks: dict[int, str], lacking: list[str]) -> list[int]:
    """Route the pilot's items to their models; returns the chunks to generate."""
    now = utcnow()
    updates = [
        {
            "id": rows[i].id,
            "state": ItemState.ROUTED,
            "route": route_label(job, model),
            "model": model,
            "route_reason": "budget_pilot",
            "updated_at": now,
        }
        for i, model in sorted(picks.items())
    ]
    s.execute(update(Item).where(Item.state == ItemState.SCORED), updates, execution_options={"synchronize_session": False})
    per_model = {m: sum(1 for v in picks.values() if v == m) for m in lacking}
    job.spec = {**(job.spec or {}), "allocation": {"stage": "pilot", "basis": "pilot", "pilot": per_model}}
    add_event(
        s,
        "job_note",
        "budget: no answer history of "
        + ", ".join(lacking)
        + " in the ledger: a pilot of "
        + ", ".join(f"{n} items on {m}" for m, n in per_model.items())
        + f" (spread over prompt lengths) is answered first; the other {len(rows) - len(picks)} items are then "
        "allocated on what its answers show",
        job_id=job.id,
        dedupe_key=f"job_note:budget_pilot:{job.id}",
        data={"pilot": per_model, "items": len(rows)},
    )
    return sorted({rows[i].chunk for i in picks})


def route_after_pilot(rt: Runtime, queue: TaskQueue, job_id: str) -> bool:
    """The second routing of ``--allocate budget``: once every pilot item has ended, allocate
    the rest on the estimates the pilot's answers give; returns True for the one caller that
    did it.

    Called at the end of every ``generate`` step (and by ``route``, so ``resume`` and the
    reaper, which enqueue ``route`` for a job still ``scoring`` with nothing pending, finish a
    job whose runner died between the pilot and this step). Cheap when there is nothing to
    do: one read of the job row. Safe under concurrency: the phase moves ``scoring ->
    generating`` in one conditional UPDATE and only its winner routes. A job being
    cancelled moves on too (with nothing routed), so that ``finalize`` can close it.
    """
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.allocate != "budget" or job.phase != Phase.SCORING:
            return False
        if ((job.spec or {}).get("allocation") or {}).get("stage") != "pilot":
            return False
        if job.state not in (JobState.IN_PROGRESS, JobState.CANCELLING):
            return False
        busy = s.scalar(select(Item.id).where(Item.job_id == job_id, Item.state.in_(OPEN_AFTER_ROUTING)).limit(1))
        if busy is not None:
            return False
        if not _start_generating(s, job):
            return False
        if job.state == JobState.IN_PROGRESS:
            piloted = set((job.spec.get("allocation") or {}).get("pilot") or {})
            estimates: dict[str, tuple[LengthModel, Basis]] = {}
            for model in job_models(job):
                if model in piloted:
                    h = history_in(s, model, job_id=job_id)
                    estimates[model] = (h, "pilot" if h.answers else "worst_case")
                else:
                    h = history_in(s, model)
                    estimates[model] = (h, "history" if h.answers else "worst_case")
            allocate_items(rt, s, job, estimates)
        todo = sorted(s.scalars(select(Item.chunk).where(Item.job_id == job_id, Item.state == ItemState.ROUTED).distinct()).all())
    for chunk in todo:
        queue.enqueue("generate", job_id, chunk)
    queue.enqueue("finalize", job_id, None)
    return True


def _room(s: Session, job: Job) -> int | None:
    """Micro-USD the rest of the job may spend: the least free room of its windows, where
    the job's own weak floor counts as free (it holds the worst case of the very calls
    being allocated; it is not money spent or held by anyone else)."""
    from jobs.ledger.models import Reservation
    from jobs.money.budgets import FLOOR_PREFIX

    floors = s.execute(
        select(Reservation.amount_micro_usd, Reservation.job_window_id, Reservation.named_window_id).where(
            Reservation.job_id == job.id, Reservation.state == "open", Reservation.id.startswith(FLOOR_PREFIX)
        )
    ).all()
    cap = None
    for bid in (job.job_budget_id, job.budget_id):
        if bid is not None:
            w = current_window(s, s.get_one(Budget, bid))
            own = sum(f.amount_micro_usd for f in floors if w.id in (f.job_window_id, f.named_window_id))
            room = w.cap_micro_usd - w.spent_micro_usd - w.reserved_micro_usd + own
            cap = room if cap is None else min(cap, room)
    return cap


def allocate_items(rt: Runtime, s: Session, job: Job, estimates: dict[str, tuple[LengthModel, Basis]] | None = None) -> None:
    """``--allocate budget``: the strong set that maximises expected gain under the cap.

    Sized on each item's *estimated* cost per model (``jobs.money.estimates.call_estimate``:
    input tokens and the answer length the model's history shows for prompts of that
    length, at the model's price); a model with no history is priced at the worst case. The
    weak call of every item is paid for first. The estimates plan to spend the cap, not
    bound it: the reservations still hold worst cases, the weak floor keeps every item's
    weak answer, and admission answers weak an upgrade that no longer fits
    (``jobs.money.admission``), so the cap is never exceeded and no item is skipped for it.
    """
    from routing.allocation import allocate_budget
    from routing.tiers import allocate_tiers

    pair = job_models(job)
    if estimates is None:
        estimates = {}
        for m in pair:
            h = history_in(s, m)
            estimates[m] = (h, "history" if h.answers else "worst_case")
    prices = sync_prices(s, rt.config, rt.config.models_with_fallbacks(pair))
    rows = s.execute(
        select(Item.id, Item.prompt, Item.messages, Item.max_tokens, Item.score)
        .where(Item.job_id == job.id, Item.state == ItemState.SCORED)
        .order_by(Item.id)
    ).all()
    cap = _room(s, job)
    n = len(rows)
    p = np.fromiter((r.score for r in rows), dtype=np.float64, count=n)
    est = {m: np.empty(n) for m in pair}
    worst = {m: np.empty(n) for m in pair}
    job_max = job.spec.get("max_tokens")
    for model in pair:
        history, basis = estimates[model]
        price = prices[model]
        encoding = rt.config.model(model).encoding
        for i, r in enumerate(rows):
            shape = request_shape(
                rt.config, model, prompt=r.prompt, messages=r.messages, row_max_tokens=r.max_tokens, job_max_tokens=job_max
            )
            worst[model][i] = worst_case_micro(shape, model, prices, rt.config)
            est[model][i] = worst[model][i] if basis == "worst_case" else call_estimate(shape, price, encoding, history)[0]
    budget = float(cap if cap is not None else np.inf)
    if len(pair) == 2:
        alloc = allocate_budget(p, est[job.strong_model], est[job.weak_model], budget)
        chosen = [job.strong_model if strong else job.weak_model for strong in alloc.strong]
        affordable, planned = alloc.affordable, alloc.cost
    else:
        tiers = allocate_tiers(tier_quality(p, [est[m] for m in pair]), np.column_stack([est[m] for m in pair]), budget)
        chosen = [pair[j] for j in tiers.choice]
        affordable, planned = tiers.affordable, tiers.cost
    now = utcnow()
    updates = [
        {
            "id": r.id,
            "state": ItemState.ROUTED,
            "route": route_label(job, model),
            "model": model,
            "route_reason": "budget_allocation" if affordable else "budget_allocation:unaffordable",
            "updated_at": now,
        }
        for r, model in zip(rows, chosen)
    ]
    if updates:
        s.execute(update(Item), updates, execution_options={"synchronize_session": False})
    bases = {m: b for m, (_, b) in estimates.items()}
    overall: Basis = "pilot" if "pilot" in bases.values() else "history" if "history" in bases.values() else "worst_case"
    previous = (job.spec or {}).get("allocation") or {}
    record = {
        **({"pilot": previous["pilot"]} if previous.get("pilot") else {}),
        "stage": "allocated",
        "basis": overall,
        "models": {m: {"basis": bases[m], "answers": estimates[m][0].answers} for m in pair},
        "items": n,
        "strong": sum(1 for m in chosen if m == job.strong_model),
        "by_model": {m: sum(1 for c in chosen if c == m) for m in pair},
        "planned_micro_usd": int(round(planned)),
        "planned_worst_case_micro_usd": int(sum(worst[m][i] for i, m in enumerate(chosen))),
        "cap_micro_usd": None if cap is None else int(cap),
    }
    job.spec = {**job.spec, "allocation": record}
    room = "no cap" if cap is None else f"${micro_to_usd(int(cap)):.6f} available"
    add_event(
        s,
        "job_note",
        f"budget: allocated on estimates ({overall}): {record['strong']} of {n} items strong, "
        f"est. ${micro_to_usd(record['planned_micro_usd']):.6f} of {room}; admission answers weak an upgrade that no longer fits",
        job_id=job.id,
        dedupe_key=f"job_note:budget_allocation:{job.id}",
        data=record,
    )


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
