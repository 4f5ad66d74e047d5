"""The simulator's judge: the hidden difficulty, answer quality per model, verdicts over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from jobs.judge.pairwise import build_prompts, parse_verdict
from jobs.judge.template import render
from jobs.providers import SimulatedServer, start_simulated_provider
from jobs.providers.sim.judge import JudgeRule, answer_model, difficulty
from jobs.providers.sim.options import SimOptions
from jobs.providers.sim.server import generate_answer

PROMPTS = [f"Question {i}: " + " ".join(["explain"] * (i % 40)) for i in range(120)]


_CLIENT = httpx.Client(timeout=5, trust_env=False)


def chat(base: str, model: str, content: str, max_tokens: int = 64) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    r = _CLIENT.post(f"{base}/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


@pytest.fixture
def sim() -> Iterator[SimulatedServer]:
    server = start_simulated_provider({"latency_ms": 0, "seed": 3})
    try:
        yield server
    finally:
        server.stop()


def test_difficulty_is_deterministic_bounded_and_learnable() -> None:
    ds = [difficulty(p) for p in PROMPTS]
    assert ds == [difficulty(p) for p in PROMPTS] and all(0.0 <= d < 1.0 for d in ds)
    assert difficulty("  hello world \n") == difficulty("hello world")  # surrounding whitespace is not the prompt
    short = [d for p, d in zip(PROMPTS, ds) if len(p.split()) < 12]
    long = [d for p, d in zip(PROMPTS, ds) if len(p.split()) > 30]
    assert sum(long) / len(long) > sum(short) / len(short) + 0.1  # longer is harder: a router can learn it
    noise = [difficulty(p, signal=0.0) for p in PROMPTS]
    assert 0.3 < sum(noise) / len(noise) < 0.7  # signal 0: a plain hash, nothing to learn


def test_thresholds_by_name_and_by_table() -> None:
    rule = JudgeRule()
    assert rule.threshold("sim-strong") == 0.9 and rule.threshold("sim-weak") == 0.5
    assert rule.threshold("gpt-4o-mini") == 0.5 and rule.threshold("gpt-4o") == 0.9
    table = JudgeRule.from_dict({"thresholds": {"gpt-4o": 0.8}, "weak_threshold": 0.3})
    assert table.threshold("gpt-4o") == 0.8 and table.threshold("tiny-weak") == 0.3
    p = PROMPTS[7]
    d = rule.difficulty(p)
    assert rule.good("sim-weak", p) is (d < 0.5) and rule.weak_good("sim-strong", "sim-weak", p) is (d < 0.5 or d >= 0.9)


def test_bad_judge_options_fail_when_the_sim_starts() -> None:
    with pytest.raises(ValueError, match="simulated.judge: unknown option"):
        SimOptions.from_dict({"judge": {"weak_treshold": 0.4}})
    with pytest.raises(ValueError, match="simulated.judge.signal"):
        SimOptions.from_dict({"judge": {"signal": 1.5}})
    with pytest.raises(ValueError, match=r"thresholds\.x"):
        SimOptions.from_dict({"judge": {"thresholds": {"x": -1}}})
    assert SimOptions.from_dict({"judge": {"weak_threshold": 0.4}}).judge == {"weak_threshold": 0.4}


def test_generated_answers_name_their_model() -> None:
    assert answer_model(generate_answer(0, "sim-weak", "hi")) == "sim-weak"
    assert answer_model("no prefix here") is None


def test_sim_answers_judge_requests_with_the_verdict_the_difficulty_implies(sim: SimulatedServer) -> None:
    rule = JudgeRule()
    seen = set()
    for p in PROMPTS[:60]:
        strong, weak = chat(sim.base_url, "sim-strong", p), chat(sim.base_url, "sim-weak", p)
        good_s, good_w = rule.good("sim-strong", p), rule.good("sim-weak", p)
        first, second = (parse_verdict(chat(sim.base_url, "sim-strong", x.text, 16)) for x in build_prompts(p, strong, weak))
        want_first = "A" if good_s > good_w else "B" if good_w > good_s else "tie"
        want_second = {"A": "B", "B": "A", "tie": "tie"}[want_first]
        assert (first, second) == (want_first, want_second), p
        seen.add(want_first)
    assert seen == {"A", "tie"}  # both outcomes occur among these prompts (the weak is never better here)


def test_custom_template_with_the_delimiters_is_understood_and_plain_chat_is_not_judged(sim: SimulatedServer) -> None:
    from jobs.judge.template import A_CLOSE, A_OPEN, B_CLOSE, B_OPEN, QUESTION_OPEN

    template = f"Judge!\n{QUESTION_OPEN} {{question}}\n{A_OPEN}{{answer_a}}{A_CLOSE}\n{B_OPEN}{{answer_b}}{B_CLOSE}\nVerdict?"
    p = next(x for x in PROMPTS if 0.5 <= difficulty(x) < 0.9)  # only the strong answer is good
    strong, weak = generate_answer(3, "sim-strong", p), generate_answer(3, "sim-weak", p)
    assert chat(sim.base_url, "judge", render(template, p, weak, strong), 16) == "[[B]]"
    assert chat(sim.base_url, "sim-strong", p).startswith("[sim-strong] ")


def test_position_bias_answers_a_whatever_it_reads() -> None:
    with start_simulated_provider({"latency_ms": 0, "judge": {"position_bias": 1.0}}) as s:
        p = PROMPTS[3]
        a, b = generate_answer(0, "sim-strong", p), generate_answer(0, "sim-weak", p)
        assert [chat(s.base_url, "j", x.text, 16) for x in build_prompts(p, a, b)] == ["[[A]]", "[[A]]"]


def test_replayed_answers_are_judged_by_their_recorded_correctness(tmp_path) -> None:
    import csv

    path = tmp_path / "replay.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "big", "big_response", "small", "small_response"])
        w.writerow(["What is 6*7?", "True", "It is 42.", "False", "It is 48."])
        w.writerow(["Capital of France?", "True", "Paris.", "True", "Paris, of course."])
    with start_simulated_provider({"latency_ms": 0, "replay_file": str(path)}) as s:
        first = chat(s.base_url, "big", build_prompts("What is 6*7?", "It is 42.", "It is 48.")[0].text, 16)
        tie = chat(s.base_url, "big", build_prompts("Capital of France?", "Paris.", "Paris, of course.")[1].text, 16)
        assert (first, tie) == ("[[A]]", "[[C]]")
