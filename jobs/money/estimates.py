"""How long a model's answers will be, and so what a call is likely to cost, from the ledger.

Pricing every answer at ``max_tokens`` is 4-6x above the bill: answers are usually far
shorter than the bound. The ledger already holds the truth for every model a job used
(``attempts.completion_tokens``), so the estimate comes from there: the most recent
succeeded answers of that model, grouped by prompt length (UTF-8 bytes of the request's
text, in doubling buckets), because long prompts (a passage, a worked example) often get
long answers. A bucket with too few answers borrows from its neighbours, then from all of
the model's answers. Input tokens are the prompt's bytes times the provider's own
tokens-per-byte ratio seen in the same history.

Two users: ``plan`` (``jobs.reports.planning``) and ``--allocate budget``
(``jobs.pipeline.route``), which sizes its strong set on these estimates so that the cap
is spent, not left idle. Every figure keeps ``max_tokens`` as its ceiling (a longer answer
cannot be billed), and ``max_tokens`` stays what a budget hold reserves
(``jobs.money.admission``): this is an estimate, not a bound. It lives in ``jobs/money``
because the pipeline may not import ``jobs/reports``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.money.pricing import PriceVersion
from jobs.pipeline.request import RequestShape

HISTORY_LIMIT = 4000
"""Most recent succeeded answers per model read from the ledger."""
MIN_BUCKET = 30
"""Answers a bucket needs before its own lengths are used."""
LOW_Q, HIGH_Q = 0.10, 0.90


def text_bytes(messages: list[dict[str, Any]]) -> int:
    """The prompt-length measure buckets use: UTF-8 bytes of every message's text."""
    from jobs.money.tokens import _message_text

    return sum(len(_message_text(m).encode("utf-8", "surrogatepass")) for m in messages)


def bucket_of(nbytes: int) -> int:
    """Doubling buckets: 0 for < 64 bytes, then 64-127, 128-255, ..."""
    return max(0, int(math.log2(max(nbytes, 1))) - 5)


@dataclass
class LengthModel:
    """Answer lengths of one model, by prompt-length bucket."""

    model: str
    prompt_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    completion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    input_fit: tuple[float, float] | None = None  # provider prompt tokens ~ a + b * bytes
    trend: float | None = None  # answer tokens per prompt byte, when the history shows one
    answers: int = 0
    jobs: int = 0
    pilot_jobs: int = 0

    def __post_init__(self) -> None:
        self._buckets = np.asarray([bucket_of(int(b)) for b in self.prompt_bytes], dtype=np.int64)
        x, y = self.prompt_bytes, self.completion
        if x.size >= 10 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            resid = y - (intercept + slope * x)
            se = np.sqrt(resid.var(ddof=2) / (((x - x.mean()) ** 2).sum()))
            if se > 0 and abs(slope) > 2 * se:  # only a trend the history really shows
                self.trend = float(slope)

    @property
    def empty(self) -> bool:
        return self.answers == 0

    def sample_for(self, nbytes: int) -> np.ndarray:
        """The sorted lengths that stand for a prompt of ``nbytes``: its bucket when it has
        ``MIN_BUCKET`` answers; else the neighbours (then everything) are borrowed, each
        answer moved along the history's length trend from its prompt's size to this one."""
        b = bucket_of(nbytes)
        own = self._buckets == b
        if own.sum() >= MIN_BUCKET:
            return np.sort(self.completion[own])
        keys = sorted(set(self._buckets.tolist()))
        pick = np.ones(self.completion.size, dtype=bool)
        for width in range(1, len(keys) + 1):
            near = np.abs(self._buckets - b) <= width
            if near.sum() >= MIN_BUCKET:
                pick = near
                break
        lengths = self.completion[pick]
        if self.trend is not None:
            lengths = np.maximum(lengths + self.trend * (nbytes - self.prompt_bytes[pick]), 0.0)
        return np.sort(lengths)

    def expected(self, nbytes: int, max_tokens: int) -> tuple[float, float, float]:
        """(mean, p10, p90) completion tokens for one prompt, each at most ``max_tokens``."""
        lengths = np.minimum(self.sample_for(nbytes), max_tokens)
        low, high = np.quantile(lengths, [LOW_Q, HIGH_Q])
        return float(lengths.mean()), float(low), float(high)

    def input_tokens(self, nbytes: int) -> float | None:
        """The provider's prompt tokens for a prompt of ``nbytes``, from the same history."""
        if self.input_fit is None:
            return None
        a, b = self.input_fit
        return max(a + b * nbytes, 1.0)

    def basis(self) -> str:
        if self.empty:
            return "no answers in the ledger: max_tokens (the worst case)"
        pilot = f", {self.pilot_jobs} of them pilot jobs" if self.pilot_jobs else ""
        return f"ledger: {self.answers} recent answers of {self.model} from {self.jobs} job(s){pilot}"


def history_in(s: Session, model: str, limit: int = HISTORY_LIMIT, job_id: str | None = None) -> LengthModel:
    """The model's most recent succeeded answers (``attempts`` joined to their items), read
    in the caller's session; with ``job_id`` only that job's (what a pilot learned).

    An ``--adapt`` sample's twins answer their items' prompts and count; its judge calls
    (the strong model, by default) read a prompt and two answers to write a verdict, so
    their lengths say nothing of an answer's and are left out."""
    from jobs.ledger.models import Attempt, Item, Job

    q = (
        select(Attempt.prompt_tokens, Attempt.completion_tokens, Attempt.job_id, Item.prompt, Item.messages)
        .join(Item, Item.id == Attempt.item_id)
        .where(
            Attempt.model == model,
            Attempt.error_class.is_(None),
            Attempt.status_code == 200,
            Attempt.usage_estimated.is_(False),
            Attempt.purpose != "judge",
        )
    )
    if job_id is not None:
        q = q.where(Attempt.job_id == job_id)
    rows = s.execute(q.order_by(Attempt.finished_at.desc()).limit(limit)).all()
    if not rows:
        return LengthModel(model)
    job_ids = {r.job_id for r in rows}
    specs = s.execute(select(Job.id, Job.spec).where(Job.id.in_(job_ids))).all()
    pilot_jobs = sum(1 for _, spec in specs if ((spec or {}).get("metadata") or {}).get("routebatch") == "pilot")
    xs, ys, prompt_tokens = [], [], []
    for r in rows:
        xs.append(text_bytes(r.messages or [{"role": "user", "content": r.prompt}]))
        ys.append(int(r.completion_tokens))
        prompt_tokens.append(int(r.prompt_tokens))
    x, t = np.asarray(xs, dtype=np.float64), np.asarray(prompt_tokens, dtype=np.float64)
    out = LengthModel(model, x, np.asarray(ys, dtype=np.float64), answers=len(rows), jobs=len(job_ids), pilot_jobs=pilot_jobs)
    if x.size >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, t, 1)
        out.input_fit = (float(intercept), float(max(slope, 0.0)))
    elif x.sum() > 0:
        out.input_fit = (0.0, float(t.sum() / x.sum()))
    return out


def verdict_tokens(db_url: str, model: str, limit: int = HISTORY_LIMIT) -> float | None:
    """Mean output tokens of ``model``'s recent judge calls (an ``--adapt`` sample's
    verdicts), or None without any: a verdict is a few tokens, far from ``[judge] max_tokens``."""
    from sqlalchemy import func

    from jobs.ledger.models import Attempt
    from jobs.ledger.session import session_scope

    recent = (
        select(Attempt.completion_tokens)
        .where(Attempt.model == model, Attempt.purpose == "judge", Attempt.status_code == 200)
        .order_by(Attempt.finished_at.desc())
        .limit(limit)
        .subquery()
    )
    with session_scope(db_url) as s:
        mean = s.scalar(select(func.avg(recent.c.completion_tokens)))
    return None if mean is None else float(mean)


def load_history(db_url: str, model: str, limit: int = HISTORY_LIMIT, job_id: str | None = None) -> LengthModel:
    """:func:`history_in` in a session of its own."""
    from jobs.ledger.session import session_scope

    with session_scope(db_url) as s:
        return history_in(s, model, limit, job_id)


def call_estimate(
    shape: RequestShape, price: PriceVersion, encoding: str | None, history: LengthModel | None, output_tokens: int | None = None
) -> tuple[float, float, float]:
    """(estimate, p10, p90) micro-USD of one call at ``price``: input tokens from the history's
    fit (else counted), answer tokens from ``output_tokens`` or the history's bucket, each at
    most ``shape.max_tokens``. With neither, the answer is priced at ``max_tokens``."""
    from jobs.money.tokens import count_message_tokens

    use_history = output_tokens is None and history is not None and not history.empty
    nbytes = text_bytes(shape.messages)
    tokens_in = history.input_tokens(nbytes) if use_history and history is not None else None
    if tokens_in is None:
        tokens_in = count_message_tokens(shape.messages, encoding)
    if use_history and history is not None:
        mean, p_lo, p_hi = history.expected(nbytes, shape.max_tokens)
    elif output_tokens is not None:
        mean = p_lo = p_hi = float(min(output_tokens, shape.max_tokens))
    else:
        mean = p_lo = p_hi = float(shape.max_tokens)
    per_in = tokens_in * price.input_micro_per_mtok / 1e6
    per_out = price.output_micro_per_mtok / 1e6
    return per_in + mean * per_out, per_in + p_lo * per_out, per_in + p_hi * per_out
