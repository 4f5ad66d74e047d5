"""The per-job router: a logistic regression on top of the prior, shrunk towards it.

Model: P(strong needed) = sigmoid(z + c + x . beta), with z the prior router's logit as a
fixed *offset*, c a free intercept, and x the standardised job features (the prior logit
again, so its slope can change, a few PCA directions of the embedding, a few text
features; :mod:`routing.adapt.features`). beta carries an L2 penalty whose strength is
chosen by inner cross-validation on the sample (log loss; ties go to the stronger penalty).
With beta = 0 the model ranks exactly as the prior does, so a tiny or uninformative sample
leaves the prior's ranking intact; a large sample that says the prior is wrong (even
inverted) can move the slope and add directions.

How far the fit trusts the prior is chosen by the same inner cross-validation: the offset
is the prior logit times a scale of 1, 1/2 or 0 (ties go to the larger scale, then to the
stronger penalty). Shrinking towards a prior that carries no signal for this job (a random
or mismatched router, logits of +-9) costs the sample much of its evidence: a penalised
slope cannot cancel the offset, and a few dozen labels that separate the job cleanly still
left a third of its hard items ranked by the prior's noise. With scale 0 the penalty
shrinks towards "no prior" and the prior logit stays a free (penalised) feature.

Fitted by Newton's method (a few dozen parameters at most): pure numpy, deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAMBDAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0, 1e5)
OFFSET_SCALES = (1.0, 0.5, 0.0)  # in order of preference on ties: the prior first
INTERCEPT_PENALTY = 1e-3  # keeps c finite when a fold has one class only


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def fit_offset_logistic(
    X: np.ndarray, y: np.ndarray, offset: np.ndarray, lam: float, iters: int = 50, start: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """(intercept, beta) minimising log loss + lam/2 |beta|^2 with a fixed offset; y in [0, 1].

    ``start``: (intercept, *beta) to start Newton from (a neighbouring lambda's solution).
    """
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    A = np.hstack([np.ones((n, 1)), X])
    theta = np.zeros(p + 1) if start is None else np.array(start, dtype=np.float64)
    pen = np.full(p + 1, float(lam))
    pen[0] = INTERCEPT_PENALTY
    for _ in range(iters):
        mu = _sigmoid(offset + A @ theta)
        grad = A.T @ (mu - y) + pen * theta
        H = (A * (mu * (1 - mu))[:, None]).T @ A + np.diag(pen)
        step = np.linalg.solve(H, grad)
        step_norm = float(np.abs(step).max())
        if step_norm > 5.0:  # damp: separable folds would otherwise jump far
            step *= 5.0 / step_norm
        theta -= step
        if step_norm < 1e-8:
            break
    return float(theta[0]), theta[1:]


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id per item, each class spread evenly over the folds; deterministic by seed."""
    rng = np.random.default_rng([seed, 7])
    folds = np.empty(y.size, dtype=int)
    for cls in np.unique(y >= 0.5):
        idx = np.flatnonzero((y >= 0.5) == cls)
        idx = idx[rng.permutation(idx.size)]
        start = int(rng.integers(k))
        folds[idx] = (np.arange(idx.size) + start) % k
    return folds


def choose_penalty(X: np.ndarray, y: np.ndarray, offset: np.ndarray, seed: int = 0, k: int = 5) -> tuple[float, float]:
    """(L2 strength, offset scale) with the lowest inner-CV log loss.

    Ties, and samples too small to tell, go to the prior: the largest scale, then the
    strongest penalty.
    """
    minority = int(min((y >= 0.5).sum(), (y < 0.5).sum()))
    if y.size < 10 or minority < 2:
        return LAMBDAS[-1], OFFSET_SCALES[0]
    k = min(k, minority)
    folds = stratified_folds(y, k, seed)
    grid = [(scale, lam) for scale in OFFSET_SCALES for lam in reversed(LAMBDAS)]  # preference order
    pred = np.empty((len(grid), y.size))
    for f in range(k):
        tr, te = folds != f, folds == f
        for s_i, scale in enumerate(OFFSET_SCALES):
            start = None
            for l_i, lam in enumerate(reversed(LAMBDAS)):  # strongest penalty first, warm-started
                c, beta = fit_offset_logistic(X[tr], y[tr], scale * offset[tr], lam, start=start)
                start = np.concatenate([[c], beta])
                pred[s_i * len(LAMBDAS) + l_i, te] = _sigmoid(scale * offset[te] + c + X[te] @ beta)
    arr = np.array([log_loss(y, row) for row in pred])
    scale, lam = grid[int(np.flatnonzero(arr <= arr.min() + 1e-9)[0])]
    return lam, scale


@dataclass(frozen=True)
class AdaptedModel:
    """A fitted per-job router: scores = sigmoid(offset_scale * offset + intercept + X @ beta)."""

    intercept: float
    beta: np.ndarray
    lam: float
    offset_scale: float = 1.0

    def score(self, offset: np.ndarray, X: np.ndarray) -> np.ndarray:
        return _sigmoid(self.offset_scale * np.asarray(offset) + self.intercept + np.asarray(X) @ self.beta)

    def to_dict(self) -> dict[str, object]:
        return {"intercept": self.intercept, "beta": self.beta.tolist(), "lambda": self.lam, "offset_scale": self.offset_scale}


def fit_adapted(X: np.ndarray, strong_needed: np.ndarray, offset: np.ndarray, seed: int = 0) -> AdaptedModel:
    """Fit on the sample's rows: ``strong_needed`` = 1 - weak_good (soft values allowed)."""
    y = np.asarray(strong_needed, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    if not (X.shape[0] == y.size == offset.size):
        raise ValueError("X, labels and offset differ in length")
    lam, scale = choose_penalty(X, y, offset, seed=seed)
    c, beta = fit_offset_logistic(X, y, scale * offset, lam)
    return AdaptedModel(c, beta, lam, scale)
