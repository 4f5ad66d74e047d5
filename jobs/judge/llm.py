"""The judge model: pairwise calls through the provider pool, turned into judgements.

The judge builds requests and reads results; it neither reserves budget nor writes the
ledger. A caller that must hold money before each call uses :meth:`LLMJudge.requests` and
:meth:`LLMJudge.judgement` around its own fan-out; :func:`judge_many` is the plain path
(and the tests'), sending every request with bounded concurrency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from jobs.judge.config import JudgeConfig
from jobs.judge.pairwise import build_prompts, combine, parse_verdict
from jobs.judge.types import JudgeItem, Judgement, JudgementStatus
from jobs.providers.types import CallResult, ChatRequest


class CompletesChat(Protocol):
    """What the judge needs of :class:`jobs.providers.pool.ProviderPool`."""

    async def complete(self, req: ChatRequest) -> CallResult: ...


SUFFIXES = {"strong_first": "judge-ab", "weak_first": "judge-ba"}
"""``custom_id`` of a judge call: the item's, then ``#judge-ab`` (strong answer is A) or
``#judge-ba`` (strong answer is B)."""


class LLMJudge:
    """A pairwise judge model: ``model`` is a key of the config's ``[models]``."""

    def __init__(self, model: str, config: JudgeConfig | None = None) -> None:
        self.model = model
        self.config = config or JudgeConfig()

    @classmethod
    def for_job(cls, app_config: Any, strong: str | None = None, judge_config: JudgeConfig | None = None) -> LLMJudge:
        """The judge of a job: ``[judge] model``, else the job's strong model (``strong``, or
        the config's default strong model). ``judge_config`` defaults to ``app_config.judge``
        (a default :class:`JudgeConfig` when the config has none)."""
        cfg: JudgeConfig = judge_config or getattr(app_config, "judge", None) or JudgeConfig()
        model = cfg.judge_model(strong or app_config.defaults.strong)
        app_config.model(model)  # an unknown judge model is a ConfigError now, not per item
        return cls(model, cfg)

    def requests(self, item: JudgeItem) -> list[ChatRequest]:
        """The judge calls for one item (two with ``orders = "both"``); none when an answer is missing."""
        if item.strong_answer is None or item.weak_answer is None:
            return []
        params: dict[str, Any] = {"temperature": self.config.temperature}
        return [
            ChatRequest(
                custom_id=f"{item.custom_id}#{SUFFIXES[p.order]}",
                model=self.model,
                messages=[{"role": "user", "content": p.text}],
                max_tokens=self.config.max_tokens,
                params=params,
            )
            for p in build_prompts(item.question, item.strong_answer, item.weak_answer, self.config.orders, self.config.template)
        ]

    def judgement(self, item: JudgeItem, results: Sequence[CallResult]) -> Judgement:
        """The item's judgement from the results of :meth:`requests` (in the same order)."""
        calls = list(results)
        if item.strong_answer is None or item.weak_answer is None:
            which = "strong" if item.strong_answer is None else "weak"
            return Judgement(item.custom_id, JudgementStatus.NO_ANSWER, reason=f"no {which} answer to compare")
        expected = 2 if self.config.orders == "both" else 1
        if len(calls) != expected:
            raise ValueError(f"{item.custom_id}: {len(calls)} judge results for {expected} requests")
        failed = [r for r in calls if not r.ok]
        if failed:
            return Judgement(item.custom_id, JudgementStatus.FAILED, reason=f"judge call failed: {failed[0].error}", calls=calls)
        tokens = [parse_verdict(r.text) for r in calls]
        verdict = combine(*tokens, orders=self.config.orders)
        if verdict is None:
            bad = next(r for r, t in zip(calls, tokens) if t is None)
            shown = (bad.text or "")[:80]
            return Judgement(
                item.custom_id,
                JudgementStatus.UNPARSEABLE,
                reason=f"no verdict token in the judge's answer {shown!r}",
                calls=calls,
                tokens=tokens,
            )
        return Judgement(item.custom_id, JudgementStatus.OK, verdict=verdict, calls=calls, tokens=tokens)

    async def judge_many(self, pool: CompletesChat, items: Sequence[JudgeItem], concurrency: int = 16) -> list[Judgement]:
        """:func:`judge_many` with this judge."""
        return await judge_many(pool, self, items, concurrency)


async def judge_many(pool: CompletesChat, judge: LLMJudge, items: Sequence[JudgeItem], concurrency: int = 16) -> list[Judgement]:
    """Judge every item (both orders at once), at most ``concurrency`` calls in flight; in order."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    gate = asyncio.Semaphore(concurrency)

    async def call(req: ChatRequest) -> CallResult:
        async with gate:
            return await pool.complete(req)

    async def one(item: JudgeItem) -> Judgement:
        results = await asyncio.gather(*(call(r) for r in judge.requests(item)))
        return judge.judgement(item, results)

    return list(await asyncio.gather(*(one(i) for i in items)))
