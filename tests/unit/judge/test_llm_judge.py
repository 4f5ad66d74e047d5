"""LLMJudge end to end: answers and judge calls through ProviderPool against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from jobs.config import parse_config
from jobs.errors import ConfigError
from jobs.judge.config import JudgeConfig
from jobs.judge.llm import LLMJudge, judge_many
from jobs.judge.simulated import SimJudge
from jobs.judge.types import JudgeItem, Judgement, JudgementStatus
from jobs.providers import ProviderPool, SimulatedServer, start_simulated_provider
from jobs.providers.sim.judge import JudgeRule
from jobs.providers.types import Attempt, CallResult, ChatRequest
from routing.adapt.judge import Verdict

PROMPTS = [f"Task {i}: " + " ".join(["describe"] * (i % 35)) for i in range(80)]


CONFIG = parse_config(
    {
        "providers": {"sim": {"simulated": {}, "concurrency": 16, "retry": {"max_attempts": 2, "backoff_base_s": 0}}},
        "models": {
            "sim-strong": {"provider": "sim", "input_usd_per_mtok": 10, "output_usd_per_mtok": 30},
            "sim-weak": {"provider": "sim", "input_usd_per_mtok": 1, "output_usd_per_mtok": 2},
        },
        "defaults": {"strong": "sim-strong", "weak": "sim-weak"},
    }
)


@pytest.fixture
def sim() -> Iterator[SimulatedServer]:
    server = start_simulated_provider({"latency_ms": 0, "seed": 5})
    try:
        yield server
    finally:
        server.stop()


async def answers_and_judgements(
    sim: SimulatedServer, judge_config: JudgeConfig | None = None, items_from: list[str] = PROMPTS
) -> tuple[list[JudgeItem], LLMJudge, list[Judgement]]:
    pool = ProviderPool(CONFIG, base_urls={"sim": sim.base_url})
    try:
        strong = await asyncio.gather(
            *(
                pool.complete(ChatRequest(f"i{n}", "sim-strong", [{"role": "user", "content": p}], 64))
                for n, p in enumerate(items_from)
            )
        )
        weak = await asyncio.gather(
            *(
                pool.complete(ChatRequest(f"i{n}", "sim-weak", [{"role": "user", "content": p}], 64))
                for n, p in enumerate(items_from)
            )
        )
        items = [JudgeItem(f"i{n}", p, s.text, w.text) for n, (p, s, w) in enumerate(zip(items_from, strong, weak))]
        judge = LLMJudge.for_job(CONFIG, judge_config=judge_config)
        return items, judge, await judge_many(pool, judge, items, concurrency=8)
    finally:
        await pool.aclose()


def test_verdicts_over_http_are_the_ones_the_hidden_difficulty_implies(sim: SimulatedServer) -> None:
    items, judge, out = asyncio.run(answers_and_judgements(sim))
    rule = JudgeRule()
    assert judge.model == "sim-strong"  # the default judge: the job's strong model
    assert [j.custom_id for j in out] == [i.custom_id for i in items]
    assert all(j.status is JudgementStatus.OK for j in out)
    assert [j.weak_good for j in out] == [rule.weak_good("sim-strong", "sim-weak", p) for p in PROMPTS]
    assert {j.verdict for j in out} == {Verdict.STRONG, Verdict.TIE}
    assert 0.2 < sum(bool(j.weak_good) for j in out) / len(out) < 0.8
    # the in-process sim judge agrees with the one behind HTTP
    assert [j.verdict for j in SimJudge.for_job(CONFIG).judge(items)] == [j.verdict for j in out]
    for j in out:  # both orders were called, and what they cost is there for the ledger
        assert [c.request.custom_id for c in j.calls] == [f"{j.custom_id}#judge-ab", f"{j.custom_id}#judge-ba"]
        assert all(c.ok and c.model == "sim-strong" and len(c.attempts) == 1 for c in j.calls)
        a = j.calls[0].attempts[0]
        assert a.prompt_tokens > 100 and 0 < a.completion_tokens <= 16
        assert j.tokens in (["A", "B"], ["tie", "tie"])


def test_requests_carry_the_judge_settings() -> None:
    cfg = JudgeConfig(model="sim-weak", max_tokens=12, temperature=0.0, orders="one")
    judge = LLMJudge.for_job(CONFIG, judge_config=cfg)
    (req,) = judge.requests(JudgeItem("x", "q?", "strong says", "weak says"))
    assert (req.model, req.max_tokens, req.params, req.custom_id) == ("sim-weak", 12, {"temperature": 0.0}, "x#judge-ab")
    text = req.messages[0]["content"]
    assert req.messages[0]["role"] == "user" and text.index("strong says") < text.index("weak says")
    assert judge.requests(JudgeItem("y", "q?", None, "weak")) == []
    with pytest.raises(ConfigError, match="unknown model"):
        LLMJudge.for_job(CONFIG, judge_config=JudgeConfig(model="nope"))


def test_position_bias_becomes_ties_with_both_orders_and_wins_with_one() -> None:
    with start_simulated_provider({"latency_ms": 0, "judge": {"position_bias": 1.0}}) as s:
        _, _, both = asyncio.run(answers_and_judgements(s, None, PROMPTS[:20]))
        _, _, one = asyncio.run(answers_and_judgements(s, JudgeConfig(orders="one"), PROMPTS[:20]))
    assert {j.verdict for j in both} == {Verdict.TIE}  # always "A": the two orders disagree
    assert {j.verdict for j in one} == {Verdict.STRONG}  # one order: the bias is believed
    assert all(len(j.calls) == 1 for j in one)


def _result(req: ChatRequest, text: str | None, ok: bool = True) -> CallResult:
    now = datetime.now(UTC)
    att = Attempt(
        "a1", req.model, "p", 1, 200 if ok else 500, None if ok else "server_error", None, None, 1, 10, 1, 0, False, now, now
    )
    body = {"choices": [{"message": {"role": "assistant", "content": text}}]} if ok else None
    return CallResult(req, ok, [att], body, req.model, att.status_code, None if ok else "HTTP 500")


class FakePool:
    """Answers judge calls from a script: (custom_id suffix) -> text, or None for a failure."""

    def __init__(self, script: dict[str, str | None]) -> None:
        self.script = script
        self.sent: list[ChatRequest] = []

    async def complete(self, req: ChatRequest) -> CallResult:
        self.sent.append(req)
        key = req.custom_id
        text = self.script[key]
        return _result(req, text, ok=text is not None)


def test_failure_states_are_clear_and_keep_the_calls() -> None:
    judge = LLMJudge("j")
    items = [
        JudgeItem("ok", "q", "s", "w"),
        JudgeItem("prose", "q", "s", "w"),
        JudgeItem("down", "q", "s", "w"),
        JudgeItem("noanswer", "q", "s", None),
    ]
    pool = FakePool(
        {
            "ok#judge-ab": "[[B]]",
            "ok#judge-ba": "Final verdict: [[A]]",
            "prose#judge-ab": "[[A]]",
            "prose#judge-ba": "I cannot decide between them.",
            "down#judge-ab": "[[A]]",
            "down#judge-ba": None,
        }
    )
    ok, prose, down, noanswer = asyncio.run(judge.judge_many(pool, items, concurrency=1))
    assert (ok.status, ok.verdict, ok.weak_good) == (JudgementStatus.OK, Verdict.WEAK, True)
    assert (prose.status, prose.verdict, prose.weak_good) == (JudgementStatus.UNPARSEABLE, None, None)
    assert "cannot decide" in (prose.reason or "") and prose.tokens == ["A", None] and len(prose.calls) == 2
    assert (down.status, down.weak_good, len(down.calls)) == (JudgementStatus.FAILED, None, 2)
    assert "HTTP 500" in (down.reason or "")
    assert (noanswer.status, noanswer.calls, noanswer.reason) == (JudgementStatus.NO_ANSWER, [], "no weak answer to compare")
    assert len(pool.sent) == 6  # nothing sent for the item without a weak answer
    with pytest.raises(ValueError):
        asyncio.run(judge_many(pool, judge, items, concurrency=0))
