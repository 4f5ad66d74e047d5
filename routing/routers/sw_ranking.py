"""Similarity-weighted (SW) ranking router, vectorised over a whole batch.

RouteLLM's SW ranking weighs every training battle by how similar its prompt is to the
new prompt (``weight = 10 ** (gamma * sim / max_sim)``), fits Bradley-Terry ratings to the
weighted battles, and reads the strong-win probability off the two ratings. It refits a
logistic regression per prompt (~3 prompts/s). Here:

1. battles are aggregated once per unique training prompt into a pairwise outcome matrix
   ``O`` (prompts, models*models): ``O[u, i*M+j]`` = wins of i over j on prompt u, a tie
   counting half to each side (RouteLLM's ``compute_elo_mle_with_tie``);
2. for a batch of prompts, similarities ``S = E_batch @ E_train.T`` and weights are one
   matrix product, and the weighted win matrices of the whole batch are ``weights @ O``;
3. Bradley-Terry is fitted for the whole batch at once: with two models the MLE is the
   weighted win share itself (closed form); with more, batched MM iterations
   (Hunter 2004) on (batch, M, M) tensors.

With 10,000 battles this costs a few milliseconds per batch of 64, far below the encoder.
The optional ``prior`` adds pseudo-wins in both directions to every pair (0 = pure MLE, as
RouteLLM; a small prior keeps ratings finite when a model never loses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from routing.routers import _checkpoint as ckpt
from routing.routers._embedding_router import EmbeddingRouter


def pairwise_outcomes(
    prompt_idx: np.ndarray, a_idx: np.ndarray, b_idx: np.ndarray, outcome: np.ndarray, n_prompts: int, n_models: int
) -> Any:
    """Sparse ``O`` (prompts, M*M): O[u, i*M+j] = wins of model i over j on prompt u (ties half each).

    Sparse because a prompt usually has one battle while M*M grows fast: 50k arena
    prompts over 60 models would be 1.4 GB dense.
    """
    from scipy.sparse import csr_matrix

    prompt_idx = np.asarray(prompt_idx, dtype=np.int64)
    a_idx = np.asarray(a_idx, dtype=np.int64)
    b_idx = np.asarray(b_idx, dtype=np.int64)
    outcome = np.asarray(outcome, dtype=np.float64)
    rows = np.concatenate([prompt_idx, prompt_idx])
    cols = np.concatenate([a_idx * n_models + b_idx, b_idx * n_models + a_idx])
    vals = np.concatenate([outcome, 1.0 - outcome])
    return csr_matrix((vals, (rows, cols)), shape=(n_prompts, n_models * n_models))  # duplicates are summed


def sw_weights(sims: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """RouteLLM's weighting: ``10 ** (gamma * sim / max_sim)`` per row (max over the training set)."""
    max_sim = np.maximum(sims.max(axis=1, keepdims=True), 1e-6)
    return np.power(10.0, gamma * sims / max_sim)


def bradley_terry_batch(wins: np.ndarray, iters: int = 500, tol: float = 1e-10) -> np.ndarray:
    """Batched Bradley-Terry MLE by MM iterations; ``wins`` (B, M, M) -> log-strengths (B, M).

    ``wins[b, i, j]`` is the (weighted) number of times i beat j. Ratings are centred per row.
    """
    B, M, _ = wins.shape
    games = wins + wins.transpose(0, 2, 1)
    total_wins = wins.sum(axis=2)
    pi = np.ones((B, M))
    for _ in range(iters):
        denom = (games / (pi[:, :, None] + pi[:, None, :])).sum(axis=2)
        new = np.where(denom > 0, total_wins / np.maximum(denom, 1e-300), pi)
        new = np.maximum(new, 1e-300)
        new /= np.exp(np.log(new).mean(axis=1, keepdims=True))
        done = np.max(np.abs(np.log(new) - np.log(pi))) < tol
        pi = new
        if done:
            break
    return np.log(pi)


class SWRankingRouter(EmbeddingRouter):
    name = "sw_ranking"

    def __init__(
        self,
        path: str | None = None,
        strong: str | None = None,
        weak: str | None = None,
        gamma: Any = None,
        prior: Any = None,
        chunk: Any = 256,
        head: str = "auto",
        **options: Any,
    ) -> None:
        self.path = ckpt.resolve("sw_ranking", path)
        self.config = ckpt.read_config(self.path, expect="sw_ranking")
        super().__init__(self.config.get("embedder", "minilm"), **options)
        arrays = ckpt.load_arrays(self.path)
        self.models: list[str] = list(self.config["models"])
        self.strong, self.weak = ckpt.pick_pair(self.config, strong, weak)
        self.gamma = float(gamma if gamma not in (None, "") else self.config.get("gamma", 1.0))
        self.prior = float(prior if prior not in (None, "") else self.config.get("prior", 0.0))
        self.chunk = int(chunk)
        if head not in ("auto", "numpy", "torch"):
            raise ValueError(f"head must be auto, numpy or torch, not {head!r}")
        self.head = head
        self._tensors: dict[str, Any] | None = None
        self.train_embeddings = np.ascontiguousarray(arrays["embeddings"], dtype=np.float32)
        self.trained_dim = int(self.train_embeddings.shape[1]) if self.train_embeddings.ndim == 2 else None
        M = len(self.models)
        n_train = len(self.train_embeddings)
        p_idx, a_idx, b_idx = (np.asarray(arrays[k], dtype=np.int64) for k in ("prompt_idx", "a_idx", "b_idx"))
        outcome = np.asarray(arrays["outcome"], dtype=np.float64)
        s, w = self.models.index(self.strong), self.models.index(self.weak)
        fwd, rev = (a_idx == s) & (b_idx == w), (a_idx == w) & (b_idx == s)
        # fast path: every battle is strong vs weak -> the MLE is the weighted win share
        self._two_model = bool(np.all(fwd | rev))
        if self._two_model:
            strong_won = np.where(fwd, outcome, 1.0 - outcome)
            self._wins = np.bincount(p_idx, weights=strong_won, minlength=n_train).astype(np.float32)
            self._games = np.bincount(p_idx, minlength=n_train).astype(np.float32)
        else:
            self._O = pairwise_outcomes(p_idx, a_idx, b_idx, outcome, n_train, M).astype(np.float32)
        self._s, self._w = s, w

    def _head_device(self) -> str | None:
        """Where the head runs: None for numpy; a torch device when the encoder is on CUDA.

        On a GPU the encoder does ~80k prompts/s; a numpy head over 10,000 battles would
        then dominate, so it follows the encoder onto the device. Never imports torch itself.
        """
        if self.head == "numpy":
            return None
        if self.head == "torch":
            emb = self._embedder
            return str(getattr(getattr(emb, "inner", emb), "_device", None) or "cpu")
        import sys

        torch = sys.modules.get("torch")
        emb = getattr(self._embedder, "inner", self._embedder)
        device = str(getattr(emb, "_device", None) or "")
        return device if torch is not None and device.startswith("cuda") else None

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        E = np.asarray(embeddings, dtype=np.float32)
        out = np.empty(len(E), dtype=np.float64)
        device = self._head_device()
        chunk = self.chunk if device is None or device == "cpu" else max(self.chunk, 4096)
        for start in range(0, len(E), chunk):  # bounds the (batch, N) weight matrix
            part = E[start : start + chunk]
            if device is None:
                out[start : start + chunk] = self._score_chunk(part)
            else:
                out[start : start + chunk] = self._score_chunk_torch(part, device)
        return out

    def _score_chunk_torch(self, E: np.ndarray, device: str) -> np.ndarray:
        """The same computation as :meth:`_score_chunk`, in torch on ``device`` (float32)."""
        import torch

        if self._tensors is None or self._tensors["device"] != device:
            t: dict[str, Any] = {"device": device, "train": torch.as_tensor(self.train_embeddings, device=device)}
            if self._two_model:
                t["wins"] = torch.as_tensor(self._wins, device=device)
                t["games"] = torch.as_tensor(self._games, device=device)
            else:
                coo = self._O.T.tocoo()  # (M*M, prompts): sparse x dense on the device
                t["Ot"] = torch.sparse_coo_tensor(
                    # torch's stub wants a Tensor; the constructor takes any array-like (made int64)
                    np.vstack([coo.row, coo.col]),  # type: ignore[arg-type]
                    coo.data,
                    coo.shape,
                    device=device,
                    check_invariants=True,
                ).coalesce()
            self._tensors = t
        t = self._tensors
        with torch.inference_mode():
            sims = torch.as_tensor(E, device=device) @ t["train"].T
            max_sim = sims.max(dim=1, keepdim=True).values.clamp(min=1e-6)
            weights = torch.pow(10.0, self.gamma * sims / max_sim)
            if self._two_model:
                wins = weights @ t["wins"] + self.prior
                games = weights @ t["games"] + 2 * self.prior
                return (wins.double() / games.double().clamp(min=1e-30)).clamp(0.0, 1.0).cpu().numpy()
            W = torch.sparse.mm(t["Ot"], weights.T).T.double().cpu().numpy()
        M = len(self.models)
        W = W.reshape(len(E), M, M) + self.prior * (1 - np.eye(M))
        r = bradley_terry_batch(W)
        return ckpt.sigmoid(r[:, self._s] - r[:, self._w])

    def _score_chunk(self, E: np.ndarray) -> np.ndarray:
        weights = sw_weights(E @ self.train_embeddings.T, self.gamma).astype(np.float32)
        if self._two_model:
            wins = weights @ self._wins + self.prior
            games = weights @ self._games + 2 * self.prior
            return np.clip(wins.astype(np.float64) / np.maximum(games, 1e-30), 0.0, 1.0)
        M = len(self.models)
        W = np.asarray((self._O.T @ weights.T).T, dtype=np.float64).reshape(len(E), M, M)
        W = W + self.prior * (1 - np.eye(M))
        r = bradley_terry_batch(W)
        return ckpt.sigmoid(r[:, self._s] - r[:, self._w])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "checkpoint": str(self.path),
            "fingerprint": ckpt.fingerprint(self.path),
            "strong": self.strong,
            "weak": self.weak,
            "embedder": self.embedder_spec,
            "battles": int(self.config.get("battles", 0)),
        }


def save_sw(
    out: str | Path,
    *,
    models: list[str],
    strong: str,
    weak: str,
    embeddings: np.ndarray,
    prompt_idx: np.ndarray,
    a_idx: np.ndarray,
    b_idx: np.ndarray,
    outcome: np.ndarray,
    embedder: str,
    gamma: float = 1.0,
    prior: float = 0.0,
    half: bool = True,
    **extra: Any,
) -> Path:
    """Write an SW checkpoint; embeddings stored as float16 by default (half the size, same ranking)."""
    out = Path(out)
    ckpt.write_config(
        out,
        {
            "router": "sw_ranking",
            "models": models,
            "strong": strong,
            "weak": weak,
            "embedder": embedder,
            "gamma": gamma,
            "prior": prior,
            "battles": int(outcome.size),
            **extra,
        },
    )
    ckpt.save_arrays(
        out,
        embeddings=embeddings.astype(np.float16 if half else np.float32),
        prompt_idx=prompt_idx.astype(np.int32),
        a_idx=a_idx.astype(np.int16),
        b_idx=b_idx.astype(np.int16),
        outcome=outcome.astype(np.float32),
    )
    return out
