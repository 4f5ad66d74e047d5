"""Readers for the evaluation files RouteLLM published (lm-sys/RouteLLM, ``routellm/evals/``).

Layout expected under ``root`` (the shared copy is ``../shared/data/routellm``)::

    mmlu/mmlu_<subject>.csv           prompt, <weak model>, <strong model>   (bool columns)
    mmlu/contaminated_prompts.jsonl   {"eval_prompt", ...}: drop these prompts
    gsm8k/gsm8k_responses.csv         prompt, <weak>, <strong>, <model>_response ...
    gsm8k/contaminated_prompts.jsonl

Contaminated prompts are dropped the way RouteLLM does it (every row whose prompt equals an
``eval_prompt``), which leaves 14,037 MMLU and 1,307 GSM8K rows. Duplicate prompts are kept
as separate rows, as RouteLLM keeps them; cross-validation must group them (see
``routing.evaluation.make_folds``) so that a copy of a test prompt is never trained on.

Run ``python -m routing.data ROOT OUT_DIR`` (or ``routebatch convert-routellm ROOT --out OUT_DIR``)
to write labels and battles JSONL files.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

from routing.data.labels import LabelRecord, labels_to_battles, write_jsonl

STRONG_MODEL = "gpt-4-1106-preview"
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"

csv.field_size_limit(sys.maxsize)  # GSM8K responses are long


def _contaminated(path: Path) -> set[str]:
    if not path.exists():
        return set()
    out: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.add(json.loads(line)["eval_prompt"])
    return out


def _bool(value: str, where: str) -> float:
    low = value.strip().lower()
    if low not in {"true", "false", "1", "0", "1.0", "0.0"}:
        raise ValueError(f"{where}: expected True/False, got {value!r}")
    return float(low in {"true", "1", "1.0"})


def _read_csv(path: Path, drop: set[str], strong: str, weak: str, extra: dict[str, str]) -> list[LabelRecord]:
    out: list[LabelRecord] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"prompt", strong, weak} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for n, row in enumerate(reader, 2):
            prompt = row["prompt"]
            if prompt in drop:
                continue
            where = f"{path}:{n}"
            out.append(LabelRecord(prompt, _bool(row[strong], where), _bool(row[weak], where), dict(extra)))
    return out


def load_mmlu(
    root: str | Path,
    subjects: list[str] | None = None,
    strong: str = STRONG_MODEL,
    weak: str = WEAK_MODEL,
) -> list[LabelRecord]:
    """MMLU label records with ``task="mmlu"`` and ``subject``, contaminated prompts dropped.

    Files are read in sorted subject order, so the result is deterministic.
    """
    base = Path(root) / "mmlu"
    files = sorted(base.glob("mmlu_*.csv"))
    if not files:
        raise FileNotFoundError(f"no mmlu_*.csv under {base}")
    drop = _contaminated(base / "contaminated_prompts.jsonl")
    out: list[LabelRecord] = []
    for path in files:
        subject = re.sub(r"^mmlu_", "", path.stem)
        if subjects is not None and subject not in subjects:
            continue
        out.extend(_read_csv(path, drop, strong, weak, {"task": "mmlu", "subject": subject}))
    return out


def load_gsm8k(root: str | Path, strong: str = STRONG_MODEL, weak: str = WEAK_MODEL) -> list[LabelRecord]:
    """GSM8K label records with ``task="gsm8k"`` (and ``subject="gsm8k"``), contaminated dropped."""
    base = Path(root) / "gsm8k"
    drop = _contaminated(base / "contaminated_prompts.jsonl")
    return _read_csv(base / "gsm8k_responses.csv", drop, strong, weak, {"task": "gsm8k", "subject": "gsm8k"})


def convert_routellm(root: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Write ``{mmlu,gsm8k}_labels.jsonl`` and ``{mmlu,gsm8k}_battles.jsonl`` under ``out_dir``.

    Battles name the real models (strong as ``model_a``); returns rows written per file.
    """
    out = Path(out_dir)
    counts: dict[str, int] = {}
    for name, records in (("mmlu", load_mmlu(root)), ("gsm8k", load_gsm8k(root))):
        counts[f"{name}_labels.jsonl"] = write_jsonl(out / f"{name}_labels.jsonl", records)
        battles = labels_to_battles(records, STRONG_MODEL, WEAK_MODEL)
        counts[f"{name}_battles.jsonl"] = write_jsonl(out / f"{name}_battles.jsonl", battles)
    return counts


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m routing.data ROUTELLM_DIR OUT_DIR", file=sys.stderr)
        return 2
    for name, n in convert_routellm(args[0], args[1]).items():
        print(f"{name}\t{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
