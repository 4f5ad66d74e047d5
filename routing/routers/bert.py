"""BERT classifier router: a sequence classifier over (weak better, tie, strong better).

Fine-tuned from any local HF encoder (default: the installed MiniLM weights). The
strong-win probability is the softmax mass of "strong better", as in RouteLLM. Unlike
RouteLLM it scores length-bucketed batches under ``inference_mode`` on whatever device is
present (bf16 on CUDA), and it loads the model on the first batch, not at construction.

Checkpoint: ``router.json`` + ``model/`` (``save_pretrained`` of the classifier and its tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routing.base import Router
from routing.routers import _checkpoint as ckpt
from routing.routers import _hf

LABELS = ["weak_better", "tie", "strong_better"]


class BertRouter(Router):
    name = "bert"

    def __init__(
        self,
        path: str | None = None,
        strong: str | None = None,
        weak: str | None = None,
        batch_size: Any = 32,
        max_length: Any = None,
        device: str | None = None,
        num_threads: Any = None,
        dtype: str | None = None,
    ) -> None:
        self.path = ckpt.resolve("bert", path)
        self.config = ckpt.read_config(self.path, expect="bert")
        self.strong, self.weak = ckpt.pick_pair(self.config, strong, weak)
        # the classifier was trained for one ordered pair; the swapped pair reads the other class
        self._column = 2 if self.strong == self.config["strong"] else 0
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or self.config.get("max_length", 512))
        self.device_request = device
        self.num_threads = int(num_threads) if num_threads not in (None, "") else None
        self.dtype_request = dtype
        self._model: Any = None
        self._tokenizer: Any = None
        self.device: str | None = None

    def _load(self) -> None:
        if self._model is not None:
            return
        _hf.setup_torch(self.num_threads)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = _hf.pick_device(self.device_request)
        model_dir = self.path / "model"
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=_hf.pick_dtype(self.device, self.dtype_request)
        )
        self._model = model.eval().to(self.device)

    def probabilities(self, prompts: Sequence[str]) -> np.ndarray:
        """Class probabilities (n, 3) in :data:`LABELS` order."""
        import torch

        self._load()
        out = np.zeros((len(prompts), 3), dtype=np.float64)
        if not len(prompts):
            return out
        with torch.inference_mode():
            for idx, batch in _hf.length_buckets(self._tokenizer, prompts, self.max_length, self.batch_size):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self._model(**batch).logits.float()
                out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return self.probabilities(prompts)[:, self._column]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "checkpoint": str(self.path),
            "fingerprint": ckpt.fingerprint(self.path),
            "strong": self.strong,
            "weak": self.weak,
            "base": self.config.get("base"),
        }


def write_bert_config(out: Path, *, strong: str, weak: str, base: str, max_length: int, **extra: Any) -> None:
    ckpt.write_config(
        out,
        {
            "router": "bert",
            "strong": strong,
            "weak": weak,
            "models": [strong, weak],
            "labels": LABELS,
            "base": base,
            "max_length": max_length,
            **extra,
        },
    )
