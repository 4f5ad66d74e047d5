"""Turning scores into decisions.

A threshold chosen as a quantile must survive ties: kNN-style or coarse routers produce
many equal scores, and RouteLLM's ``pd.qcut`` raises on duplicate bin edges. Here a
threshold is always a plain float and ``score >= threshold`` decides; ties all go the same way.

A requested share cannot hold with a threshold alone when many scores are tied (a
constant router sends everything strong at any share). ``cut_for_strong_share`` keeps
the share exactly: above the threshold is strong, and among the scores equal to it the
first ones in input order (item id order) are strong until ``round(share * n)`` are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def threshold_for_strong_share(scores: np.ndarray, strong_share: float) -> float:
    """The (1 - share) quantile of ``scores``: about ``share`` of them are >= it.

    With ties the realised share can exceed the request (all tied prompts go strong);
    share 0 gives a threshold above every score, share 1 the minimum score.
    """
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError(f"strong_share must be in [0, 1], got {strong_share}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return 1.0
    if strong_share <= 0.0:
        return float(np.nextafter(scores.max(), np.inf))
    if strong_share >= 1.0:
        return float(scores.min())
    ordered = np.sort(scores)[::-1]
    k = int(round(strong_share * scores.size))
    k = min(max(k, 1), scores.size)
    return float(ordered[k - 1])


def route_strong(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask: True where the strong model is chosen."""
    return np.asarray(scores, dtype=np.float64) >= threshold


@dataclass(frozen=True)
class ShareCut:
    """Exactly ``round(share * n)`` strong items, ties broken by position (input order)."""

    threshold: float
    strong: np.ndarray
    """Boolean mask over the scores as given."""
    tied: int
    """How many scores equal the threshold."""
    tied_strong: int
    """How many of the tied ones are strong."""
    last_tied_strong: int | None
    """Index of the last tied score that is strong; the tied ones after it are weak."""

    @property
    def tie_broken(self) -> bool:
        """True when ``score >= threshold`` alone would have sent more items strong."""
        return self.tied_strong < self.tied and self.tied_strong > 0


def cut_for_strong_share(scores: np.ndarray, strong_share: float) -> ShareCut:
    """Choose exactly ``round(share * n)`` strong items (at least one for a share > 0).

    Highest scores first; among equal scores the earlier position wins, so the same
    scores in the same order always give the same split.
    """
    if not 0.0 <= strong_share <= 1.0:
        raise ValueError(f"strong_share must be in [0, 1], got {strong_share}")
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    if n == 0:
        return ShareCut(1.0, np.zeros(0, dtype=bool), 0, 0, None)
    if strong_share <= 0.0:
        return ShareCut(float(np.nextafter(scores.max(), np.inf)), np.zeros(n, dtype=bool), 0, 0, None)
    k = n if strong_share >= 1.0 else min(max(int(round(strong_share * n)), 1), n)
    order = np.argsort(-scores, kind="stable")  # stable: equal scores keep input order
    strong = np.zeros(n, dtype=bool)
    strong[order[:k]] = True
    threshold = float(scores[order[k - 1]])
    at = scores == threshold
    tied_strong_idx = np.flatnonzero(at & strong)
    return ShareCut(
        threshold=threshold,
        strong=strong,
        tied=int(at.sum()),
        tied_strong=int(tied_strong_idx.size),
        last_tied_strong=int(tied_strong_idx[-1]) if tied_strong_idx.size else None,
    )
