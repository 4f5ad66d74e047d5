"""Helpers shared by the HF-model routers (bert, causal_llm) and their trainers.

Device and dtype are picked when a model is first loaded, never at import, so that a
worker can import ``routing`` before forking. On CUDA the model runs in bf16.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


def setup_torch(num_threads: int | None = None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    return torch


def pick_device(request: str | None = None) -> str:
    import torch

    return request or ("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: str, request: str | None = None) -> Any:
    import torch

    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if request:
        return table[request]
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def length_buckets(
    tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int, shuffle_seed: int | None = None
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Tokenise once, sort by length, pad per batch (right padding): yields (indices, tensors).

    With ``shuffle_seed`` the batch order is shuffled (for training) while each batch keeps
    prompts of similar length.
    """
    from routing.embeddings import pad_buckets

    ids = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
    )["input_ids"]
    return pad_buckets(tokenizer, ids, batch_size, shuffle_seed)


def pair_labels(battles: Any, strong: str, weak: str) -> tuple[list[str], np.ndarray]:
    """(prompts, class) for strong-vs-weak battles: 0 weak better, 1 tie, 2 strong better."""
    idx, y = battles.pair(strong, weak)
    if idx.size == 0:
        raise ValueError(f"no battles between {strong!r} and {weak!r} in the training data")
    prompts = [battles.prompts[i] for i in idx]
    return prompts, np.rint(y * 2).astype(np.int64)
