"""Realised quality of a job on a labelled file: accuracy (or mean score) next to its cost.

A labelled file (RouteLLM's ``*_responses.csv``) records, for every prompt, each model's
answer and whether it was correct. A job routed over those prompts and served by the
simulated provider in replay mode gets exactly the recorded answers, so its quality is the
mean recorded correctness of the model that answered each prompt. Grading also checks that
the served text *is* the recorded answer: a mismatch means the run did not replay what the
labels describe (wrong model mapping, truncation by ``max_tokens``), and the accuracy would
be a fiction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs.providers.sim.replay import load_replay_table


@dataclass
class ModelGrade:
    answered: int = 0
    score_sum: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.score_sum / self.answered if self.answered else None


@dataclass
class GradeReport:
    labels_path: str
    total: int = 0  # rows given
    graded: int = 0  # rows whose prompt and model were found in the labels
    missing_prompt: int = 0
    unmapped_model: int = 0
    exact_matches: int = 0  # served text == recorded answer
    score_sum: float = 0.0
    per_model: dict[str, ModelGrade] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)  # each model's accuracy on the same prompts
    mismatched_examples: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.score_sum / self.graded if self.graded else None

    @property
    def mismatches(self) -> int:
        return self.graded - self.exact_matches

    @property
    def all_exact(self) -> bool:
        return self.graded > 0 and self.mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_model"] = {k: {"answered": v.answered, "accuracy": v.accuracy} for k, v in self.per_model.items()}
        d.update(n=self.graded, accuracy=self.accuracy, mismatches=self.mismatches, all_exact=self.all_exact)
        d.pop("score_sum")
        return d


def grade(
    rows: Iterable[tuple[str, str, str]],
    labels_path: str | Path,
    model_columns: dict[str, str],
) -> GradeReport:
    """Grade ``(prompt, model_key, response_text)`` rows against a labelled CSV.

    ``model_columns`` maps the job's model keys to the CSV's model columns (e.g.
    ``{"sim-strong": "gpt-4-1106-preview"}``); a key that is itself a column needs no entry.
    ``reference`` holds each mapped model's accuracy over the same graded prompts, i.e. what
    sending everything to that model would have scored.
    """
    table = load_replay_table(str(labels_path))
    report = GradeReport(labels_path=str(labels_path))
    graded_prompts: list[str] = []
    for prompt, model_key, text in rows:
        report.total += 1
        column = model_columns.get(model_key, model_key)
        if column not in table.models:
            report.unmapped_model += 1
            continue
        rec = table.lookup(prompt, column)
        if rec is None:
            report.missing_prompt += 1
            continue
        report.graded += 1
        report.score_sum += rec.correct
        mg = report.per_model.setdefault(model_key, ModelGrade())
        mg.answered += 1
        mg.score_sum += rec.correct
        if (text or "") == rec.response:
            report.exact_matches += 1
        elif len(report.mismatched_examples) < 5:
            report.mismatched_examples.append(prompt[:80])
        graded_prompts.append(prompt)
    for key, column in {**{c: c for c in table.models}, **model_columns}.items():
        if column in table.models and graded_prompts:
            scores = [table.lookup(p, column) for p in graded_prompts]
            report.reference[key] = sum(r.correct for r in scores if r) / len(graded_prompts)
    return report


def model_columns_from_config(config: Any) -> dict[str, str]:
    """Model key -> CSV column, from the ``replay_models`` of the simulated providers.

    The sim receives the API model id (``ModelConfig.name`` or the key); the mapping in the
    config is keyed by that id, so it is translated back to model keys here.
    """
    out: dict[str, str] = {}
    for key, m in config.models.items():
        sim = config.providers[m.provider].simulated or {}
        mapping = sim.get("replay_models") or {}
        api_id = m.name or key
        if api_id in mapping:
            out[key] = mapping[api_id]
    return out
