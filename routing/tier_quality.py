"""Per-model expected quality of each prompt: the ``q[i, j]`` that ``routing.tiers`` allocates on.

Why one ridge head per model on a shared design: with N models a strong-vs-weak score is not
enough (which of three models wins on this prompt?), and a pairwise router per pair grows as
N^2. A ridge regression of each model's correctness on the prompt's embedding plus the
``blend`` text features is closed-form, deterministic, fits all N heads with one solve (the
design is the same), and trains on a few thousand labelled prompts in well under a second.
Predictions are clipped to [0, 1] (an expected correctness or judge score).

Out-of-fold use: :func:`out_of_fold_quality` scores each prompt with heads that never saw its
fold, which is what a benchmark or ``routebatch eval --tiers`` must report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.05


def tier_design(embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    """The shared design: embedding columns, then the text features of ``routing.routers.blend_features``."""
    from routing.routers.blend_features import feature_matrix

    E = np.asarray(embeddings, dtype=np.float64)
    F = np.asarray(feature_matrix(list(prompts)), dtype=np.float64)
    if E.shape[0] != F.shape[0]:
        raise ValueError(f"{E.shape[0]} embeddings for {F.shape[0]} prompts")
    return np.hstack([E, F])


@dataclass(frozen=True)
class TierQuality:
    """Fitted heads: ``predict(X)[:, j]`` is model ``j``'s expected quality."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (features, models)
    intercept: np.ndarray  # (models,)

    def predict(self, X: np.ndarray) -> np.ndarray:
        Xs = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return np.clip(Xs @ self.coef + self.intercept, 0.0, 1.0)


def fit_tier_quality(X: np.ndarray, Y: np.ndarray, alpha: float = DEFAULT_ALPHA) -> TierQuality:
    """Ridge per model column of ``Y`` (n, models) on standardised ``X`` (n, features), one solve.

    ``alpha`` is per standardised column and scales with ``n`` (``alpha * n``), so one value
    works from a hundred prompts to many thousands.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError("X (n, features) and Y (n, models) must have the same rows")
    if X.shape[0] < 2:
        raise ValueError("need at least 2 labelled prompts")
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-12] = 1.0
    Xs = (X - mean) / scale
    y_mean = Y.mean(0)
    gram = Xs.T @ Xs + alpha * X.shape[0] * np.eye(X.shape[1])
    coef = np.linalg.solve(gram, Xs.T @ (Y - y_mean))
    return TierQuality(mean, scale, coef, y_mean)


def out_of_fold_quality(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Predicted ``Y`` where each row comes from heads fitted without its fold."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    folds = np.asarray(folds)
    out = np.zeros_like(Y)
    for f in np.unique(folds):
        test = folds == f
        if test.all():
            raise ValueError("out-of-fold needs at least 2 folds")
        out[test] = fit_tier_quality(X[~test], Y[~test], alpha).predict(X[test])
    return out
