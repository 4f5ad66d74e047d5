"""The per-job router's inputs: prior logit, a few embedding directions, a few text features.

Everything here is unsupervised and computed over the whole job (all items' prompts are
known before anything is spent), so the PCA and the standardisation see the job's own
distribution without looking at a single label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CODE = re.compile(r"```|\bdef |\bclass |[{};]\s*$|#include|\bfunction\b|</?\w+>", re.MULTILINE)
TEXT_FEATURES = ("log_words", "log_lines", "digit_share", "code")


def pca(X: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal-component scores of ``X`` (rows centred), sign-fixed.

    Signs are fixed so that each component's largest loading is positive: the same data
    gives the same columns on every machine.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError("pca needs a non-empty 2-d array")
    dims = max(0, min(dims, X.shape[0] - 1, X.shape[1]))
    if dims == 0:
        return np.zeros((X.shape[0], 0))
    Xc = X - X.mean(0)
    # eigenvectors of the covariance (width x width) instead of an SVD of the data: the
    # same components, much cheaper for a long job
    _, vecs = np.linalg.eigh(Xc.T @ Xc)
    comps = vecs[:, ::-1][:, :dims].T
    signs = np.sign(comps[np.arange(dims), np.abs(comps).argmax(1)])
    signs[signs == 0] = 1.0
    return Xc @ (comps * signs[:, None]).T


def text_features(prompts: Sequence[str]) -> np.ndarray:
    """(n, 4): log word count, log line count, share of digits, code marker."""
    out = np.zeros((len(prompts), len(TEXT_FEATURES)))
    for i, p in enumerate(prompts):
        n = max(len(p), 1)
        out[i] = (
            np.log1p(len(p.split())),
            np.log1p(p.count("\n")),
            sum(map(str.isdigit, p)) / n,
            1.0 if _CODE.search(p) else 0.0,
        )
    return out


def prior_logit(scores: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """logit of the prior router's scores, clipped away from 0 and 1."""
    s = np.clip(np.asarray(scores, dtype=np.float64), eps, 1.0 - eps)
    return np.log(s / (1.0 - s))


def standardise(X: np.ndarray) -> np.ndarray:
    """Columns to mean 0, std 1 (constant columns to 0)."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    sd[sd < 1e-12] = 1.0
    return (X - X.mean(0)) / sd


@dataclass(frozen=True)
class JobDesign:
    """The per-job inputs every step reuses: computed once per job, independent of the seed."""

    offset: np.ndarray  # prior logit per item
    X: np.ndarray  # standardised features per item
    reduced: np.ndarray  # PCA(8) of the embeddings, for the sample's clusters


def job_design(prior_scores: np.ndarray, embeddings: np.ndarray, prompts: Sequence[str], dims: int = 6) -> JobDesign:
    """Everything :func:`routing.adapt.adapt` and the sample need from the job, once."""
    reduced = pca(embeddings, max(dims, 8))
    z = prior_logit(prior_scores)
    X = standardise(np.hstack([z[:, None], reduced[:, :dims], text_features(prompts)]))
    return JobDesign(z, X, reduced[:, :8])


def design(
    prior_scores: np.ndarray, embeddings: np.ndarray, prompts: Sequence[str], dims: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """(offset, X) for all items: offset = prior logit; X = standardised [prior logit, PCA dims, text]."""
    d = job_design(prior_scores, embeddings, prompts, dims)
    return d.offset, d.X
