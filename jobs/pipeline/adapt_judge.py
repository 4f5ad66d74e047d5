"""The judge of an adapting job, seen by ``jobs.pipeline.adapt`` through one small interface.

The judges themselves are ``jobs.judge``: ``--judge llm`` (the default: the ``[judge]`` model,
pairwise in both orders), ``labels:FILE`` (known answers: no calls, no cost) and ``sim`` (the
simulated provider's hidden difficulty: no calls). Here a model judge's calls go through
:func:`jobs.pipeline.adapt.call_and_record`: each is held on the job's budget before it is
sent, and recorded and charged as an attempt of the judged item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.judge.types import JudgeItem, Judgement, JudgementStatus

if TYPE_CHECKING:
    from jobs.ledger.models import Job
    from jobs.money.pricing import PriceVersion
    from jobs.runtime import Runtime

JudgeInput = tuple[int, str, str, str]
"""(item id, question, strong answer, weak answer)."""

VERDICT_NAMES = {"strong": "strong_better", "weak": "weak_better", "tie": "tie"}


@dataclass(frozen=True)
class SampleVerdict:
    """``verdict``: strong_better | weak_better | tie, or the failure state (unparseable,
    failed, no_answer, missing); ``weak_good``: 1.0 when the weak answer is as good (a tie
    counts), 0.0 when not, None without a verdict (the item leaves the sample)."""

    verdict: str
    weak_good: float | None
    reason: str | None = None
    cost_micro_usd: int = 0


def _sample_verdict(j: Judgement, cost: int = 0) -> SampleVerdict:
    if j.status is JudgementStatus.OK and j.verdict is not None:
        return SampleVerdict(VERDICT_NAMES[j.verdict.value], j.verdict.weak_good, j.reason, cost)
    return SampleVerdict(j.status.value, None, j.reason, cost)


class SampleJudge:
    """One of ``jobs.judge``'s judges for one job; ``models()`` are those it calls."""

    def __init__(self, spec: str, judge: Any) -> None:
        self.name = spec[:200]
        self._judge = judge

    def models(self) -> list[str]:
        model = getattr(self._judge, "model", None)
        return [model] if isinstance(model, str) else []

    def judge(
        self, rt: Runtime, job_id: str, inputs: list[JudgeInput], prices: dict[str, PriceVersion], call: Callable[..., Any]
    ) -> list[SampleVerdict]:
        items = [JudgeItem(str(item_id), q, strong, weak) for item_id, q, strong, weak in inputs]
        if not self.models():  # labels, sim: no calls
            return [_sample_verdict(j) for j in self._judge.judge(items)]
        per_item = [self._judge.requests(item) for item in items]
        plan = [(item_id, req) for (item_id, *_), reqs in zip(inputs, per_item, strict=True) for req in reqs]
        results, costs = call(rt, job_id, plan, prices)
        out = []
        at = 0
        for item, reqs in zip(items, per_item, strict=True):
            n = len(reqs)
            out.append(_sample_verdict(self._judge.judgement(item, results[at : at + n]), sum(costs[at : at + n])))
            at += n
        return out


def judge_for(rt: Runtime, job: Job) -> SampleJudge:
    """The job's judge from its ``--judge`` value (default ``llm``)."""
    from jobs.judge.spec import make_judge, parse_judge_spec

    raw = (job.spec or {}).get("judge") or "llm"
    spec = parse_judge_spec(str(raw))
    return SampleJudge(str(spec), make_judge(spec, rt.config, job.strong_model, job.weak_model))
