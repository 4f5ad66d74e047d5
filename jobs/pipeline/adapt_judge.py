"""The judges an adapting job can use, behind one small interface for ``jobs.pipeline.adapt``.

``--judge labels:FILE`` replays known verdicts (a labels file as ``routebatch eval --labels``
reads it: ``{"prompt", "strong", "weak"}`` qualities per line, matched by prompt text): no
calls, no cost. ``--judge llm`` (the default) and ``--judge sim`` ask a model, pairwise in
both orders (``jobs.judge``), through the provider pool; those calls are attempts of the
judged item, held on the budget and charged like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.ledger.models import Job
    from jobs.money.pricing import PriceVersion
    from jobs.runtime import Runtime

JudgeInput = tuple[int, str, str, str]
"""(item id, question, strong answer, weak answer)."""


@dataclass(frozen=True)
class SampleVerdict:
    """``verdict``: strong_better | weak_better | tie | unparseable | missing | failed;
    ``weak_good``: 1.0 when the weak answer is as good (a tie counts), 0.0 when not, None
    when there is no verdict (the item leaves the sample)."""

    verdict: str
    weak_good: float | None
    reason: str | None = None
    cost_micro_usd: int = 0


WEAK_GOOD = {"weak_better": 1.0, "tie": 1.0, "strong_better": 0.0}


class SampleJudge(Protocol):
    name: str

    def models(self) -> list[str]: ...

    def judge(
        self, rt: Runtime, job_id: str, inputs: list[JudgeInput], prices: dict[str, PriceVersion], call: Callable[..., Any]
    ) -> list[SampleVerdict]: ...


class LabelsJudge:
    """Verdicts from a labels file: the weak answer is as good when its recorded quality is."""

    def __init__(self, path: str) -> None:
        from routing.adapt import ReplayJudge
        from routing.data.labels import read_labels

        if not Path(path).is_file():
            raise ConfigError(f"--judge labels:{path}: no such file")
        try:
            records = read_labels(path)
        except ValueError as exc:
            raise ConfigError(f"--judge labels:{path}: {exc}") from None
        self.name = f"labels:{Path(path).name}"[:200]
        self._by_prompt: dict[str, tuple[float, float]] = {}
        for r in records:
            self._by_prompt.setdefault(r.prompt, (r.strong, r.weak))
        self._replay = ReplayJudge  # the verdict rule of routing.adapt (weak as good: weak >= strong)

    def models(self) -> list[str]:
        return []

    def judge(
        self, rt: Runtime, job_id: str, inputs: list[JudgeInput], prices: dict[str, PriceVersion], call: Callable[..., Any]
    ) -> list[SampleVerdict]:
        out = []
        for _, question, _, _ in inputs:
            known = self._by_prompt.get(question)
            if known is None:
                out.append(SampleVerdict("missing", None, "prompt not in the labels file"))
                continue
            strong, weak = known
            verdict = "tie" if weak == strong else "weak_better" if weak > strong else "strong_better"
            out.append(SampleVerdict(verdict, WEAK_GOOD[verdict]))
        return out


def judge_for(rt: Runtime, job: Job) -> SampleJudge:
    """The job's judge from its ``--judge`` value (default ``llm``)."""
    spec = str((job.spec or {}).get("judge") or "llm")
    if spec.startswith("labels:"):
        return LabelsJudge(spec[len("labels:") :])
    if spec in ("llm", "sim"):
        from jobs.pipeline.adapt_llm_judge import LLMSampleJudge

        return LLMSampleJudge(rt, job, simulated=spec == "sim")
    raise ConfigError(f"--judge {spec!r}: use llm, sim or labels:FILE")
