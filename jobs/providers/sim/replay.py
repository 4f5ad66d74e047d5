"""Labelled answer files (RouteLLM's ``*_responses.csv``) shared by replay mode and grading.

The file has a ``prompt`` column, one boolean column per model (was its answer correct) and
one ``<model>_response`` column per model with the recorded answer. Replay serves those
answers; grading reads the correctness flags. Both must agree on how a prompt is found, so
the lookup lives here once.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_TRUE = {"true", "1", "yes", "y", "t"}


@dataclass(frozen=True)
class Recorded:
    response: str
    correct: float


@dataclass(frozen=True)
class ReplayTable:
    """Recorded answers by prompt, then by CSV model column."""

    path: str
    models: tuple[str, ...]
    rows: dict[str, dict[str, Recorded]]

    def lookup(self, prompt: str, column: str) -> Recorded | None:
        row = self.rows.get(prompt)
        if row is None:
            row = self.rows.get(prompt.strip())
        return None if row is None else row.get(column)

    def accuracy(self, column: str) -> float:
        values = [r[column].correct for r in self.rows.values() if column in r]
        return sum(values) / len(values) if values else float("nan")


def _score(value: str) -> float:
    v = value.strip().lower()
    if v in _TRUE:
        return 1.0
    try:
        return float(v)
    except ValueError:
        return 0.0


@lru_cache(maxsize=8)
def load_replay_table(path: str | Path) -> ReplayTable:
    """Read a labelled CSV once per process (it is a few MB; the sim and grading share it)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if "prompt" not in header:
            raise ValueError(f"{p}: labelled file needs a 'prompt' column (has: {', '.join(header)})")
        models = tuple(h for h in header if h != "prompt" and f"{h}_response" in header)
        if not models:
            raise ValueError(f"{p}: no model columns with a matching '<model>_response' column")
        rows: dict[str, dict[str, Recorded]] = {}
        for rec in reader:
            rows[rec["prompt"]] = {
                m: Recorded(response=rec.get(f"{m}_response") or "", correct=_score(rec.get(m) or "")) for m in models
            }
    return ReplayTable(path=str(p), models=models, rows=rows)


def prompt_of(messages: list[dict]) -> str:
    """The text a labelled file is keyed by: the last user message's content."""
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return "".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else ""
    return ""
