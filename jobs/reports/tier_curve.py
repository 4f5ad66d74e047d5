"""``routebatch eval-tiers``: the cost-quality curve of N-model allocation on labelled prompts.

Each model's expected quality per prompt comes from ridge heads fitted out-of-fold
(``routing.tier_quality``), each call's cost from the config's prices (prompt tokens counted,
``output_tokens`` assumed out), and the allocator (``routing.tiers``) picks one model per
prompt at caps from the all-cheapest to the all-top cost. Quality on the curve is the mean
*true* score of the chosen answers, beside each single model's point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.config import AppConfig


@dataclass(frozen=True)
class TierLabels:
    prompts: list[str]
    scores: np.ndarray  # (n, models), in the order of the tiers asked for
    tasks: list[str] | None = None  # each line's ``task`` when every line has one (llmrouter's files do)


def read_tier_labels(path: Path, config: AppConfig, tiers: list[str]) -> TierLabels:
    """JSONL ``{prompt, scores: {model: 0..1}}`` (llmrouter's format); a score is looked up
    by the tier's config key, then by its model ``name``. Errors name the line and field."""
    prompts: list[str] = []
    rows: list[list[float]] = []
    tasks: list[str | None] = []
    keys = [(t, config.model(t).name or t) for t in tiers]
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise ValueError(f"{path}:{lineno}: field 'prompt' must be a string")
            scores = rec.get("scores")
            if not isinstance(scores, dict):
                raise ValueError(f"{path}:{lineno}: field 'scores' must be an object {{model: score}}")
            row = []
            for key, name in keys:
                value = scores.get(key, scores.get(name))
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{path}:{lineno}: field 'scores.{key}' missing or not a number")
                row.append(float(value))
            prompts.append(rec["prompt"])
            rows.append(row)
            task = rec.get("task")
            tasks.append(str(task) if isinstance(task, str | int) and not isinstance(task, bool) else None)
    if len(prompts) < 10:
        raise ValueError(f"{path}: need at least 10 labelled prompts, got {len(prompts)}")
    named = [t for t in tasks if t is not None]
    return TierLabels(prompts, np.asarray(rows, dtype=np.float64), named if len(named) == len(tasks) else None)


def call_costs(config: AppConfig, tiers: list[str], prompts: list[str], output_tokens: int) -> np.ndarray:
    """Micro-USD of each prompt's call on each tier, at the config's synchronous prices."""
    from jobs.money.pricing import PriceVersion
    from jobs.money.tokens import count_text_tokens

    cols = []
    for t in tiers:
        cfg = config.model(t)
        price = PriceVersion.from_config(t, cfg, config.provider_of(t).kind)
        cols.append([price.cost_micro_usd(count_text_tokens(p, cfg.encoding), output_tokens) for p in prompts])
    return np.asarray(cols, dtype=np.float64).T


def tier_curve_report(
    labels: TierLabels, costs: np.ndarray, tiers: list[str], *, folds: int, embedder: str, points: int, seed: int
) -> dict[str, Any]:
    from routing.embeddings import get_embedder
    from routing.tier_quality import out_of_fold_quality, out_of_fold_task_quality, tier_design
    from routing.tiers import tier_curve

    n = len(labels.prompts)
    X = tier_design(get_embedder(embedder).embed(labels.prompts), labels.prompts)
    fold_ids = np.random.default_rng(seed).permutation(n) % max(2, folds)
    if labels.tasks is not None:  # task-aware heads (docs/benchmarks.md, N-model allocation)
        pred = np.clip(out_of_fold_task_quality(X, labels.scores, labels.tasks, fold_ids), 0, 1)
    else:
        pred = np.clip(out_of_fold_quality(X, labels.scores, fold_ids), 0, 1)
    top = float(costs[:, 0].sum())
    floor = float(costs.min(axis=1).sum())
    rows = np.arange(n)
    caps = np.linspace(floor, float(costs.max(axis=1).sum()), points)
    curve = [
        {
            "cap_share": float(cap) / top,
            "spend_share": a.cost / top,
            "quality": float(labels.scores[rows, a.choice].mean()),
            "model_shares": {t: float((a.choice == j).mean()) for j, t in enumerate(tiers)},
        }
        for cap, a in zip(caps, tier_curve(pred, costs, caps), strict=True)
    ]
    singles = [
        {"model": t, "spend_share": float(costs[:, j].sum()) / top, "quality": float(labels.scores[:, j].mean())}
        for j, t in enumerate(tiers)
    ]
    return {
        "n": n,
        "tiers": tiers,
        "folds": folds,
        "embedder": embedder,
        "heads": "task" if labels.tasks is not None else "ridge",
        "all_top_micro_usd": int(top),
        "curve": curve,
        "single": singles,
    }


def plot_tier_curve(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [100 * p["spend_share"] for p in report["curve"]]
    ax.plot(xs, [p["quality"] for p in report["curve"]], marker=".", label="N-model allocation (out-of-fold)")
    for s in report["single"]:
        ax.scatter([100 * s["spend_share"]], [s["quality"]], marker="s")
        ax.annotate(s["model"], (100 * s["spend_share"], s["quality"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"Spend (% of all-{report['tiers'][0]} cost)")
    ax.set_ylabel("Mean quality")
    ax.set_title(f"Cost-quality curve, {len(report['tiers'])} models, {report['n']} prompts")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
