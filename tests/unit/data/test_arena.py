"""Readers of arena-bench-v1 (:mod:`routing.data.arena`), on the 40-question sample in
tests/fixtures/arena_sample (no ../shared needed) and on tiny hand-made datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from jobs.providers.sim.replay import load_replay_table
from routing.data.arena import load_arena_labels, main, read_answers, read_scores, write_replay_csv
from tests.unit.data.arena_sample import GPT4, MIXTRAL, SAMPLE
from tests.unit.data.arena_sample import sample_rows as _sample_rows

PAIR = [GPT4, MIXTRAL]


def _answers_by_hand(model: str) -> dict[str, str]:
    path = SAMPLE / "answers" / (model.replace("/", "__") + ".jsonl")
    return {o["question_id"]: o["answer"] for o in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def _tiny(root: Path, scores: list[list[str]], header: list[str] | None = None, questions: int | None = None) -> Path:
    """A dataset of ``len(scores)`` questions q0, q1, ... with models ``s`` and ``w``."""
    header = header or ["question_id", "s", "w"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "answers").mkdir(exist_ok=True)
    n = len(scores) if questions is None else questions
    with (root / "questions.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"question_id": f"q{i}", "prompt": f"prompt {i}?"}) + "\n")
    with (root / "scores.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, row in enumerate(scores):
            w.writerow([f"q{i}", *row])
    for model in header[1:]:
        with (root / "answers" / (model.replace("/", "__") + ".jsonl")).open("w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps({"question_id": f"q{i}", "answer": f"{model} says {i}"}) + "\n")
    return root


# --- the sample ----------------------------------------------------------------------------


def test_sample_is_the_documented_excerpt() -> None:
    prompts, cells = _sample_rows()
    assert len(prompts) == 40 and list(cells) == list(prompts)
    ids, rows = read_scores(SAMPLE)
    assert ids == list(prompts) and set(rows[0]) == {GPT4, MIXTRAL, "claude-2.1", "claude-instant-1"}
    assert rows[-1] == {GPT4: 10.0, "claude-2.1": 7.0, "claude-instant-1": 8.0}  # the blank Mixtral cell is left out
    with (SAMPLE / "scores.csv").open(newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["question_id", GPT4, MIXTRAL, "claude-2.1", "claude-instant-1"]
    for m in (GPT4, MIXTRAL, "claude-2.1", "claude-instant-1"):
        assert set(read_answers(SAMPLE, m)) == set(prompts)
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 400_000


def test_sample_win_labels_follow_the_score_comparison() -> None:
    prompts, cells = _sample_rows()
    records = load_arena_labels(SAMPLE, GPT4, MIXTRAL)
    # the 40th question has no Mixtral score: dropped
    assert cells[list(cells)[-1]][MIXTRAL] == ""
    assert len(records) == 39
    assert [r.get("question_id") for r in records] == list(prompts)[:39]
    counts = {"strong": 0, "weak": 0, "tie": 0}
    for r in records:
        qid = r.get("question_id")
        s, w = float(cells[qid][GPT4]), float(cells[qid][MIXTRAL])
        assert r.prompt == prompts[qid] and r.get("task") == "arena"
        assert (r.get("strong_score"), r.get("weak_score")) == (s, w)
        expected = (1.0, 0.0) if s > w else (0.0, 1.0) if w > s else (1.0, 1.0)
        assert (r.strong, r.weak) == expected
        counts["strong" if s > w else "weak" if w > s else "tie"] += 1
    assert counts == {"strong": 17, "weak": 4, "tie": 18}
    # the first question: both 10 -> a tie; the fourth: 10 vs 2 -> strong; the fifth: 4 vs 10 -> weak
    assert [(r.strong, r.weak) for r in records[:5]] == [(1.0, 1.0), (1.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]


def test_other_pairs_are_any_two_columns() -> None:
    records = load_arena_labels(SAMPLE, "claude-2.1", "claude-instant-1")
    assert len(records) == 40  # both claudes scored every sample question
    _, cells = _sample_rows()
    for r in records:
        c = cells[r.get("question_id")]
        assert (r.get("strong_score"), r.get("weak_score")) == (float(c["claude-2.1"]), float(c["claude-instant-1"]))


def test_replay_csv_round_trips_through_the_replay_table(tmp_path: Path) -> None:
    prompts, cells = _sample_rows()
    out = tmp_path / "replay.csv"
    assert write_replay_csv(SAMPLE, PAIR, out) == 39
    with out.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["prompt", GPT4, f"{GPT4}_response", MIXTRAL, f"{MIXTRAL}_response"]
    table = load_replay_table(out)
    assert table.models == (GPT4, MIXTRAL)
    answers = {m: _answers_by_hand(m) for m in PAIR}
    kept = list(prompts)[:39]
    # questions.jsonl order, each prompt stripped of surrounding whitespace (the judge's lookup form)
    assert list(table.rows) == [prompts[q].strip() for q in kept]
    assert any(prompts[q] != prompts[q].strip() for q in kept)  # the sample has such prompts
    for qid in kept:
        for m in PAIR:
            rec = table.lookup(prompts[qid], m)  # a job sends the prompt verbatim: found too
            assert rec is not None
            assert table.lookup(prompts[qid].strip(), m) == rec
            assert rec.correct == float(cells[qid][m])
            assert rec.response == answers[m][qid]  # exact, leading spaces and newlines included
    assert table.lookup(prompts[list(prompts)[39]], GPT4) is None  # the unscored question is not in the file
    # the replay table's mean "accuracy" is the mean judged score
    assert table.accuracy(GPT4) == pytest.approx(sum(float(cells[q][GPT4]) for q in kept) / 39)


def test_replay_limit_is_respected(tmp_path: Path) -> None:
    prompts, _ = _sample_rows()
    out = tmp_path / "five.csv"
    assert write_replay_csv(SAMPLE, PAIR, out, limit=5) == 5
    assert list(load_replay_table(out).rows) == [prompts[q].strip() for q in list(prompts)[:5]]
    # a limit beyond what is there writes what is there
    assert write_replay_csv(SAMPLE, PAIR, tmp_path / "all.csv", limit=1000) == 39
    assert write_replay_csv(SAMPLE, PAIR, tmp_path / "none.csv", limit=0) == 0


def test_replay_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.csv"
    assert main(["replay", str(SAMPLE), str(out), "--models", f"{GPT4}, {MIXTRAL}", "--limit", "7"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"out": str(out), "rows": 7, "models": PAIR}
    direct = tmp_path / "direct.csv"
    write_replay_csv(SAMPLE, PAIR, direct, limit=7)
    assert out.read_bytes() == direct.read_bytes()
    with pytest.raises(SystemExit):
        main(["replay", str(SAMPLE), str(out)])  # --models is required


# --- edge cases on tiny datasets -------------------------------------------------------------


def test_labels_strong_weak_tie_and_dropped(tmp_path: Path) -> None:
    root = _tiny(
        tmp_path / "d",
        [
            ["9", "3"],  # q0 strong better
            ["2", "8.5"],  # q1 weak better
            ["7", "7.0"],  # q2 equal -> tie
            ["", "5"],  # q3 no strong score
            ["6", " "],  # q4 blank (whitespace) weak score
            ["4", "4"],  # q5 scored but not in questions.jsonl
        ],
        questions=5,
    )
    records = load_arena_labels(root, "s", "w")
    assert [(r.get("question_id"), r.strong, r.weak) for r in records] == [
        ("q0", 1.0, 0.0),
        ("q1", 0.0, 1.0),
        ("q2", 1.0, 1.0),
    ]
    assert records[1].prompt == "prompt 1?" and records[1].get("weak_score") == 8.5
    # a pair naming a column that is not there: nothing is scored for it
    assert load_arena_labels(root, "s", "absent") == []


def test_bad_score_names_file_line_and_column(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "d", [["9", "3"], ["2", "n/a"]])
    with pytest.raises(ValueError) as err:
        load_arena_labels(root, "s", "w")
    msg = str(err.value)
    assert f"{root / 'scores.csv'}:3:" in msg  # header is line 1, q0 line 2, q1 line 3
    assert "'w'" in msg and "'n/a'" in msg
    with pytest.raises(ValueError, match=r"scores\.csv:3: column 'w'"):
        write_replay_csv(root, ["s", "w"], tmp_path / "x.csv")


def test_missing_question_id_column_and_bad_question_line(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "d", [["1", "2"]], header=["qid", "s", "w"])
    with pytest.raises(ValueError, match="needs a 'question_id' column"):
        read_scores(root)
    root2 = _tiny(tmp_path / "e", [["1", "2"]])
    with (root2 / "questions.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps({"question_id": 7, "prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"questions\.jsonl:3: needs string fields"):
        load_arena_labels(root2, "s", "w")


def test_replay_skips_prompts_without_score_or_answer(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "d", [["9", "3"], ["", "4"], ["5", "5"], ["1.5", "2"]])
    # q2 has scores but no answer of w
    path = root / "answers" / "w.jsonl"
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if '"q2"' not in ln]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # a trailing blank line is tolerated
    out = tmp_path / "r.csv"
    assert write_replay_csv(root, ["s", "w"], out) == 2
    table = load_replay_table(out)
    assert list(table.rows) == ["prompt 0?", "prompt 3?"]
    rec = table.lookup("prompt 3?", "s")
    assert rec is not None and rec.correct == 1.5 and rec.response == "s says 3"
    assert table.lookup("prompt 3?", "w").response == "w says 3"  # type: ignore[union-attr]
    # --limit counts rows written, not questions looked at
    assert write_replay_csv(root, ["s", "w"], tmp_path / "one.csv", limit=1) == 1
    assert write_replay_csv(root, ["s"], tmp_path / "s.csv") == 3  # q2 is fine for s alone


def test_read_answers_maps_slashes(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "d", [["1", "2"]], header=["question_id", "org/model", "w"])
    assert (root / "answers" / "org__model.jsonl").exists()
    assert read_answers(root, "org/model") == {"q0": "org/model says 0"}
