"""Readers for arena-bench-v1 (lm-sys/arena-hard-auto, ``data/arena-bench-v1/``): chat prompts.

Layout under ``root`` (the shared copy is ``../shared/data/arena-bench-v1``)::

    questions.jsonl          {"question_id", "prompt"}
    scores.csv               question_id, then one column per model: the judge's 1-10 score (blank: none)
    answers/<model>.jsonl    {"question_id", "answer"}; "/" in a model id is written "__"

Why a reader of its own: these are the only chat prompts with per-prompt quality for the
RouteLLM pair (gpt-4-1106-preview vs Mixtral-8x7B), so they train the shipped default beside
MMLU and GSM8K, and their real answers make replay files for the simulated provider and the
replayed judge. The judge's scores become pairwise outcomes as in ``docs/evaluation.md``:
strong score > weak -> (1, 0), weak > strong -> (0, 1), equal -> (1, 1), a tie (routing a
tie either way gives the same quality, so it does not move APGR). Prompts the judge did not
score for both models are dropped.

``python -m routing.data.arena replay ROOT OUT.csv --models a,b [--limit N]`` writes a replay
file (``jobs.providers.sim.replay``'s format: ``prompt``, one score column per model and a
``<model>_response`` column each).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from routing.data.labels import LabelRecord
from routing.data.routellm import STRONG_MODEL, WEAK_MODEL

#: where a user's clone can get the data (``../shared`` is not part of it)
SOURCE = "lm-sys/arena-hard-auto, commit 4a705dd6, data/arena-bench-v1/ (Apache-2.0)"


def _questions(root: Path) -> dict[str, str]:
    path = root / "questions.jsonl"
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj.get("question_id"), str) or not isinstance(obj.get("prompt"), str):
                raise ValueError(f"{path}:{n}: needs string fields 'question_id' and 'prompt'")
            out[obj["question_id"]] = obj["prompt"]
    return out


def read_scores(root: str | Path) -> tuple[list[str], list[dict[str, float]]]:
    """``scores.csv`` as (question ids, one {model: score} per question, in file order); blank
    cells are left out. A cell that is not a number is a ValueError naming file:line and column."""
    path = Path(root) / "scores.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if "question_id" not in header:
            raise ValueError(f"{path}: needs a 'question_id' column")
        models = [h for h in header if h != "question_id"]
        rows: list[dict[str, float]] = []
        ids: list[str] = []
        for n, row in enumerate(reader, 2):
            scores: dict[str, float] = {}
            for m in models:
                cell = (row.get(m) or "").strip()
                if cell:
                    try:
                        scores[m] = float(cell)
                    except ValueError:
                        raise ValueError(f"{path}:{n}: column {m!r}: expected a score, got {cell!r}") from None
            ids.append(row["question_id"])
            rows.append(scores)
    return ids, rows


def load_arena_labels(root: str | Path, strong: str = STRONG_MODEL, weak: str = WEAK_MODEL) -> list[LabelRecord]:
    """Win labels of ``strong`` vs ``weak`` for every prompt the judge scored for both."""
    root = Path(root)
    prompts = _questions(root)
    ids, rows = read_scores(root)
    out: list[LabelRecord] = []
    for qid, scores in zip(ids, rows, strict=True):
        if strong not in scores or weak not in scores or qid not in prompts:
            continue
        s, w = scores[strong], scores[weak]
        label = (1.0, 0.0) if s > w else (0.0, 1.0) if w > s else (1.0, 1.0)
        meta = {"task": "arena", "question_id": qid, "strong_score": s, "weak_score": w}
        out.append(LabelRecord(prompts[qid], *label, meta))
    return out


def read_answers(root: str | Path, model: str) -> dict[str, str]:
    """One model's answers by question id."""
    path = Path(root) / "answers" / (model.replace("/", "__") + ".jsonl")
    with open(path, encoding="utf-8") as fh:
        objs = [json.loads(line) for line in fh if line.strip()]
    return {o["question_id"]: str(o["answer"]) for o in objs if "question_id" in o}


def write_replay_csv(root: str | Path, models: Sequence[str], out: str | Path, limit: int | None = None) -> int:
    """A replay file of the prompts every one of ``models`` has a score and an answer for, in
    ``questions.jsonl`` order (the first ``limit`` of them); returns the rows written.

    Prompts are written stripped of surrounding whitespace (39 of the 300 have some, e.g. a
    trailing newline): the replay table's fallback lookup strips the prompt it is asked for,
    not its keys, and the simulated judge always asks with the stripped question, so an
    unstripped key would never be found by the judge. A job may send either form."""
    root = Path(root)
    prompts = _questions(root)
    ids, rows = read_scores(root)
    scores = dict(zip(ids, rows, strict=True))
    answers = {m: read_answers(root, m) for m in models}
    header = ["prompt"] + [c for m in models for c in (m, f"{m}_response")]
    written = 0
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for qid, prompt in prompts.items():
            if limit is not None and written >= limit:
                break
            sc = scores.get(qid, {})
            if not all(m in sc and qid in answers[m] for m in models):
                continue
            writer.writerow([prompt.strip()] + [v for m in models for v in (f"{sc[m]:g}", answers[m][qid])])
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    """``replay ROOT OUT --models a,b [--limit N]``: write a replay CSV of real answers."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m routing.data.arena", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("replay", help="write a replay CSV (prompt, <model> score, <model>_response)")
    rp.add_argument("root")
    rp.add_argument("out")
    rp.add_argument("--models", required=True, help="comma-separated model columns of scores.csv")
    rp.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    n = write_replay_csv(args.root, models, args.out, args.limit)
    print(json.dumps({"out": args.out, "rows": n, "models": models}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
