"""``routebatch plan``: what a dataset would cost, before any provider call.

Reads and scores the file (no ingestion, no calls) and prices each prompt exactly as a
budget hold would (``jobs.money.admission.worst_case_micro``: the one input-token bound, the
request's ``max_tokens``, the dearest model of the fallback chain), or with ``output_tokens``
in place of ``max_tokens`` when given; then prices
all-weak, all-strong, routing at strong shares 10..90%, and, with a budget, the
budget-optimal allocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.config import AppConfig
from jobs.datasets import BadRow, read_rows
from jobs.money.pricing import PriceVersion, micro_to_usd
from routing import get_router, route_strong, threshold_for_strong_share

SCORE_BATCH = 256


@dataclass
class PlanInput:
    scores: np.ndarray
    strong_micro: np.ndarray
    weak_micro: np.ndarray
    invalid: int


def _prices(config: AppConfig, models: list[str]) -> dict[str, PriceVersion]:
    return {m: PriceVersion.from_config(m, config.model(m)) for m in config.models_with_fallbacks(models)}


def estimate(
    config: AppConfig,
    path: Path,
    router_spec: str,
    strong: str,
    weak: str,
    *,
    fmt: str | None = None,
    prompt_column: str = "prompt",
    max_tokens: int | None = None,
    output_tokens: int | None = None,
) -> PlanInput:
    from jobs.money.admission import worst_case_micro
    from jobs.pipeline.request import RequestShape, request_shape

    router = get_router(router_spec)
    prices = _prices(config, [strong, weak])

    def cost(row: Any, model: str) -> int:
        shape = request_shape(
            config, model, prompt=row.prompt, messages=row.messages, row_max_tokens=row.max_tokens, job_max_tokens=max_tokens
        )
        if output_tokens:
            shape = RequestShape(shape.messages, output_tokens)
        return worst_case_micro(shape, model, prices, config)

    scores: list[np.ndarray] = []
    cs: list[int] = []
    cw: list[int] = []
    invalid = 0
    batch: list[str] = []
    for row in read_rows(path, fmt, prompt_column):
        if isinstance(row, BadRow):
            invalid += 1
            continue
        cs.append(cost(row, strong))
        cw.append(cost(row, weak))
        batch.append(row.prompt)
        if len(batch) >= SCORE_BATCH:
            scores.append(np.asarray(router.score(batch), dtype=np.float64))
            batch = []
    if batch:
        scores.append(np.asarray(router.score(batch), dtype=np.float64))
    return PlanInput(
        np.concatenate(scores) if scores else np.zeros(0), np.asarray(cs, dtype=np.int64), np.asarray(cw, dtype=np.int64), invalid
    )


def plan_table(inp: PlanInput, budget_usd: float | None = None) -> dict:
    n = inp.scores.size
    all_strong = int(inp.strong_micro.sum())
    rows: list[dict[str, Any]] = [
        {"policy": "all weak", "strong_share": 0.0, "strong_items": 0, "cost_micro_usd": int(inp.weak_micro.sum())}
    ]
    for pct in range(10, 100, 10):
        t = threshold_for_strong_share(inp.scores, pct / 100)
        mask = route_strong(inp.scores, t)
        cost = int(np.where(mask, inp.strong_micro, inp.weak_micro).sum())
        rows.append(
            {
                "policy": f"routed {pct}%",
                "strong_share": round(mask.mean(), 4) if n else 0.0,
                "strong_items": int(mask.sum()),
                "threshold": t,
                "cost_micro_usd": cost,
            }
        )
    rows.append({"policy": "all strong", "strong_share": 1.0, "strong_items": n, "cost_micro_usd": all_strong})
    if budget_usd is not None:
        from routing.allocation import allocate_budget

        alloc = allocate_budget(inp.scores, inp.strong_micro, inp.weak_micro, budget_usd * 1_000_000)
        rows.append(
            {
                "policy": "budget optimum" if alloc.affordable else "budget optimum (cap below all-weak)",
                "strong_share": round(float(alloc.strong.mean()), 4) if n else 0.0,
                "strong_items": int(alloc.strong.sum()),
                "cost_micro_usd": int(alloc.cost),
                "expected_gain": round(float(inp.scores[alloc.strong].sum()), 3),
            }
        )
    for r in rows:
        r["cost_usd"] = micro_to_usd(r["cost_micro_usd"])
        r["savings_pct"] = round(100.0 * (1 - r["cost_micro_usd"] / all_strong), 2) if all_strong else 0.0
    return {"items": n, "invalid": inp.invalid, "rows": rows}
