"""Readers of the RouteLLM files, on the small excerpt in tests/fixtures (no ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routing.data import convert_routellm, labels_to_battles, load_gsm8k, load_mmlu, read_labels, write_jsonl
from routing.data.labels import LabelRecord, labels_to_scores, parse_label
from routing.data.routellm import main as convert_main

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "routellm_sample"


def _contaminated(task: str) -> set[str]:
    lines = (SAMPLE / task / "contaminated_prompts.jsonl").read_text().splitlines()
    return {json.loads(line)["eval_prompt"] for line in lines if line.strip()}


def test_mmlu_drops_contaminated_and_keeps_subjects() -> None:
    records = load_mmlu(SAMPLE)
    assert len(records) == 170 - 2  # two contaminated prompts fall inside the excerpt
    assert not {r.prompt for r in records} & _contaminated("mmlu")
    assert {r.get("subject") for r in records} == {
        "machine_learning", "abstract_algebra", "high_school_european_history", "marketing",
        "high_school_mathematics"}
    assert all(r.get("task") == "mmlu" and r.strong in (0.0, 1.0) and r.weak in (0.0, 1.0) for r in records)
    # first abstract_algebra row of the CSV: both models right
    first = next(r for r in records if r.get("subject") == "abstract_algebra")
    assert first.prompt.startswith("Find the degree for the given field extension")
    assert (first.strong, first.weak) == (1.0, 1.0)


def test_mmlu_subject_filter() -> None:
    assert {r.get("subject") for r in load_mmlu(SAMPLE, subjects=["marketing"])} == {"marketing"}


def test_gsm8k_drops_contaminated() -> None:
    records = load_gsm8k(SAMPLE)
    assert len(records) == 60 - 4
    assert not {r.prompt for r in records} & _contaminated("gsm8k")
    assert all(r.get("task") == "gsm8k" for r in records)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_mmlu(tmp_path)


def test_battles_from_labels() -> None:
    recs = [LabelRecord("a", 1, 0), LabelRecord("b", 0, 1), LabelRecord("c", 1, 1), LabelRecord("d", 0, 0)]
    battles = labels_to_battles(recs, "big", "small")
    assert [b["winner"] for b in battles] == ["model_a", "model_b", "tie", "tie"]
    assert all(b["model_a"] == "big" and b["model_b"] == "small" for b in battles)
    assert labels_to_scores(recs[:1], "big", "small") == [{"prompt": "a", "scores": {"big": 1, "small": 0}}]


def test_convert_writes_labels_and_battles(tmp_path: Path) -> None:
    counts = convert_routellm(SAMPLE, tmp_path)
    assert counts == {"mmlu_labels.jsonl": 168, "mmlu_battles.jsonl": 168,
                      "gsm8k_labels.jsonl": 56, "gsm8k_battles.jsonl": 56}
    labels = read_labels(tmp_path / "mmlu_labels.jsonl")
    assert labels == load_mmlu(SAMPLE)  # round trip keeps subject and task
    battle = json.loads((tmp_path / "gsm8k_battles.jsonl").read_text().splitlines()[0])
    assert set(battle) == {"prompt", "model_a", "model_b", "winner"}
    assert battle["model_a"] == "gpt-4-1106-preview"


def test_convert_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert convert_main([str(SAMPLE), str(tmp_path)]) == 0
    assert "mmlu_labels.jsonl\t168" in capsys.readouterr().out
    assert convert_main([]) == 2


def test_read_labels_validates(tmp_path: Path) -> None:
    good = tmp_path / "l.jsonl"
    write_jsonl(good, [{"prompt": "p", "strong": True, "weak": 0.25, "subject": "x"}, {"prompt": "q", "strong": "False", "weak": 1}])
    recs = read_labels(good)
    assert recs[0].strong == 1.0 and recs[0].weak == 0.25 and recs[0].get("subject") == "x"
    assert recs[1].strong == 0.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "strong": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: missing field 'weak'"):
        read_labels(bad)
    bad.write_text('{"prompt": "p", "strong": 1, "weak": 0}\nnot json\n')
    with pytest.raises(ValueError, match=":2: not JSON"):
        read_labels(bad)
    with pytest.raises(ValueError):
        parse_label({"prompt": 3, "strong": 1, "weak": 0})


def test_module_entry_point(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "routing.data", str(SAMPLE), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "gsm8k_battles.jsonl\t56" in done.stdout and "RuntimeWarning" not in done.stderr
