"""The ``sim`` judge: the simulated provider's verdicts, computed in process, without calls.

With a simulated judge model, ``--judge llm`` already gets these verdicts, over HTTP and at
the judge model's price. ``sim`` gives the same verdicts (the rule of
:mod:`jobs.providers.sim.judge`) for free, for benchmarks and tests of adaptation that want
the ground truth without paying for or waiting on judge calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.judge.types import JudgeItem, Judgement, JudgementStatus
from jobs.providers.sim.judge import JudgeRule
from jobs.providers.sim.replay import ReplayTable, load_replay_table
from routing.adapt.judge import verdict_of


class SimJudge:
    """Verdicts from the simulator's hidden difficulty (and its replayed labels, if any)."""

    def __init__(self, rule: JudgeRule | None = None, replay: ReplayTable | None = None) -> None:
        self.rule = rule or JudgeRule()
        self.replay = replay

    @classmethod
    def for_job(cls, app_config: Any, strong: str | None = None) -> SimJudge:
        """The rule of the simulated provider that serves the job's strong model (its
        ``simulated.judge`` table and replay file); the default rule when it is not simulated."""
        prov = app_config.provider_of(strong or app_config.defaults.strong)
        table = dict(prov.simulated or {})
        replay_file = table.get("replay_file")
        return cls(JudgeRule.from_dict(table.get("judge")), load_replay_table(replay_file) if replay_file else None)

    def judge_one(self, item: JudgeItem) -> Judgement:
        if item.strong_answer is None or item.weak_answer is None:
            which = "strong" if item.strong_answer is None else "weak"
            return Judgement(item.custom_id, JudgementStatus.NO_ANSWER, reason=f"no {which} answer to compare")
        question = item.question.strip()
        strong = self.rule.quality(question, item.strong_answer.strip(), self.replay)
        weak = self.rule.quality(question, item.weak_answer.strip(), self.replay)
        return Judgement(item.custom_id, JudgementStatus.OK, verdict=verdict_of(strong, weak))

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        """One judgement per item, in order; no calls, no cost."""
        return [self.judge_one(i) for i in items]
