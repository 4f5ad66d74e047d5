"""The simulator's judge: verdicts from a hidden per-prompt difficulty, so adaptation is testable.

A simulated job needs a ground truth that a router can learn from a small judged sample and
that a test can compute on its own. The rule, all of it deterministic:

* **Difficulty.** ``d(prompt) = (1 - signal) * u + signal * s`` in ``[0, 1)``, where ``u`` is
  uniform from a hash of the prompt (stripped of surrounding whitespace; not the sim's
  ``seed``, so the truth is a property of the prompt) and ``s = min(1, log(1 + words) /
  log(1 + signal_words))`` grows with the prompt's word count. ``signal`` (default 0.6) is how
  learnable it is: 0 is pure noise no router can learn; with the default, longer prompts are
  harder, which a router sees through its word-count feature.
* **Answer quality.** A model's answer to a prompt is good when ``d < threshold(model)``:
  ``thresholds[model]`` when given, else ``weak_threshold`` (0.5) for a model whose name
  contains ``weak``, ``mini`` or ``small``, else ``strong_threshold`` (0.9). A generated answer
  names its model (``[sim-weak] ...``); an answer without that prefix is not good, unless the
  sim replays a labelled CSV: an answer that is (a prefix of) a recorded one has the recorded
  correctness.
* **Verdict.** A judge request (a prompt laid out as :mod:`jobs.judge.template`) is answered
  ``[[A]]`` when only answer A is good (or better, on replayed scores), ``[[B]]`` when only B
  is, ``[[C]]`` when both or neither are. Both orders therefore agree and the combined
  verdict is the truth: the weak answer is as good as the strong one exactly when ``d`` is
  below the weak model's threshold or at least the strong one's. ``position_bias`` (default
  0) is the share of prompts (by hash) on which the judge answers ``[[A]]`` whatever it reads,
  the bias that judging in both orders turns into a tie.

Options come from the provider's ``simulated.judge`` table (keys as the fields of
:class:`JudgeRule`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from jobs.judge.template import Pairwise, split

if TYPE_CHECKING:
    from jobs.providers.sim.replay import ReplayTable

WEAK_NAME_MARKERS = ("weak", "mini", "small")
_MODEL_PREFIX = re.compile(r"\[([^\[\]\n]+)\]")


def _unit(*parts: str) -> float:
    """A uniform number in [0, 1) from a hash of ``parts``."""
    digest = hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def difficulty(prompt: str, signal: float = 0.6, signal_words: int = 64) -> float:
    """The hidden difficulty of ``prompt`` in [0, 1) (the module docstring has the rule)."""
    text = prompt.strip()
    u = _unit("routebatch-sim-difficulty", text)
    s = min(1.0, math.log1p(len(text.split())) / math.log1p(signal_words))
    return (1.0 - signal) * u + signal * s


def answer_model(answer: str) -> str | None:
    """The model a generated sim answer names (``[sim-weak] ...`` -> ``sim-weak``), or None."""
    m = _MODEL_PREFIX.match(answer.lstrip())
    return m.group(1) if m else None


@dataclass(frozen=True)
class JudgeRule:
    """The simulated judge's parameters (``simulated.judge``); see the module docstring."""

    strong_threshold: float = 0.9
    weak_threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    signal: float = 0.6
    signal_words: int = 64
    position_bias: float = 0.0

    @classmethod
    def from_dict(cls, table: Mapping[str, Any] | None) -> JudgeRule:
        """Validate a ``simulated.judge`` table; an unknown key or a value out of range is a ValueError."""
        opts = dict(table or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(opts) - known)
        if unknown:
            raise ValueError(f"simulated.judge: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "thresholds" in opts:
            opts["thresholds"] = {str(k): float(v) for k, v in dict(opts["thresholds"]).items()}
        rule = cls(**opts)
        unit_values = {
            "strong_threshold": rule.strong_threshold,
            "weak_threshold": rule.weak_threshold,
            "signal": rule.signal,
            "position_bias": rule.position_bias,
            **{f"thresholds.{k}": v for k, v in rule.thresholds.items()},
        }
        for key, value in unit_values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"simulated.judge.{key}: must be a number within [0, 1], got {value!r}")
        if isinstance(rule.signal_words, bool) or not isinstance(rule.signal_words, int) or rule.signal_words < 1:
            raise ValueError("simulated.judge.signal_words: must be an integer >= 1")
        return rule

    def difficulty(self, prompt: str) -> float:
        return difficulty(prompt, self.signal, self.signal_words)

    def threshold(self, model: str) -> float:
        """Below which difficulty ``model``'s answers are good."""
        if model in self.thresholds:
            return self.thresholds[model]
        low = model.lower()
        return self.weak_threshold if any(w in low for w in WEAK_NAME_MARKERS) else self.strong_threshold

    def good(self, model: str, prompt: str) -> bool:
        """Whether ``model``'s (generated) answer to ``prompt`` is good."""
        return self.difficulty(prompt) < self.threshold(model)

    def weak_good(self, strong: str, weak: str, prompt: str) -> bool:
        """The truth a judge should find: ``weak``'s answer is as good as ``strong``'s."""
        return self.good(weak, prompt) >= self.good(strong, prompt)

    def quality(self, question: str, answer: str, replay: ReplayTable | None = None) -> float:
        """1.0/0.0 for a generated answer (by its model's threshold); the recorded
        correctness for a replayed one; 0.0 for an answer the sim cannot attribute."""
        if replay is not None:
            row = replay.rows.get(question) or replay.rows.get(question.strip())
            for rec in (row or {}).values():
                recorded = rec.response.strip()
                if answer and recorded and (answer == recorded or recorded.startswith(answer)):
                    return rec.correct
        model = answer_model(answer)
        if model is None:
            return 0.0
        return 1.0 if self.good(model, question) else 0.0

    def token(self, pair: Pairwise, replay: ReplayTable | None = None) -> str:
        """``A``, ``B`` or ``C``: what the simulated judge says of one rendered pair."""
        if self.position_bias > 0 and _unit("routebatch-sim-position-bias", pair.question) < self.position_bias:
            return "A"
        qa = self.quality(pair.question, pair.answer_a, replay)
        qb = self.quality(pair.question, pair.answer_b, replay)
        return "A" if qa > qb else "B" if qb > qa else "C"

    def answer(self, prompt: str, replay: ReplayTable | None = None) -> str | None:
        """The judge's answer to ``prompt`` when it is a pairwise judge request, else None."""
        pair = split(prompt)
        if pair is None:
            return None
        return f"[[{self.token(pair, replay)}]]"
