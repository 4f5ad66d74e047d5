"""The 40-question arena-bench-v1 fixture read by hand, independently of
:mod:`routing.data.arena`: what the readers' tests and the replayed jobs compare against."""

from __future__ import annotations

import csv
import json
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "arena_sample"
GPT4 = "gpt-4-1106-preview"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def sample_rows() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Prompts by question id (file order) and the raw score cells by question id."""
    prompts = {}
    for line in (SAMPLE / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        prompts[obj["question_id"]] = obj["prompt"]
    with (SAMPLE / "scores.csv").open(newline="", encoding="utf-8") as fh:
        cells = {r["question_id"]: r for r in csv.DictReader(fh)}
    return prompts, cells
