"""The N-model allocator (issue 13 item 3): one model per item within the cap, close to optimal."""

from __future__ import annotations

import numpy as np
import pytest

from routing.allocation import allocate_budget
from routing.tier_quality import fit_tier_quality, out_of_fold_quality
from routing.tiers import allocate_tiers, brute_force, lp_optimum, tier_curve, upper_hull


def _instance(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    q = rng.uniform(0, 1, size=(n, m))
    c = rng.uniform(0.1, 3.0, size=(n, m))
    return q, c


def test_within_the_cap_and_between_the_exact_optimum_and_the_lp_bound() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        n, m = int(rng.integers(1, 6)), int(rng.integers(2, 4))
        q, c = _instance(rng, n, m)
        floor = float(c.min(axis=1).sum())
        cap = floor + float(rng.uniform(0, 1)) * (float(c.max(axis=1).sum()) - floor)
        got = allocate_tiers(q, c, cap)
        rows = np.arange(n)
        assert got.affordable
        assert got.cost <= cap + 1e-9
        assert got.cost == pytest.approx(float(c[rows, got.choice].sum()))
        exact = brute_force(q, c, cap)
        assert exact is not None
        assert got.quality <= exact[1] + 1e-9 <= got.lp_bound + 2e-9
        # the LP-greedy loses at most one item's largest gain against the LP optimum
        assert got.lp_bound - got.quality <= float((q.max(axis=1) - q.min(axis=1)).max()) + 1e-9
        assert got.lp_bound == pytest.approx(lp_optimum(q, c, cap))


def test_every_item_is_answered_at_its_cheapest_model_when_the_cap_is_the_floor() -> None:
    q = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]])
    c = np.array([[10.0, 2.0, 1.0], [10.0, 3.0, 0.5]])
    got = allocate_tiers(q, c, 1.5)
    assert got.choice.tolist() == [2, 2]
    assert got.affordable
    short = allocate_tiers(q, c, 1.0)
    assert not short.affordable and short.choice.tolist() == [2, 2]


def test_more_money_never_buys_less_quality() -> None:
    rng = np.random.default_rng(3)
    q, c = _instance(rng, 300, 3)
    caps = np.linspace(c.min(axis=1).sum(), c.max(axis=1).sum(), 12)
    qualities = [a.quality for a in tier_curve(q, c, caps)]
    assert all(b >= a - 1e-9 for a, b in zip(qualities, qualities[1:], strict=False))
    assert qualities[-1] == pytest.approx(float(q[np.arange(300), [upper_hull(q[i], c[i])[-1] for i in range(300)]].sum()))


def test_two_models_choose_what_the_two_model_allocator_chooses() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = 40
        p = rng.uniform(0, 1, n)
        cw = rng.uniform(0.1, 1.0, n)
        cs = cw + rng.uniform(0.5, 5.0, n)
        cap = float(cw.sum() + rng.uniform(0, 1) * (cs - cw).sum())
        two = allocate_budget(p, cs, cw, cap)
        # quality: the weak model 0, the strong model p (the expected gain over weak)
        many = allocate_tiers(np.column_stack([np.zeros(n), p]), np.column_stack([cw, cs]), cap)
        assert (many.choice == 1).tolist() == two.strong.tolist()


def test_quality_heads_are_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(float)
    folds = np.arange(200) % 5
    oof = out_of_fold_quality(X, Y, folds)
    assert np.corrcoef(oof[:, 0], Y[:, 0])[0, 1] > 0.6
    # a row's prediction does not change when only its own label changes: it never saw it
    Y2 = Y.copy()
    Y2[0] = 1 - Y2[0]
    assert np.allclose(out_of_fold_quality(X, Y2, folds)[0], oof[0])
    assert not np.allclose(fit_tier_quality(X, Y2).predict(X[:1]), fit_tier_quality(X, Y).predict(X[:1]))
