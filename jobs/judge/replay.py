"""The labels judge (``--judge labels:FILE``): verdicts from a file instead of a judge model.

For jobs whose items have known answers (dataset labeling with a gold subset) and for
replaying recorded labels in benchmarks. The file is JSONL, read with the reader of
``routebatch eval --labels`` (:func:`routing.data.labels.iter_jsonl`); each line is one of:

* ``{"prompt", "strong", "weak"}`` — the ``eval --labels`` format: each model's recorded
  quality (a 0/1 correctness or a 1-10 score); weak is good when ``weak >= strong``.
* ``{"prompt", "scores": {model: value, ...}}`` — score columns per model (llmrouter's
  format): the job's strong and weak model are looked up by name.
* ``{"prompt", "gold": "..."}`` — a gold answer: each model's answer is right when it
  matches the gold one exactly after normalisation (:func:`matches_gold`), and weak is good
  when it is right or the strong answer is wrong too (a tie: paying more bought nothing).

A line may carry a ``custom_id``; an item is found by its ``custom_id`` first, then by its
prompt text (exact, then stripped). An item found neither way is ``missing``, as is a prompt
whose lines disagree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.judge.types import JudgeItem, Judgement, JudgementStatus
from routing.adapt.judge import Verdict, verdict_of
from routing.data.labels import iter_jsonl, parse_label

_SPACE = re.compile(r"\s+")
_LEAD = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)\s*", re.IGNORECASE)
_AFTER = re.compile(r"(?:####|\b(?:final\s+)?answer\s*(?:is\s*:?|:))", re.IGNORECASE)


def normalise(text: str) -> str:
    """Case-folded, whitespace collapsed, without a leading "answer:", surrounding quotes,
    a trailing period, or thousands separators in a number."""
    t = _SPACE.sub(" ", text).strip()
    t = _LEAD.sub("", t).strip().strip("\"'`*").strip()
    t = t.rstrip(".").strip().casefold()
    if re.fullmatch(r"[-+]?[\d,]*\.?\d+", t):
        t = t.replace(",", "")
        try:
            value = float(t)
            t = str(int(value)) if value.is_integer() else repr(value)
        except ValueError:
            pass
    return t


def matches_gold(answer: str, gold: str) -> bool:
    """Exact match after :func:`normalise`: the whole answer, or what follows its last
    ``####`` / ``answer:`` / ``the answer is`` (GSM8K style), or its last line."""
    want = normalise(gold)
    if not want:
        return False
    candidates = [answer]
    marks = list(_AFTER.finditer(answer))
    if marks:
        candidates.append(answer[marks[-1].end() :])
    lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
    if lines:
        candidates.append(lines[-1])
    return any(normalise(c) == want for c in candidates)


@dataclass(frozen=True)
class _Label:
    """One line of a labels file: recorded qualities, or a gold answer, or a problem."""

    strong: float | None = None
    weak: float | None = None
    gold: str | None = None
    problem: str | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.strong, self.weak, self.gold, self.problem)


def _parse(obj: Any, where: str, strong_model: str, weak_model: str) -> _Label:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a labels line must be a JSON object")
    if "strong" in obj and "weak" in obj:
        rec = parse_label({**obj, "prompt": obj.get("prompt", "")}, where)
        return _Label(strong=rec.strong, weak=rec.weak)
    if "scores" in obj:
        scores = obj["scores"]
        if not isinstance(scores, dict):
            raise ValueError(f"{where}: scores must be an object {{model: value}}")
        absent = [m for m in (strong_model, weak_model) if m not in scores]
        if absent:
            return _Label(problem=f"no score for model {absent[0]!r}")
        rec = parse_label({"prompt": "", "strong": scores[strong_model], "weak": scores[weak_model]}, where)
        return _Label(strong=rec.strong, weak=rec.weak)
    if "gold" in obj:
        gold = obj["gold"]
        if isinstance(gold, bool) or not isinstance(gold, str | int | float):
            raise ValueError(f"{where}: gold must be a string or a number")
        return _Label(gold=str(gold))
    raise ValueError(f"{where}: need 'strong' and 'weak', or 'scores', or 'gold'")


class LabelsJudge:
    """Judgements looked up in a labels file (the module docstring has the formats).

    ``strong_model`` and ``weak_model`` name the ``scores`` columns to compare; lines of the
    other two formats do not use them.
    """

    def __init__(
        self, lines: Sequence[tuple[str, dict[str, Any]]], strong_model: str = "strong", weak_model: str = "weak"
    ) -> None:
        # one table per way of finding an item; a key whose lines disagree is kept as None
        self._tables: dict[str, dict[str, _Label | None]] = {"custom_id": {}, "prompt": {}, "stripped": {}}
        self.lines = 0
        for where, obj in lines:
            label = _parse(obj, where, strong_model, weak_model)
            cid, prompt = obj.get("custom_id"), obj.get("prompt")
            if cid is None and not isinstance(prompt, str):
                raise ValueError(f"{where}: a labels line needs a 'prompt' or a 'custom_id'")
            if cid is not None:
                self._add("custom_id", str(cid), label)
            if isinstance(prompt, str):
                self._add("prompt", prompt, label)
                self._add("stripped", prompt.strip(), label)
            self.lines += 1

    def _add(self, table: str, key: str, label: _Label) -> None:
        t = self._tables[table]
        if key not in t:
            t[key] = label
        elif (old := t[key]) is not None and old.key() != label.key():
            t[key] = None

    @classmethod
    def from_file(cls, path: str | Path, strong_model: str = "strong", weak_model: str = "weak") -> LabelsJudge:
        lines = [(f"{path}:{n}", obj) for n, obj in iter_jsonl(path)]
        return cls(lines, strong_model, weak_model)

    def _find(self, item: JudgeItem) -> tuple[_Label | None, str | None]:
        for table, key in (("custom_id", item.custom_id), ("prompt", item.question), ("stripped", item.question.strip())):
            t = self._tables[table]
            if key in t:
                label = t[key]
                return (
                    (label, None)
                    if label is not None
                    else (None, f"the item's {table.replace('stripped', 'prompt')} has conflicting labels")
                )
        return None, "no label for this item's custom_id or prompt"

    def judge_one(self, item: JudgeItem) -> Judgement:
        label, why = self._find(item)
        if label is None:
            return Judgement(item.custom_id, JudgementStatus.MISSING, reason=why)
        if label.problem is not None:
            return Judgement(item.custom_id, JudgementStatus.MISSING, reason=label.problem)
        if label.gold is not None:
            if item.strong_answer is None or item.weak_answer is None:
                which = "strong" if item.strong_answer is None else "weak"
                return Judgement(item.custom_id, JudgementStatus.NO_ANSWER, reason=f"no {which} answer to compare")
            strong = float(matches_gold(item.strong_answer, label.gold))
            weak = float(matches_gold(item.weak_answer, label.gold))
            return Judgement(item.custom_id, JudgementStatus.OK, verdict=verdict_of(strong, weak))
        assert label.strong is not None and label.weak is not None
        verdict: Verdict = verdict_of(label.strong, label.weak)
        return Judgement(item.custom_id, JudgementStatus.OK, verdict=verdict)

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        """One judgement per item, in order; no calls, no cost."""
        return [self.judge_one(i) for i in items]
