"""A small supervised loop shared by the bert and causal_llm trainers.

Length-bucketed batches in shuffled order, AdamW with linear warm-up/decay, fixed seeds,
cross-entropy over the three classes (weak better, tie, strong better). The model-specific
part is ``logits_fn(model, batch) -> (b, 3)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def fit_classifier(
    model: Any,
    batches: Callable[[int], Iterator[tuple[np.ndarray, dict[str, Any]]]],
    labels: np.ndarray,
    logits_fn: Callable[[Any, dict[str, Any]], Any],
    *,
    epochs: int = 1,
    lr: float = 3e-5,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
    weight_decay: float = 0.01,
    warmup: float = 0.1,
) -> list[dict[str, float]]:
    """Train in place; returns one ``{"epoch", "loss"}`` per epoch.

    ``batches(shuffle_seed)`` yields (row indices into ``labels``, padded tensors) batches
    of ``batch_size`` rows, in an order that depends on the seed.
    """
    import torch

    torch.manual_seed(seed)
    model.train().to(device)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    steps = epochs * ((len(labels) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    n_warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / n_warm, max(0.0, (steps - s) / max(1, steps - n_warm)))
    )
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx, batch in batches(seed + epoch):
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = logits_fn(model, batch).float()
            loss = torch.nn.functional.cross_entropy(logits, y_all[idx].to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append({"epoch": epoch + 1, "loss": round(total / max(count, 1), 5)})
    model.eval()
    return history
