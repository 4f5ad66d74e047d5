"""Datasets for training and evaluating routers.

Two record shapes flow through the project:

* **labels** — ``{"prompt", "strong", "weak", ...}``: the quality of each model's answer to a
  prompt (0/1 correctness or a judge score). Evaluation (PGR, APGR, CPT) needs these.
* **battles** — ``{"prompt", "model_a", "model_b", "winner"}`` with ``winner`` one of
  ``"model_a" | "model_b" | "tie"``: the pairwise preferences RouteLLM's routers train on.

``routing.data.routellm`` turns the published RouteLLM evaluation files into both.
"""

from routing.data.labels import LabelRecord, labels_to_battles, read_labels, write_jsonl
from routing.data.routellm import convert_routellm, load_gsm8k, load_mmlu

__all__ = [
    "LabelRecord",
    "convert_routellm",
    "labels_to_battles",
    "load_gsm8k",
    "load_mmlu",
    "read_labels",
    "write_jsonl",
]
