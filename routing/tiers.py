"""Budget allocation across more than two models: a multiple-choice knapsack.

Each item ``i`` may be answered by any model ``j`` at cost ``c[i, j]`` with expected quality
``q[i, j]``; exactly one model per item; total cost at most ``cap``. Maximising total
quality is the multiple-choice knapsack problem (NP-hard), but its LP relaxation has a
simple exact solution, and that gives both the allocator and its guarantee:

1. Per item, only the *upper convex hull* of its (cost, quality) points matters: a model that
   costs more than another and is not better, or lies under the line joining two others, is
   never chosen by the LP.
2. Start every item at its cheapest model (``floor``: the price of answering everything).
3. Every step along a hull is an *upgrade* with gain ``dq`` and extra cost ``dc``; within an
   item the steps' ratios ``dq / dc`` decrease (that is what convex means). Taking upgrades of
   all items in decreasing ratio order until the money runs out, with a fraction of the
   first one that does not fit, is the LP optimum (Sinha & Zoltners 1979).
4. The integer allocator takes the same order without the fraction, then keeps filling with
   later upgrades that still fit. Its value is at least ``LP - dq_break``, and the integer
   optimum is at most ``LP``: so the greedy is within one item's gain of the optimum, and
   ``Allocation.lp_bound`` says by how much at most on this instance.

Pure numpy: no jobs/, no DB. Two models are the simple case (``routing.allocation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TierAllocation:
    choice: np.ndarray  # int, the chosen model (column) per item
    cost: float  # total cost of the choice, in the units of ``c``
    quality: float  # total expected quality of the choice, in the units of ``q``
    lp_bound: float  # the LP optimum: no allocation within the cap has more expected quality
    floor: float  # cost of every item at its cheapest model
    affordable: bool  # False when even the floor exceeds the cap (then choice is the floor)

    @property
    def gap(self) -> float:
        """How far the greedy may be from the optimum at most (``lp_bound - quality``)."""
        return max(self.lp_bound - self.quality, 0.0)


@dataclass(frozen=True)
class _Upgrades:
    """Every hull step of every item, in the allocator's order."""

    item: np.ndarray
    to_model: np.ndarray
    dq: np.ndarray
    dc: np.ndarray
    base_choice: np.ndarray
    base_cost: float
    base_quality: float


def _check(q: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(q, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    if q.ndim != 2 or q.shape != c.shape:
        raise ValueError("q and c must be 2-d arrays of the same shape (items, models)")
    if q.shape[1] == 0:
        raise ValueError("need at least one model")
    if not (np.isfinite(q).all() and np.isfinite(c).all()):
        raise ValueError("q and c must be finite")
    if (c < 0).any():
        raise ValueError("costs must be >= 0")
    return q, c


def upper_hull(q: np.ndarray, c: np.ndarray) -> list[int]:
    """Indices of one item's models on the upper convex hull, cheapest first.

    The cheapest model (best quality among equal cheapest) always starts the hull; then only
    models that cost more *and* are better, and lie on or above the chord of their neighbours.
    """
    order = sorted(range(len(c)), key=lambda j: (c[j], -q[j], j))
    hull: list[int] = []
    for j in order:
        if hull and (c[j] == c[hull[-1]] or q[j] <= q[hull[-1]]):
            continue  # same cost (not better) or dearer and not better: dominated
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is under (or on) the chord a-j: the slope a->b is not above a->j
            if (q[b] - q[a]) * (c[j] - c[a]) <= (q[j] - q[a]) * (c[b] - c[a]):
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def _upgrades(q: np.ndarray, c: np.ndarray) -> _Upgrades:
    n = q.shape[0]
    items: list[int] = []
    to: list[int] = []
    dqs: list[float] = []
    dcs: list[float] = []
    base = np.zeros(n, dtype=np.int64)
    for i in range(n):
        hull = upper_hull(q[i], c[i])
        base[i] = hull[0]
        for a, b in zip(hull, hull[1:], strict=False):
            items.append(i)
            to.append(b)
            dqs.append(q[i, b] - q[i, a])
            dcs.append(c[i, b] - c[i, a])
    item = np.asarray(items, dtype=np.int64)
    dq = np.asarray(dqs, dtype=np.float64)
    dc = np.asarray(dcs, dtype=np.float64)
    to_model = np.asarray(to, dtype=np.int64)
    # decreasing ratio; ties: larger gain, then item order (as routing.allocation does)
    order = np.lexsort((item, -dq, -(dq / dc))) if len(item) else np.zeros(0, dtype=np.int64)
    rows = np.arange(n)
    return _Upgrades(
        item[order],
        to_model[order],
        dq[order],
        dc[order],
        base,
        float(c[rows, base].sum()),
        float(q[rows, base].sum()),
    )


def lp_optimum(q: np.ndarray, c: np.ndarray, cap: float) -> float:
    """The LP relaxation's optimum: an upper bound on the expected quality of any allocation."""
    q, c = _check(q, c)
    up = _upgrades(q, c)
    return _lp(up, cap)


def _lp(up: _Upgrades, cap: float) -> float:
    left = cap - up.base_cost
    if left < 0:
        return up.base_quality
    cum = np.cumsum(up.dc)
    k = int(np.searchsorted(cum, left, side="right"))  # upgrades [0, k) fit whole
    value = up.base_quality + float(up.dq[:k].sum())
    if k < len(up.dq):
        spent = float(cum[k - 1]) if k else 0.0
        value += up.dq[k] * (left - spent) / up.dc[k]
    return value


def allocate_tiers(q: np.ndarray, c: np.ndarray, cap: float) -> TierAllocation:
    """One model per item, total cost <= ``cap``, expected quality within ``gap`` of optimal.

    ``q[i, j]``: expected quality of model ``j`` on item ``i`` (a predicted probability of a
    correct answer, a judge score); ``c[i, j]``: its cost (estimated, any unit). Every item is
    answered: the cheapest model of each is the floor, and only money above the floor buys
    upgrades. When the floor alone exceeds ``cap``, the floor is returned with
    ``affordable=False`` and the caller decides (skip items, or refuse the job).
    """
    q, c = _check(q, c)
    return _allocate(q, c, _upgrades(q, c), cap)


def _allocate(q: np.ndarray, c: np.ndarray, up: _Upgrades, cap: float) -> TierAllocation:
    n = q.shape[0]
    choice = up.base_choice.copy()
    rows = np.arange(n)
    if up.base_cost > cap:
        return TierAllocation(choice, up.base_cost, up.base_quality, up.base_quality, up.base_cost, False)
    left = cap - up.base_cost
    cum = np.cumsum(up.dc)
    k = int(np.searchsorted(cum, left, side="right"))
    # the prefix fits whole; within an item, upgrades appear in hull order, so its last one wins
    prefix_items = up.item[:k][::-1]
    _, first_from_end = np.unique(prefix_items, return_index=True)
    last = k - 1 - first_from_end
    choice[up.item[last]] = up.to_model[last]
    spent = float(cum[k - 1]) if k else 0.0
    blocked = np.zeros(n, dtype=bool)
    for s in range(k, len(up.dq)):
        i = int(up.item[s])
        if blocked[i]:
            continue  # an earlier step of this item did not fit: later (dearer) ones cannot
        if spent + up.dc[s] <= left:
            choice[i] = up.to_model[s]
            spent += float(up.dc[s])
        else:
            blocked[i] = True
    return TierAllocation(
        choice,
        float(c[rows, choice].sum()),
        float(q[rows, choice].sum()),
        _lp(up, cap),
        up.base_cost,
        True,
    )


def tier_curve(q: np.ndarray, c: np.ndarray, caps: np.ndarray) -> list[TierAllocation]:
    """``allocate_tiers`` at each cap (the cost-quality curve of one set of predictions); the
    hulls are built once for all caps."""
    q, c = _check(q, c)
    up = _upgrades(q, c)
    return [_allocate(q, c, up, float(cap)) for cap in np.asarray(caps, dtype=np.float64)]


def brute_force(q: np.ndarray, c: np.ndarray, cap: float) -> tuple[np.ndarray, float] | None:
    """The exact optimum by enumeration (``M ** N`` choices): for tests on tiny instances."""
    import itertools

    q, c = _check(q, c)
    n, m = q.shape
    best: tuple[np.ndarray, float] | None = None
    rows = np.arange(n)
    for combo in itertools.product(range(m), repeat=n):
        ch = np.asarray(combo, dtype=np.int64)
        if c[rows, ch].sum() <= cap + 1e-12:
            value = float(q[rows, ch].sum())
            if best is None or value > best[1]:
                best = (ch, value)
    return best
