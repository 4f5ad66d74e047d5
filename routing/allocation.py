"""Budget-optimal allocation: which prompts get the strong model when money is capped.

A batch job sees every prompt before it spends anything, which no per-request router can.
Given each prompt's strong-win probability ``p`` and the costs of answering it with each
model, choose the strong set that maximises the expected quality gain ``sum(p)`` subject to
``sum(weak costs of all) + sum(extra cost of the strong ones) <= cap``: a knapsack, solved
greedily by gain per extra dollar (optimal for the fractional relaxation, and within one
item of the integer optimum). Every prompt keeps at least its weak call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Allocation:
    strong: np.ndarray  # bool mask
    cost: float  # total cost of the allocation, in the units of the inputs
    affordable: bool  # False when even all-weak exceeds the cap


def allocate_budget(p: np.ndarray, strong_cost: np.ndarray, weak_cost: np.ndarray, cap: float) -> Allocation:
    """Greedy by ``p / (strong_cost - weak_cost)``; ties broken by higher ``p``, then input order."""
    p = np.asarray(p, dtype=np.float64)
    cs = np.asarray(strong_cost, dtype=np.float64)
    cw = np.asarray(weak_cost, dtype=np.float64)
    if not (p.shape == cs.shape == cw.shape):
        raise ValueError("p, strong_cost and weak_cost must have the same shape")
    base = float(cw.sum())
    mask = np.zeros(p.shape, dtype=bool)
    if base > cap:
        return Allocation(mask, base, False)
    extra = np.maximum(cs - cw, 0.0)
    free = extra <= 0
    mask[free] = True  # strong costs no more than weak: always take it
    ratio = np.where(free, np.inf, p / np.where(free, 1.0, extra))
    order = np.lexsort((np.arange(p.size), -p, -ratio))
    order = order[~free[order]]
    budget_left = cap - base
    cum = np.cumsum(extra[order])
    take = order[cum <= budget_left]
    # After the prefix, a later (cheaper) prompt may still fit: fill greedily.
    mask[take] = True
    spent = float(extra[take].sum())
    for idx in order[len(take) :]:
        if spent + extra[idx] <= budget_left:
            mask[idx] = True
            spent += extra[idx]
    return Allocation(mask, base + spent, True)


def threshold_at_spend(p: np.ndarray, strong_cost: np.ndarray, weak_cost: np.ndarray, cap: float) -> np.ndarray:
    """The fixed-threshold policy at the same spend: strong for the highest scores while it fits.

    The baseline ``allocate_budget`` is compared against in evaluation.
    """
    p = np.asarray(p, dtype=np.float64)
    extra = np.maximum(np.asarray(strong_cost, float) - np.asarray(weak_cost, float), 0.0)
    budget_left = cap - float(np.asarray(weak_cost, float).sum())
    mask = np.zeros(p.shape, dtype=bool)
    if budget_left < 0:
        return mask
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(extra[order])
    mask[order[cum <= budget_left]] = True
    return mask


def compare_at_spend(
    scores: np.ndarray,
    strong_quality: np.ndarray,
    weak_quality: np.ndarray,
    strong_cost: np.ndarray,
    weak_cost: np.ndarray,
    budget_shares: list[float],
) -> list[dict]:
    """Realised quality of allocation and of the fixed threshold at the same budgets.

    Budgets are fractions of the all-strong cost. Both policies see the same costs;
    ``spend_share`` is what each actually spends, as a fraction of all-strong.
    """
    cs = np.asarray(strong_cost, float)
    cw = np.asarray(weak_cost, float)
    sq = np.asarray(strong_quality, float)
    wq = np.asarray(weak_quality, float)
    all_strong = float(cs.sum())
    rows = []
    for share in budget_shares:
        cap = share * all_strong
        thr = threshold_at_spend(scores, cs, cw, cap)
        alloc = allocate_budget(scores, cs, cw, cap).strong
        q_t = float(np.where(thr, sq, wq).mean())
        q_a = float(np.where(alloc, sq, wq).mean())
        rows.append(
            {
                "budget_share": share,
                "threshold_quality": q_t,
                "threshold_strong_pct": 100.0 * float(thr.mean()),
                "threshold_spend_share": float(np.where(thr, cs, cw).sum()) / all_strong if all_strong else 0.0,
                "allocation_quality": q_a,
                "allocation_strong_pct": 100.0 * float(alloc.mean()),
                "allocation_spend_share": float(np.where(alloc, cs, cw).sum()) / all_strong if all_strong else 0.0,
                "difference": q_a - q_t,
            }
        )
    return rows
