"""Turning scores into decisions.

A threshold chosen as a quantile must survive ties: kNN-style or coarse routers produce
many equal scores, and RouteLLM's ``pd.qcut`` raises on duplicate bin edges. Here a
threshold is always a plain float and ``score >= threshold`` decides; ties all go the same way.
"""

from __future__ import annotations

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
