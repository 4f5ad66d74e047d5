"""Building an SW ranking checkpoint: there is nothing to fit, only battles to embed and store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from routing.training.data import Battles, choose_pair


def build_sw(
    battles: Battles,
    embeddings: np.ndarray,
    out: str | Path,
    *,
    strong: str | None = None,
    weak: str | None = None,
    gamma: float = 1.0,
    prior: float = 0.0,
    embedder: str = "minilm",
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save the battles with one embedding per unique prompt (``embeddings`` aligns with ``battles.prompts``)."""
    from routing.routers.sw_ranking import save_sw

    strong, weak = choose_pair(battles, strong, weak)
    save_sw(
        out,
        models=list(battles.models),
        strong=strong,
        weak=weak,
        embeddings=np.asarray(embeddings),
        prompt_idx=battles.prompt_idx,
        a_idx=battles.a_idx,
        b_idx=battles.b_idx,
        outcome=battles.outcome,
        embedder=embedder,
        gamma=gamma,
        prior=prior,
        **(extra_config or {}),
    )
    return {
        "router": "sw_ranking",
        "out": str(out),
        "strong": strong,
        "weak": weak,
        "battles": len(battles),
        "prompts": len(battles.prompts),
    }
