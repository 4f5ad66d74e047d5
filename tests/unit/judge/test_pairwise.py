"""The pairwise prompt (both orders), verdict parsing and its failure state, the combine rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.judge.config import JudgeConfig
from jobs.judge.pairwise import build_prompts, combine, parse_verdict, to_verdict, weak_good
from jobs.judge.template import A_CLOSE, A_OPEN, B_CLOSE, B_OPEN, DEFAULT_PROMPT, render, split
from routing.adapt.judge import Verdict


def block(text: str, open_: str, close: str) -> str:
    return text[text.index(open_) + len(open_) : text.index(close)].strip()


def test_both_orders_swap_the_answers_and_keep_the_question() -> None:
    first, second = build_prompts("What is 2+2?", "four", "five")
    assert (first.order, second.order) == ("strong_first", "weak_first")
    assert block(first.text, A_OPEN, A_CLOSE) == "four" and block(first.text, B_OPEN, B_CLOSE) == "five"
    assert block(second.text, A_OPEN, A_CLOSE) == "five" and block(second.text, B_OPEN, B_CLOSE) == "four"
    assert "What is 2+2?" in first.text and "What is 2+2?" in second.text
    assert "[[A]]" in first.text and "[[C]]" in first.text  # the verdict format is asked for
    assert [p.order for p in build_prompts("q", "s", "w", orders="one")] == ["strong_first"]
    with pytest.raises(ValueError):
        build_prompts("q", "s", "w", orders="three")


def test_render_is_one_pass_and_split_reads_it_back() -> None:
    q = "Fill {answer_b} in a {json: 1} template"
    text = render(DEFAULT_PROMPT, q, "A says {question}", "B")
    assert "{answer_b} in a {json: 1}" in text and "A says {question}" in text
    pair = split(text)
    assert pair is not None and (pair.question, pair.answer_a, pair.answer_b) == (q, "A says {question}", "B")
    assert split("just a question") is None
    assert split(f"{B_OPEN} x {B_CLOSE} [User Question] q {A_OPEN} y {A_CLOSE}") is None  # out of order


def test_custom_prompt_must_hold_each_field_once() -> None:
    ok = JudgeConfig(prompt="Q: {question}\nA: {answer_a}\nB: {answer_b}\n[[A]], [[B]] or [[C]]?")
    assert ok.template.startswith("Q: ")
    assert JudgeConfig().template == DEFAULT_PROMPT
    for bad in ("{question} {answer_a}", "{question} {answer_a} {answer_b} {answer_b}"):
        with pytest.raises(ValidationError, match="pairwise template must contain"):
            JudgeConfig(prompt=bad)
    with pytest.raises(ValidationError):
        JudgeConfig(orders="all")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        JudgeConfig(max_tokens=0)
    with pytest.raises(ValidationError):
        JudgeConfig(verbose=True)  # type: ignore[call-arg]
    cfg = JudgeConfig()
    assert (cfg.model, cfg.max_tokens, cfg.orders, cfg.temperature) == (None, 16, "both", 0.0)
    assert cfg.judge_model("big") == "big" and JudgeConfig(model="judge").judge_model("big") == "judge"


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("[[A]]", "A"),
        ("[[b]]", "B"),
        ("[[C]]", "tie"),
        ("[[ tie ]]", "tie"),
        ("  \n[[A]]\n", "A"),
        ("After careful thought, assistant B is better. Final verdict: [[B]]", "B"),
        ("[[A]] because A is correct; I repeat [[A]].", "A"),
        ("B", "B"),
        ("a.", "A"),
        ("Verdict: C", "tie"),
        ("[B]", "B"),
        ("[[A", "A"),  # cut by max_tokens, but still the whole answer and only one letter
    ],
)
def test_parse_verdict_accepts(text: str, token: str) -> None:
    assert parse_verdict(text) == token


@pytest.mark.parametrize(
    "text",
    [None, "", "   ", "Both are good.", "[[A]] no wait, [[B]]", "[[D]]", "Assistant A is better", "[[AB]]", "AB"],
)
def test_parse_verdict_refuses_what_is_not_clear(text: str | None) -> None:
    assert parse_verdict(text) is None


def test_tokens_map_through_the_order() -> None:
    assert to_verdict("A", "strong_first") is Verdict.STRONG
    assert to_verdict("A", "weak_first") is Verdict.WEAK
    assert to_verdict("B", "weak_first") is Verdict.STRONG
    assert to_verdict("tie", "weak_first") is Verdict.TIE


@pytest.mark.parametrize(
    ("first", "second", "verdict"),
    [
        ("A", "B", Verdict.STRONG),  # strong named both times
        ("B", "A", Verdict.WEAK),  # weak named both times
        ("tie", "tie", Verdict.TIE),
        ("A", "A", Verdict.TIE),  # position bias: always the first answer -> disagree -> tie
        ("B", "B", Verdict.TIE),
        ("A", "tie", Verdict.TIE),
        ("tie", "A", Verdict.TIE),
        ("A", None, None),  # a failed order is unknown, not a tie
        (None, "B", None),
    ],
)
def test_combine_needs_both_orders_to_agree(first: str | None, second: str | None, verdict: Verdict | None) -> None:
    assert combine(first, second) is verdict  # type: ignore[arg-type]


def test_one_order_decides_alone_and_weak_good_counts_ties() -> None:
    assert combine("A", orders="one") is Verdict.STRONG
    assert combine("B", orders="one") is Verdict.WEAK
    assert combine(None, orders="one") is None
    assert [weak_good(v) for v in (Verdict.STRONG, Verdict.WEAK, Verdict.TIE, None)] == [False, True, True, None]
