"""What goes into a judge and what comes out, whichever judge it is (model, labels, sim)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from jobs.judge.pairwise import Token
from jobs.providers.types import CallResult
from routing.adapt.judge import Verdict


class JudgementStatus(StrEnum):
    """How an item's judgement ended. Only ``ok`` carries a verdict."""

    OK = "ok"
    UNPARSEABLE = "unparseable"  # the judge answered, but without a clear verdict token
    FAILED = "failed"  # a judge call failed (after the pool's retries and fallbacks)
    NO_ANSWER = "no_answer"  # the strong or the weak answer is missing: nothing to compare
    MISSING = "missing"  # a labels judge has no label for this item


@dataclass(frozen=True)
class JudgeItem:
    """One sampled item: its prompt and the two answers bought for it (None: that call failed)."""

    custom_id: str
    question: str
    strong_answer: str | None
    weak_answer: str | None


@dataclass
class Judgement:
    """One item's verdict and everything it cost.

    ``calls`` are the judge calls (strong answer as A first, then as B), each with its
    attempts, so the caller records them in the ledger and charges them like any other call;
    empty for a labels or simulated judge. ``tokens`` are the parsed verdict tokens per call.
    ``weak_good`` is True when the weak answer is as good as the strong one (ties included),
    None when there is no verdict; ``reason`` says why.
    """

    custom_id: str
    status: JudgementStatus
    verdict: Verdict | None = None
    reason: str | None = None
    calls: list[CallResult] = field(default_factory=list)
    tokens: list[Token | None] = field(default_factory=list)

    @property
    def weak_good(self) -> bool | None:
        return None if self.verdict is None else self.verdict is not Verdict.STRONG

    @property
    def ok(self) -> bool:
        return self.status is JudgementStatus.OK
