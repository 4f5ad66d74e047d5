"""Threshold calibration: the score above which a chosen share of prompts goes strong.

A calibration is a small JSON file (router spec, requested share, threshold, score
quantiles) so that a job can reuse the threshold found on representative prompts instead
of re-scoring them: ``load_calibration(path)["threshold"]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routing.thresholds import threshold_for_strong_share


def calibrate_scores(scores: np.ndarray, strong_share: float) -> dict[str, Any]:
    """Threshold for ``strong_share`` plus what it does on these scores (ties can push it up)."""
    scores = np.asarray(scores, dtype=np.float64)
    threshold = threshold_for_strong_share(scores, strong_share)
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    return {
        "strong_share": strong_share,
        "threshold": threshold,
        "n": int(scores.size),
        "realised_share": float((scores >= threshold).mean()) if scores.size else 0.0,
        "score_quantiles": {str(q): float(np.quantile(scores, q)) for q in qs} if scores.size else {},
    }


def calibrate(router: Any, prompts: Sequence[str], strong_share: float, spec: str | None = None) -> dict[str, Any]:
    """Score ``prompts`` with ``router`` and calibrate; the result records the router it holds for."""
    result = calibrate_scores(router.score(list(prompts)), strong_share)
    return {"router": spec or router.name, "router_info": router.describe(), **result}


def save_calibration(path: str | Path, calibration: dict[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(calibration, indent=2, default=str) + "\n", encoding="utf-8")
    return p


def load_calibration(path: str | Path) -> dict[str, Any]:
    """Read a calibration file; ``["threshold"]`` is the float to pass to a job."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("threshold"), (int, float)):
        raise ValueError(f"{path}: not a calibration file (no numeric 'threshold')")
    return data
