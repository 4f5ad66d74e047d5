"""Pairwise verdicts, and a judge that replays them from recorded labels.

A verdict answers one question per item: is the weak model's answer as good as the strong
model's? That is what routing needs (send an item to the weak model exactly when it is),
and what a pairwise judge can answer reliably. Ties count as "weak is good": paying for
the strong model buys nothing on a tie. From recorded per-prompt qualities (the
``eval --labels`` format, :mod:`routing.data.labels`): ``weak >= strong`` — an arena score
1-10 or a 0/1 correctness alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np

from routing.data.labels import LabelRecord, read_labels


class Verdict(StrEnum):
    """A pairwise judge's answer for one item."""

    STRONG = "strong"  # the strong answer is better
    WEAK = "weak"  # the weak answer is better
    TIE = "tie"  # as good as each other (or the two judge orders disagree)

    @property
    def weak_good(self) -> float:
        """1.0 when the weak answer is as good as the strong one (ties included)."""
        return 0.0 if self is Verdict.STRONG else 1.0


def verdict_of(strong: float, weak: float) -> Verdict:
    """The verdict recorded qualities imply (higher is better)."""
    if weak > strong:
        return Verdict.WEAK
    if weak == strong:
        return Verdict.TIE
    return Verdict.STRONG


def weak_good_from_qualities(strong: Sequence[float] | np.ndarray, weak: Sequence[float] | np.ndarray) -> np.ndarray:
    """1.0 where ``weak >= strong`` (ties are weak-good), else 0.0; float64."""
    a = np.asarray(strong, dtype=np.float64)
    b = np.asarray(weak, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"strong and weak differ in shape: {a.shape}, {b.shape}")
    return (b >= a).astype(np.float64)


class ReplayJudge:
    """Verdicts looked up from recorded labels, by prompt (or by position).

    What a benchmark or a job with a gold subset uses instead of calling a judge model.
    A prompt that occurs more than once must have the same verdict each time, else it is
    ambiguous and refused; :meth:`judge_indices` looks up by position instead.
    """

    def __init__(self, records: Iterable[LabelRecord]) -> None:
        self.records = list(records)
        self._by_prompt: dict[str, Verdict] = {}
        ambiguous: set[str] = set()
        for r in self.records:
            v = verdict_of(r.strong, r.weak)
            if self._by_prompt.setdefault(r.prompt, v) is not v:
                ambiguous.add(r.prompt)
        for p in ambiguous:
            del self._by_prompt[p]
        self._ambiguous = ambiguous
        self.calls = 0

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayJudge:
        """A judge over a labels JSONL file (``{"prompt", "strong", "weak", ...}`` per line)."""
        return cls(read_labels(path))

    def verdict(self, prompt: str) -> Verdict:
        self.calls += 1
        try:
            return self._by_prompt[prompt]
        except KeyError:
            why = "has conflicting labels" if prompt in self._ambiguous else "has no recorded label"
            raise ValueError(f"replay judge: prompt {prompt[:60]!r} {why}") from None

    def judge(self, prompts: Sequence[str]) -> np.ndarray:
        """weak-good (1.0/0.0) per prompt."""
        return np.array([self.verdict(p).weak_good for p in prompts], dtype=np.float64)

    def judge_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """weak-good per record position (for data with repeated prompts)."""
        self.calls += len(indices)
        return np.array(
            [verdict_of(self.records[int(i)].strong, self.records[int(i)].weak).weak_good for i in indices],
            dtype=np.float64,
        )
