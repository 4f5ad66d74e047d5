"""One entry point for ``routebatch train``: read the data, embed once, dispatch to a trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routing.training.data import Battles, read_battles

TRAINABLE = ("mf", "sw_ranking", "bert", "causal_llm")


def train_router(
    router: str,
    battles: Battles | str | Path,
    out: str | Path,
    *,
    strong: str | None = None,
    weak: str | None = None,
    embedder: str = "minilm",
    cache: bool = True,
    tie_margin: float = 0.0,
    **options: Any,
) -> dict[str, Any]:
    """Train ``router`` on battles (a :class:`Battles` or a JSONL path) and write a checkpoint to ``out``.

    ``options`` go to the router's trainer (epochs, lr, batch_size, seed, base, ...).
    The data's strong/weak labels (``{"prompt","strong","weak"}`` lines) are named by
    ``strong``/``weak`` when given, else "strong"/"weak". Label values closer than
    ``tie_margin`` are a tie (for judge scores; 0 suits 0/1 correctness).
    """
    if router not in TRAINABLE:
        raise ValueError(f"cannot train {router!r}; trainable routers: {', '.join(TRAINABLE)}")
    if not isinstance(battles, Battles):
        battles = read_battles(battles, strong or "strong", weak or "weak", tie_margin)
    options = {k: v for k, v in options.items() if v is not None}
    if router in ("mf", "sw_ranking"):
        from routing.embeddings import canonical_spec, get_embedder

        embedder = canonical_spec(embedder)  # "auto" is recorded as what it meant here
        emb = get_embedder(embedder, cache=cache)
        X = emb.embed(battles.prompts)
        if router == "mf":
            from routing.training.mf import train_mf

            return train_mf(battles, X, out, strong=strong, weak=weak, embedder=embedder, **options)
        from routing.training.sw import build_sw

        return build_sw(battles, X, out, strong=strong, weak=weak, embedder=embedder, **options)
    if router == "bert":
        from routing.training.bert import train_bert

        return train_bert(battles, out, strong=strong, weak=weak, **options)
    from routing.training.causal import train_causal

    return train_causal(battles, out, strong=strong, weak=weak, **options)
