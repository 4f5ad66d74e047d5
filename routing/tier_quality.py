"""Per-model expected quality of each prompt: the ``q[i, j]`` that ``routing.tiers`` allocates on.

Why one ridge head per model on a shared design: with N models a strong-vs-weak score is not
enough (which of three models wins on this prompt?), and a pairwise router per pair grows as
N^2. A ridge regression of each model's correctness on the prompt's embedding plus the
``blend`` text features is closed-form, deterministic, fits all N heads with one solve (the
design is the same), and trains on a few thousand labelled prompts in well under a second.
Predictions are clipped to [0, 1] (an expected correctness or judge score).

Out-of-fold use: :func:`out_of_fold_quality` scores each prompt with heads that never saw its
fold, which is what a benchmark or ``routebatch eval --tiers`` must report.

Task mixtures (:func:`fit_task_quality`): when the labelled prompts also carry a task (or
any group) label, one global linear head per model cannot express that the ranking of the
models flips between tasks (on llmrouter a 49B model is best on MGSM and worst on CommonGen).
The task-mixture heads learn a softmax classifier prompt -> task, each task's mean score per
model (the prior) and, per task, a strongly shrunk ridge head on the residual; a prompt's
quality is the mixture of its tasks' predictions weighted by the classifier. Only the
*training* prompts need task labels: prediction sees the prompt alone. On llmrouter's train
split (5-fold out-of-fold) this lowers the Brier score from 0.202 to 0.176 and raises the
three-tier allocator's quality by about 3 points (``bench/tiers.py --select``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The unclipped linear prediction (a residual head must not be clipped to [0, 1])."""
        Xs = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return np.asarray(Xs @ self.coef + self.intercept)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.clip(self.raw(X), 0.0, 1.0)


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


def _out_of_fold(fit: Any, X: np.ndarray, Y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Predicted ``Y`` where each row comes from ``fit(train rows)`` fitted without its fold."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    folds = np.asarray(folds)
    out = np.zeros_like(Y)
    for f in np.unique(folds):
        test = folds == f
        if test.all():
            raise ValueError("out-of-fold needs at least 2 folds")
        out[test] = fit(~test).predict(X[test])
    return out


def out_of_fold_quality(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Predicted ``Y`` where each row comes from heads fitted without its fold."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    return _out_of_fold(lambda train: fit_tier_quality(X[train], Y[train], alpha), X, Y, folds)


#: residual ridge strength per task (``alpha * n_task``) and the task classifier's L2; both
#: chosen on llmrouter's *train* split by 5-fold out-of-fold allocator quality
TASK_ALPHA = 10.0
TASK_L2 = 0.01
#: a task with fewer labelled prompts keeps its prior only (no residual head)
MIN_TASK_ROWS = 20


def _softmax_classifier(X: np.ndarray, onehot: np.ndarray, l2: float, iters: int = 300) -> np.ndarray:
    """Multinomial logistic regression on standardised ``X`` (full-batch Adam, deterministic):
    weights of shape (features + 1, classes), the last row the intercept."""
    A = np.hstack([X, np.ones((X.shape[0], 1))])
    W = np.zeros((A.shape[1], onehot.shape[1]))
    m = np.zeros_like(W)
    v = np.zeros_like(W)
    lr, b1, b2 = 0.1, 0.9, 0.999
    for t in range(1, iters + 1):
        P = _softmax(A @ W)
        g = A.T @ (P - onehot) / A.shape[0] + l2 * W
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        W -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
    return W


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return np.asarray(E / E.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class TaskQuality:
    """Task-mixture heads: ``predict(X)[:, j] = sum_k P(task k | x) * (prior[k, j] + resid_k(x)[j])``."""

    tasks: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    classifier: np.ndarray  # (features + 1, tasks)
    prior: np.ndarray  # (tasks, models): each task's mean score per model
    residual: tuple[TierQuality | None, ...]  # per task; None: prior only

    def task_probabilities(self, X: np.ndarray) -> np.ndarray:
        Xs = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return _softmax(np.hstack([Xs, np.ones((Xs.shape[0], 1))]) @ self.classifier)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        P = self.task_probabilities(X)
        out = P @ self.prior
        for k, head in enumerate(self.residual):
            if head is not None:
                out += P[:, k : k + 1] * head.raw(X)
        return np.clip(out, 0.0, 1.0)


def fit_task_quality(
    X: np.ndarray, Y: np.ndarray, tasks: Sequence[str], alpha: float = TASK_ALPHA, l2: float = TASK_L2
) -> TaskQuality:
    """Fit the task-mixture heads on labelled prompts ``X`` (n, features), ``Y`` (n, models) and
    each prompt's task. ``alpha`` is the per-task residual ridge (scaled by the task's size as in
    :func:`fit_tier_quality`): large, because a task has a few hundred prompts at most."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    labels = np.asarray(list(tasks))
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0] or labels.shape[0] != X.shape[0]:
        raise ValueError("X (n, features), Y (n, models) and tasks (n,) must have the same rows")
    names = tuple(sorted({str(t) for t in labels}))
    if len(names) < 2:
        raise ValueError("task-mixture heads need at least 2 tasks; use fit_tier_quality")
    onehot = (labels[:, None] == np.asarray(names)[None, :]).astype(np.float64)
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-12] = 1.0
    W = _softmax_classifier((X - mean) / scale, onehot, l2)
    prior = (onehot.T @ Y) / onehot.sum(0)[:, None]
    residual: list[TierQuality | None] = []
    for k in range(len(names)):
        rows = onehot[:, k] > 0
        if rows.sum() < MIN_TASK_ROWS:
            residual.append(None)
            continue
        residual.append(fit_tier_quality(X[rows], Y[rows] - prior[k], alpha))
    return TaskQuality(names, mean, scale, W, prior, tuple(residual))


def out_of_fold_task_quality(
    X: np.ndarray, Y: np.ndarray, tasks: Sequence[str], folds: np.ndarray, alpha: float = TASK_ALPHA, l2: float = TASK_L2
) -> np.ndarray:
    """:func:`out_of_fold_quality` for the task-mixture heads: each row from heads fitted without its fold."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    labels = np.asarray(list(tasks))
    return _out_of_fold(lambda train: fit_task_quality(X[train], Y[train], labels[train].tolist(), alpha, l2), X, Y, folds)
