"""The judged sample's quality-vs-cost curves of an adapted job, and its operating point.

From the sample alone, inverse-probability weighted: for each strong share ``s``, the items
a scorer ranks in its top ``s`` go strong and the rest weak; the quality relative to
all-strong is the weighted share of items that are not a weak item the judge found worse,
and the cost share is ``s + (1 - s) * r`` with ``r`` the sample's mean weak / strong cost.
The chosen scorer's curve (its out-of-fold scores on the sample), the prior's and
``length``'s are drawn side by side, with the job's operating point and its 90% interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def adapt_curve(record: dict[str, Any], points: int = 21) -> dict[str, Any]:
    """Curves and operating point from a job's ``spec["adaptation"]`` (with ``curve_data``)."""
    data = record.get("curve_data")
    if not data:
        raise ValueError("this job keeps no sample curve (not adapted, no verdicts, or a sample over 20,000 items)")
    wg = np.asarray(data["weak_good"], dtype=np.float64)
    weight = 1.0 / np.maximum(np.asarray(data["inclusion"], dtype=np.float64), 1e-12)
    ratio = data.get("cost_ratio")
    shares = np.linspace(0.0, 1.0, points)
    curves = {}
    for name, raw in data["scores"].items():
        scores = np.asarray(raw, dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        quality: list[float] = []
        for sh in shares:
            weak = np.ones(wg.size, dtype=bool)
            weak[order[: int(round(sh * wg.size))]] = False
            lost = float((weight * (weak & (wg < 0.5))).sum() / weight.sum())
            quality.append(1.0 - lost)
        curves[name] = {"quality_vs_strong": [round(q, 4) for q in quality]}
    cost = [round(float(s + (1 - s) * ratio), 4) for s in shares] if ratio is not None else None
    estimate = (record.get("quality") or {}).get("quality_vs_strong")
    share = float(data.get("strong_share", 0.5))
    return {
        "strong_share": [round(float(s), 4) for s in shares],
        "cost_share": cost,
        "curves": curves,
        "chosen": record.get("chosen"),
        "operating_point": {
            "strong_share": share,
            "cost_share": round(share + (1 - share) * ratio, 4) if ratio is not None else None,
            "quality_vs_strong": estimate,
        },
        "judged": int(wg.size),
    }


def plot_adapt_curve(curve: dict[str, Any], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = curve["cost_share"] or curve["strong_share"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curve["curves"].items():
        style = "-" if name == curve["chosen"] else "--"
        ax.plot(x, c["quality_vs_strong"], style, label=f"{name}{' (chosen)' if name == curve['chosen'] else ''}")
    op = curve["operating_point"]
    q = op.get("quality_vs_strong")
    ox = op["cost_share"] if curve["cost_share"] else op["strong_share"]
    if q and ox is not None:
        ax.errorbar(
            # a prediction interval may sit just below an estimate of 1.0 (nothing lost in the sample)
            [ox], [q["estimate"]], yerr=[[max(q["estimate"] - q["low"], 0.0)], [max(q["high"] - q["estimate"], 0.0)]],
            fmt="o", color="black",
            capsize=4, label="this job (90% interval)",
        )  # fmt: skip
    ax.set_xlabel("cost share of all-strong" if curve["cost_share"] else "strong share")
    ax.set_ylabel("quality vs all-strong (judged sample)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
