"""Per-prompt quality labels: reading, writing, and turning them into battles.

A label record says how good each model's answer was on one prompt. It is the ground truth
that evaluation scores a router against, and — via :func:`labels_to_battles` — training data
for the preference-based routers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LabelRecord:
    """One prompt with the quality of the strong and the weak model's answer.

    ``group`` is what cross-validation may group by (MMLU subject, GSM8K task, ...);
    ``extra`` keeps any other fields of the input line so that a round trip loses nothing.
    """

    prompt: str
    strong: float
    weak: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.extra.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "strong": self.strong, "weak": self.weak, **self.extra}


def _quality(value: Any, where: str, name: str) -> float:
    """Accept bools, finite numbers and the strings CSV exports use ("True"/"False", "0.5").

    NaN and infinities are refused: JSON readers accept ``NaN``, and one such label turns every
    mean, APGR and interval computed over the file into NaN without a word.
    """
    if isinstance(value, bool):
        return float(value)
    number: float | None = None
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return float(value.strip().lower() == "true")
    if isinstance(value, int | float | str):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = None
    if number is None or not math.isfinite(number):
        raise ValueError(f"{where}: {name} must be a bool or a finite number, got {value!r}")
    return number


def parse_label(obj: Mapping[str, Any], where: str = "record") -> LabelRecord:
    """Validate one decoded JSON object into a :class:`LabelRecord`."""
    try:
        prompt = obj["prompt"]
        strong = obj["strong"]
        weak = obj["weak"]
    except KeyError as exc:
        raise ValueError(f"{where}: missing field {exc.args[0]!r} (need prompt, strong, weak)") from None
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: prompt must be a string")
    extra = {k: v for k, v in obj.items() if k not in {"prompt", "strong", "weak"}}
    return LabelRecord(prompt, _quality(strong, where, "strong"), _quality(weak, where, "weak"), extra)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line names its number."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None


def read_labels(path: str | Path) -> list[LabelRecord]:
    """Read a labels JSONL file (``{"prompt", "strong", "weak", ...}`` per line)."""
    return [parse_label(obj, f"{path}:{n}") for n, obj in iter_jsonl(path)]


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any] | LabelRecord]) -> int:
    """Write records one JSON object per line; returns how many were written."""
    count = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            obj = rec.to_dict() if isinstance(rec, LabelRecord) else dict(rec)
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count


def label_arrays(records: Iterable[LabelRecord]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(prompts, strong, weak) as a list and two float64 arrays."""
    recs = list(records)
    prompts = [r.prompt for r in recs]
    strong = np.fromiter((r.strong for r in recs), dtype=np.float64, count=len(recs))
    weak = np.fromiter((r.weak for r in recs), dtype=np.float64, count=len(recs))
    return prompts, strong, weak


def labels_to_battles(
    records: Iterable[LabelRecord],
    strong_model: str = "strong",
    weak_model: str = "weak",
    tie_margin: float = 0.0,
) -> list[dict[str, str]]:
    """Pairwise battles from per-prompt qualities, one per prompt.

    The strong model is always ``model_a``; the winner is the model whose quality is higher
    by more than ``tie_margin``, else ``"tie"`` (both right or both wrong on 0/1 labels).
    This is how RouteLLM augments its preference data with benchmark labels.
    """
    out: list[dict[str, str]] = []
    for r in records:
        diff = r.strong - r.weak
        winner = "model_a" if diff > tie_margin else "model_b" if diff < -tie_margin else "tie"
        out.append({"prompt": r.prompt, "model_a": strong_model, "model_b": weak_model, "winner": winner})
    return out


def labels_to_scores(
    records: Iterable[LabelRecord], strong_model: str = "strong", weak_model: str = "weak"
) -> list[dict[str, Any]]:
    """The per-model quality format training also accepts: ``{"prompt", "scores": {model: value}}``."""
    return [{"prompt": r.prompt, "scores": {strong_model: r.strong, weak_model: r.weak}} for r in records]
