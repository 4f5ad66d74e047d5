"""The labels judge (eval --labels format, score columns, gold answers) and the --judge parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.config import parse_config
from jobs.errors import ConfigError
from jobs.judge.llm import LLMJudge
from jobs.judge.replay import LabelsJudge, matches_gold, normalise
from jobs.judge.simulated import SimJudge
from jobs.judge.spec import JudgeSpec, make_judge, parse_judge_spec
from jobs.judge.types import JudgeItem, JudgementStatus
from routing.adapt.judge import Verdict
from routing.data.labels import read_labels

CONFIG = parse_config(
    {
        "providers": {"sim": {"simulated": {"judge": {"weak_threshold": 0.3}}}},
        "models": {
            "big": {"provider": "sim", "input_usd_per_mtok": 10, "output_usd_per_mtok": 30},
            "small": {"provider": "sim", "input_usd_per_mtok": 1, "output_usd_per_mtok": 2},
        },
        "defaults": {"strong": "big", "weak": "small"},
    }
)


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return path


def item(custom_id: str, prompt: str, strong: str | None = "s", weak: str | None = "w") -> JudgeItem:
    return JudgeItem(custom_id, prompt, strong, weak)


def test_eval_labels_format_by_prompt_and_custom_id(tmp_path: Path) -> None:
    path = write(
        tmp_path / "labels.jsonl",
        [
            {"prompt": "p1", "strong": 1, "weak": 0},
            {"prompt": "p2", "strong": True, "weak": True, "custom_id": "c2"},
            {"prompt": "p3", "strong": 6.5, "weak": 8},
            {"prompt": "  p4 ", "strong": "false", "weak": "true"},
            {"prompt": "dup", "strong": 1, "weak": 0},
            {"prompt": "dup", "strong": 0, "weak": 1},
            {"prompt": "same", "strong": 1, "weak": 0},
            {"prompt": "same", "strong": 1, "weak": 0},
        ],
    )
    assert len(read_labels(path)) == 8  # the very file eval --labels reads
    judge = LabelsJudge.from_file(path)
    out = judge.judge(
        [
            item("a", "p1"),
            item("c2", "renamed prompt"),
            item("b", "p3"),
            item("c", "p4"),
            item("d", "dup"),
            item("e", "same"),
            item("f", "never seen"),
        ]
    )
    assert [j.verdict for j in out[:4]] == [Verdict.STRONG, Verdict.TIE, Verdict.WEAK, Verdict.WEAK]
    assert [j.weak_good for j in out[:4]] == [False, True, True, True]
    assert (out[4].status, out[4].weak_good) == (JudgementStatus.MISSING, None) and "conflicting" in (out[4].reason or "")
    assert out[5].verdict is Verdict.STRONG  # a repeated line that agrees is fine
    assert (out[6].status, out[6].verdict) == (JudgementStatus.MISSING, None) and "no label" in (out[6].reason or "")
    assert all(j.calls == [] for j in out)


def test_score_columns_are_read_for_the_jobs_models(tmp_path: Path) -> None:
    path = write(
        tmp_path / "scores.jsonl",
        [
            {"prompt": "p1", "scores": {"big": 0.9, "small": 0.2, "other": 1.0}},
            {"prompt": "p2", "scores": {"big": 0.5, "small": 0.7}},
            {"prompt": "p3", "scores": {"big": 0.5}},
        ],
    )
    out = LabelsJudge.from_file(path, "big", "small").judge([item("1", "p1"), item("2", "p2"), item("3", "p3")])
    assert [j.verdict for j in out[:2]] == [Verdict.STRONG, Verdict.WEAK]
    assert out[2].status is JudgementStatus.MISSING and "no score for model 'small'" in (out[2].reason or "")


def test_gold_answers_by_exact_match(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gold.jsonl",
        [
            {"custom_id": "q1", "gold": "B"},
            {"custom_id": "q2", "gold": "42"},
            {"custom_id": "q3", "gold": "Paris"},
            {"custom_id": "q4", "gold": 7},
        ],
    )
    judge = LabelsJudge.from_file(path)
    out = judge.judge(
        [
            item("q1", "x", strong="The answer is B.", weak="C"),  # strong right, weak wrong
            item("q2", "x", strong="6*7 = 42\n#### 42", weak="Answer: 42"),  # both right: tie
            item("q3", "x", strong="London", weak="berlin"),  # both wrong: tie (strong bought nothing)
            item("q4", "x", strong="7", weak="Final answer: 7.0"),
            item("q1", "x", strong="B", weak=None),
        ]
    )
    assert [j.verdict for j in out[:4]] == [Verdict.STRONG, Verdict.TIE, Verdict.TIE, Verdict.TIE]
    assert out[4].status is JudgementStatus.NO_ANSWER


@pytest.mark.parametrize(
    ("answer", "gold", "match"),
    [
        ("  b ", "B", True),
        ('"Paris."', "paris", True),
        ("1,234", "1234", True),
        ("Step 1...\nStep 2...\n#### 18", "18", True),
        ("the answer is: C", "C", True),
        ("I think it is C or D", "C", False),
        ("42", "", False),
    ],
)
def test_matches_gold(answer: str, gold: str, match: bool) -> None:
    assert matches_gold(answer, gold) is match
    assert normalise("  Hello   World. ") == "hello world"


def test_bad_labels_lines_name_their_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "strong": 1, "weak": 0}\n{"prompt": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: need 'strong' and 'weak'"):
        LabelsJudge.from_file(bad)
    bad.write_text('{"strong": 1, "weak": 0}\n')
    with pytest.raises(ValueError, match="prompt"):
        LabelsJudge.from_file(bad)


def test_parse_judge_spec(tmp_path: Path) -> None:
    labels = write(tmp_path / "l.jsonl", [{"prompt": "p", "strong": 1, "weak": 0}])
    assert parse_judge_spec(None) == parse_judge_spec("") == parse_judge_spec("llm") == JudgeSpec("llm")
    assert parse_judge_spec(" sim ") == JudgeSpec("sim")
    spec = parse_judge_spec(f"labels:{labels}")
    assert spec == JudgeSpec("labels", labels) and str(spec) == f"labels:{labels}"
    assert spec.calls_a_model is False and JudgeSpec("llm").calls_a_model is True
    assert parse_judge_spec("labels:nope.jsonl", check_exists=False).path == Path("nope.jsonl")
    for bad, why in [
        ("labels:", "needs a file"),
        ("labels:nope.jsonl", "no such file"),
        ("gpt4", "expected llm, sim"),
        ("labels", "expected"),
        ("sim:x", "expected"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_judge_spec(bad)


def test_make_judge_builds_each_kind(tmp_path: Path) -> None:
    labels = write(tmp_path / "l.jsonl", [{"prompt": "p", "scores": {"big": 1, "small": 0}}])
    llm = make_judge(JudgeSpec("llm"), CONFIG)
    assert isinstance(llm, LLMJudge) and llm.model == "big"
    replay = make_judge(parse_judge_spec(f"labels:{labels}"), CONFIG)
    assert isinstance(replay, LabelsJudge) and replay.judge([item("x", "p")])[0].verdict is Verdict.STRONG
    sim = make_judge(JudgeSpec("sim"), CONFIG)
    assert isinstance(sim, SimJudge) and sim.rule.weak_threshold == 0.3  # the provider's simulated.judge table
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="not JSON"):
        make_judge(JudgeSpec("labels", tmp_path / "bad.jsonl"), CONFIG)
