"""Training the matrix factorisation router on battles (CPU, seconds to minutes).

Embeddings are computed once per unique prompt (through the cached embedder), then the
whole model trains on a (prompts, dim) matrix in memory: on ~15k prompts an epoch is a
few dozen small matrix products. Ties are soft targets of 0.5 by default (``ties="drop"``
removes them). A random 10% of prompts is held out to pick the best epoch, then that
state is kept — cheap protection against overfitting a small dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from routing.training.data import Battles, choose_pair


def train_mf(
    battles: Battles,
    embeddings: np.ndarray,
    out: str | Path,
    *,
    strong: str | None = None,
    weak: str | None = None,
    dim: int = 128,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 512,
    weight_decay: float = 1e-4,
    noise: float = 0.0,
    ties: str = "half",
    val_fraction: float = 0.1,
    seed: int = 0,
    embedder: str = "minilm",
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit P, W, w, b on ``battles`` (``embeddings`` rows align with ``battles.prompts``); save to ``out``."""
    import torch

    strong, weak = choose_pair(battles, strong, weak)
    # the matrices are small: one thread avoids OpenMP spin-waits that make a busy
    # 2-core machine 10x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(
            battles,
            embeddings,
            out,
            strong,
            weak,
            dim,
            epochs,
            lr,
            batch_size,
            weight_decay,
            noise,
            ties,
            val_fraction,
            seed,
            embedder,
            extra_config,
        )
    finally:
        torch.set_num_threads(threads)


def _fit(
    battles: Battles,
    embeddings: np.ndarray,
    out: str | Path,
    strong: str,
    weak: str,
    dim: int,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    noise: float,
    ties: str,
    val_fraction: float,
    seed: int,
    embedder: str,
    extra_config: dict[str, Any] | None,
) -> dict[str, Any]:
    import torch

    from routing.routers.mf import save_mf

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    keep = np.ones(len(battles), dtype=bool) if ties == "half" else battles.outcome != 0.5
    n_prompts = len(battles.prompts)
    val_prompts = rng.random(n_prompts) < val_fraction
    if val_fraction <= 0 or n_prompts < 50:  # too few prompts to spare a validation set
        val_prompts[:] = False
    is_val = val_prompts[battles.prompt_idx]
    tr = np.flatnonzero(keep & ~is_val)
    va = np.flatnonzero(keep & is_val)

    E = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    p_idx = torch.as_tensor(battles.prompt_idx)
    a_idx = torch.as_tensor(battles.a_idx)
    b_idx = torch.as_tensor(battles.b_idx)
    y = torch.as_tensor(battles.outcome, dtype=torch.float32)
    M, d = len(battles.models), E.shape[1]

    P = torch.nn.Parameter(torch.randn(M, dim))
    W = torch.nn.Linear(d, dim, bias=False)
    w = torch.nn.Linear(dim, 1, bias=False)
    b = torch.nn.Parameter(torch.zeros(M))
    params = [P, *W.parameters(), *w.parameters(), b]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def logits(rows: torch.Tensor, train: bool) -> torch.Tensor:
        e = E[p_idx[rows]]
        if train and noise > 0:
            e = e + noise * torch.randn_like(e)
        q = W(e)
        Pn = torch.nn.functional.normalize(P, dim=1)
        sa = w(Pn[a_idx[rows]] * q).squeeze(-1) + b[a_idx[rows]]
        sb = w(Pn[b_idx[rows]] * q).squeeze(-1) + b[b_idx[rows]]
        return sa - sb

    def snapshot() -> dict[str, np.ndarray]:
        return {
            "P": P.detach().numpy().copy(),
            "W": W.weight.detach().numpy().copy(),
            "w": w.weight.detach().numpy()[0].copy(),
            "b": b.detach().numpy().copy(),
        }

    best: tuple[float, int, dict[str, np.ndarray]] | None = None
    history = []
    tr_t = torch.as_tensor(tr)
    for epoch in range(1, epochs + 1):
        perm = tr_t[torch.randperm(len(tr_t))]
        total = 0.0
        for start in range(0, len(perm), batch_size):
            rows = perm[start : start + batch_size]
            loss = loss_fn(logits(rows, True), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        train_loss = total / max(len(perm), 1)
        with torch.no_grad():
            val_loss = float(loss_fn(logits(torch.as_tensor(va), False), y[va])) if len(va) else train_loss
        history.append({"epoch": epoch, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5)})
        if best is None or val_loss < best[0]:
            best = (val_loss, epoch, snapshot())
    assert best is not None
    save_mf(
        out,
        models=list(battles.models),
        strong=strong,
        weak=weak,
        embedder=embedder,
        trained_on={
            "battles": len(battles),
            "prompts": n_prompts,
            "best_epoch": best[1],
            "seed": seed,
            "dim": dim,
            "epochs": epochs,
            "lr": lr,
            "ties": ties,
        },
        **(extra_config or {}),
        **best[2],
    )
    return {
        "router": "mf",
        "out": str(out),
        "strong": strong,
        "weak": weak,
        "battles": len(battles),
        "prompts": n_prompts,
        "best_epoch": best[1],
        "val_loss": round(best[0], 5),
        "final_train_loss": history[-1]["train_loss"] if history else None,
    }
