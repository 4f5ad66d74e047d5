"""Matrix factorisation router (RouteLLM's ``mf``), on local embeddings.

Each model ``m`` has a vector ``p_m``; the prompt embedding ``e`` is projected by ``W``; the
model's quality on the prompt is ``s_m(e) = w . (normalise(p_m) * W e) + b_m``, and the
strong-win probability is ``sigmoid(s_strong - s_weak)``. Because everything after the
embedding is linear, the difference collapses to one vector ``v = W^T (w * (p_s - p_w))``:
scoring a batch is one matrix-vector product ``E @ v``. The per-model bias ``b_m`` is an
addition to RouteLLM's model (it learns the overall win rate, so the projection only has
to explain the per-prompt part).

Checkpoint: ``router.json`` + ``weights.npz`` with ``P`` (models, k), ``W`` (k, dim),
``w`` (k,), ``b`` (models,). Any two models of the training data can be the pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from routing.routers import _checkpoint as ckpt
from routing.routers._embedding_router import EmbeddingRouter


class MFRouter(EmbeddingRouter):
    name = "mf"

    def __init__(self, path: str | None = None, strong: str | None = None, weak: str | None = None, **options: Any) -> None:
        if path is None:  # the shipped checkpoint for the embedder asked for (or the default one)
            from routing.embeddings import canonical_spec

            forced = str(options.get("embedder") or "auto")
            only_minilm = forced == "auto" and not (ckpt.default_checkpoint("mf_static") / ckpt.CONFIG_NAME).exists()
            asked = "minilm" if only_minilm else canonical_spec(forced)  # no CUDA question when there is no choice
            try:
                shipped = ckpt.shipped_for_embedder("mf", asked)
            except ValueError:
                if forced != "auto":
                    raise
                # no static mf ships (it lost > 0.01 APGR on unseen subjects): the MiniLM one
                shipped = ckpt.default_checkpoint("mf")
            self.path = ckpt.resolve("mf", str(shipped))
        else:
            self.path = ckpt.resolve("mf", path)
        self.config = ckpt.read_config(self.path, expect="mf")
        super().__init__(self.config.get("embedder", "minilm"), **options)
        self.trained_dim = self.config.get("embedding_dim")
        arrays = ckpt.load_arrays(self.path)
        self.models: list[str] = list(self.config["models"])
        self.strong, self.weak = ckpt.pick_pair(self.config, strong, weak)
        P, W, w = arrays["P"].astype(np.float64), arrays["W"].astype(np.float64), arrays["w"].astype(np.float64)
        b = arrays.get("b", np.zeros(len(self.models))).astype(np.float64)
        Pn = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
        s, k = self.models.index(self.strong), self.models.index(self.weak)
        # the whole head, folded: logit = E @ v + c
        self.v = (W.T @ (w * (Pn[s] - Pn[k]))).astype(np.float32)
        self.c = float(b[s] - b[k])

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        # row by row, not gemv: BLAS rounds a row differently depending on the batch around it
        logits = (np.asarray(embeddings, dtype=np.float32) * self.v).sum(axis=1)
        return ckpt.sigmoid(logits.astype(np.float64) + self.c)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "checkpoint": str(self.path),
            "fingerprint": ckpt.fingerprint(self.path),
            "strong": self.strong,
            "weak": self.weak,
            "embedder": self.embedder_spec,
            "trained_on": self.config.get("trained_on"),
        }


def save_mf(
    out: str | Path,
    *,
    models: list[str],
    strong: str,
    weak: str,
    P: np.ndarray,
    W: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    embedder: str,
    **extra: Any,
) -> Path:
    """Write an MF checkpoint (float32 arrays; well under 1 MB at dim 128 x 384)."""
    out = Path(out)
    ckpt.write_config(
        out,
        {
            "router": "mf",
            "models": models,
            "strong": strong,
            "weak": weak,
            "embedder": embedder,
            "dim": int(P.shape[1]),
            "embedding_dim": int(W.shape[1]),
            **extra,
        },
    )
    ckpt.save_arrays(out, P=P.astype(np.float32), W=W.astype(np.float32), w=w.astype(np.float32), b=b.astype(np.float32))
    return out
