"""Training data for the preference routers: battles, and per-model labels turned into battles.

Accepted JSONL lines (the format is detected per line, so files may mix them):

- battles: ``{"prompt", "model_a", "model_b", "winner": "model_a" | "model_b" | "tie"}``
  (RouteLLM also writes ``"tie (bothbad)"``: treated as a tie);
- per-model quality labels: ``{"prompt", "scores": {"model": value, ...}}``, one battle per
  pair of models (higher value wins, equal values tie: correct/incorrect labels give
  "strong correct & weak wrong -> strong wins", "both right or both wrong -> tie");
- strong/weak labels, as ``routebatch eval`` reads them: ``{"prompt", "strong", "weak"}``;
  the two values are scores of the models named by ``--strong``/``--weak``.

Everything becomes a :class:`Battles` table of integer arrays over unique prompts and
models, which is what the vectorised trainers want.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

WINNERS = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}


@dataclass
class Battles:
    """Pairwise outcomes over unique prompts.

    ``outcome`` is 1.0 when ``model_a`` won, 0.0 when ``model_b`` won and 0.5 for a tie.
    """

    prompts: list[str]
    models: list[str]
    prompt_idx: np.ndarray
    a_idx: np.ndarray
    b_idx: np.ndarray
    outcome: np.ndarray

    def __len__(self) -> int:
        return int(self.outcome.size)

    def win_rates(self) -> dict[str, float]:
        """Share of battles each model won (ties count half): a sanity check and a default."""
        rates: dict[str, float] = {}
        for m, name in enumerate(self.models):
            won = np.where(self.a_idx == m, self.outcome, 0.0) + np.where(self.b_idx == m, 1 - self.outcome, 0.0)
            played = (self.a_idx == m) | (self.b_idx == m)
            rates[name] = float(won[played].mean()) if played.any() else float("nan")
        return rates

    def pair(self, strong: str, weak: str) -> tuple[np.ndarray, np.ndarray]:
        """(prompt index, strong-side outcome) for battles between exactly these two models."""
        s, w = self.models.index(strong), self.models.index(weak)
        fwd = (self.a_idx == s) & (self.b_idx == w)
        rev = (self.a_idx == w) & (self.b_idx == s)
        idx = np.concatenate([self.prompt_idx[fwd], self.prompt_idx[rev]])
        y = np.concatenate([self.outcome[fwd], 1.0 - self.outcome[rev]])
        return idx, y


def record_to_battles(
    obj: Mapping[str, Any], strong: str = "strong", weak: str = "weak", tie_margin: float = 0.0, where: str = "record"
) -> list[tuple[str, str, str, float]]:
    """One input line -> [(prompt, model_a, model_b, outcome)]."""
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: missing string field 'prompt'")
    if "winner" in obj:
        try:
            outcome = WINNERS[str(obj["winner"])]
            return [(prompt, str(obj["model_a"]), str(obj["model_b"]), outcome)]
        except KeyError as exc:
            raise ValueError(
                f"{where}: battle needs model_a, model_b and winner in {sorted(WINNERS)}; bad or missing {exc.args[0]!r}"
            ) from None
    if "scores" in obj:
        scores = obj["scores"]
        if not isinstance(scores, Mapping) or len(scores) < 2:
            raise ValueError(f"{where}: 'scores' must map at least two models to values")
    elif "strong" in obj and "weak" in obj:
        scores = {strong: obj["strong"], weak: obj["weak"]}
    else:
        raise ValueError(f"{where}: expected a battle (model_a, model_b, winner), 'scores', or strong/weak labels")
    out = []
    for (ma, va), (mb, vb) in combinations(scores.items(), 2):
        diff = float(va) - float(vb)
        out.append((prompt, str(ma), str(mb), 1.0 if diff > tie_margin else 0.0 if diff < -tie_margin else 0.5))
    return out


def battles_from_records(
    records: Iterable[Mapping[str, Any]], strong: str = "strong", weak: str = "weak", tie_margin: float = 0.0
) -> Battles:
    """Build a :class:`Battles` table from decoded JSON objects (any mix of the formats)."""
    prompt_ix: dict[str, int] = {}
    model_ix: dict[str, int] = {}
    p, a, b, y = [], [], [], []
    for n, obj in enumerate(records, 1):
        for prompt, ma, mb, outcome in record_to_battles(obj, strong, weak, tie_margin, where=f"record {n}"):
            p.append(prompt_ix.setdefault(prompt, len(prompt_ix)))
            a.append(model_ix.setdefault(ma, len(model_ix)))
            b.append(model_ix.setdefault(mb, len(model_ix)))
            y.append(outcome)
    if not y:
        raise ValueError("no training records")
    return Battles(
        list(prompt_ix),
        list(model_ix),
        np.asarray(p, np.int64),
        np.asarray(a, np.int64),
        np.asarray(b, np.int64),
        np.asarray(y, np.float64),
    )


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
    return out


def read_battles(path: str | Path, strong: str = "strong", weak: str = "weak", tie_margin: float = 0.0) -> Battles:
    """Read a training JSONL file in any of the accepted formats."""
    return battles_from_records(read_jsonl(path), strong, weak, tie_margin)


def choose_pair(battles: Battles, strong: str | None = None, weak: str | None = None) -> tuple[str, str]:
    """The (strong, weak) pair a router scores: given names, or the best and worst by win rate."""
    rates = battles.win_rates()
    for name in (strong, weak):
        if name is not None and name not in rates:
            raise ValueError(f"model {name!r} is not in the training data; models: {', '.join(battles.models)}")
    ranked = sorted(rates, key=lambda m: (-rates[m], m))
    if strong is None:
        strong = next(m for m in ranked if m != weak)
    if weak is None:
        weak = next(m for m in reversed(ranked) if m != strong)
    if strong == weak:
        raise ValueError("strong and weak must be different models")
    return strong, weak


def prompt_text(obj: Mapping[str, Any], where: str = "record") -> str:
    """The text a router sees for one input line: ``prompt``, or the ``messages`` contents.

    Accepts OpenAI Batch-style lines too (``{"body": {"messages": [...]}}``).
    """
    if isinstance(obj.get("prompt"), str):
        return obj["prompt"]
    nested = obj.get("body")
    body: Mapping[str, Any] = nested if isinstance(nested, Mapping) else obj
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        parts = []
        for m in messages:
            content = m.get("content") if isinstance(m, Mapping) else None
            if isinstance(content, list):  # content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            if isinstance(content, str):
                parts.append(content)
        if parts:
            return "\n".join(parts)
    if isinstance(body.get("prompt"), str):
        return body["prompt"]
    raise ValueError(f"{where}: needs a 'prompt' string or a 'messages' list")
