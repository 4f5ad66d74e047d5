"""APGR / CPT / PGR as RouteLLM defines them, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from routing.evaluation import (
    apgr,
    bootstrap_apgr,
    cpt,
    evaluate,
    pgr,
    quantile_thresholds,
    random_baseline,
    routing_curve,
)

# Ten prompts; the strong model is always right, the weak model wrong on prompts 5..9.
STRONG = np.ones(10)
WEAK = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=float)


def test_oracle_matches_hand_computation() -> None:
    # Scores 0..9 rank the weak-wrong prompts highest. Edges 0, .9, 1.8, ..., 9 send
    # 100%, 90%, ..., 10%, 0% to strong; quality = .5 + min(share, .5), so the PGR curve is
    # min(2 * share, 1): area .25 + .5 = .75; PGR .5 at 25% strong calls, .8 at 40%.
    scores = np.arange(10.0)
    curve = routing_curve(scores, STRONG, WEAK)
    np.testing.assert_allclose(curve.strong_share, np.linspace(0, 1, 11))
    np.testing.assert_allclose(curve.quality, 0.5 + np.minimum(np.linspace(0, 1, 11), 0.5))
    m = evaluate(scores, STRONG, WEAK)
    assert m.apgr == pytest.approx(0.75)
    assert m.cpt50 == pytest.approx(25.0)
    assert m.cpt80 == pytest.approx(40.0)
    assert m.strong_quality == 1.0 and m.weak_quality == 0.5 and m.n == 10


def test_anti_oracle_is_the_mirror() -> None:
    assert apgr(-np.arange(10.0), STRONG, WEAK) == pytest.approx(0.25)


def test_thresholds_are_qcut_edges() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5])
    edges = quantile_thresholds(scores)
    assert edges.size == 11
    assert edges[0] == scores.min() and edges[-1] == scores.max()
    # pandas' qcut uses linear interpolation between order statistics, like np.quantile
    assert edges[5] == pytest.approx(np.median(scores))


@pytest.mark.parametrize("scores", [np.zeros(10), np.array([0.0] * 7 + [1.0] * 3), np.round(np.linspace(0, 1, 10), 1)])
def test_tied_scores_do_not_raise(scores: np.ndarray) -> None:
    m = evaluate(scores, STRONG, WEAK)
    assert np.isfinite(m.apgr) and 0.0 <= m.cpt50 <= 100.0


def test_constant_router_is_the_straight_line() -> None:
    # every prompt ties: the curve has only the 0% and 100% points, area = half the gap
    m = evaluate(np.full(10, 0.3), STRONG, WEAK)
    assert m.apgr == pytest.approx(0.5)
    assert m.cpt50 == pytest.approx(50.0)


def test_random_router_is_about_half() -> None:
    rng = np.random.default_rng(1)
    n = 20000
    strong = (rng.random(n) < 0.8).astype(float)
    weak = (rng.random(n) < 0.65).astype(float)
    value = apgr(rng.random(n), strong, weak)
    assert value == pytest.approx(0.5, abs=0.05)
    base = random_baseline(strong, weak, draws=10)
    assert base.apgr == pytest.approx(0.5, abs=0.02)
    assert base.cpt50 == pytest.approx(50.0, abs=5.0)


def test_cpt_equals_np_interp_on_a_monotone_curve() -> None:
    # strong is right wherever weak is: sending more prompts to strong never hurts
    rng = np.random.default_rng(2)
    weak = (rng.random(500) < 0.6).astype(float)
    strong = np.maximum(weak, (rng.random(500) < 0.5).astype(float))
    curve = routing_curve(strong - weak + rng.normal(0, 0.3, 500), strong, weak)
    assert np.all(np.diff(curve.quality) >= 0)
    target = curve.weak_quality + 0.5 * (curve.strong_quality - curve.weak_quality)
    assert cpt(curve, 0.5) == pytest.approx(100 * np.interp(target, curve.quality, curve.strong_share))


def test_cpt_takes_the_first_crossing_on_a_non_monotone_curve() -> None:
    # weak-wrong prompt scored highest, then a weak-right-strong-wrong one: the curve rises,
    # dips, rises again; CPT(50%) is the first crossing, inside the first segment
    strong = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
    weak = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], dtype=float)
    scores = np.arange(10.0)[::-1]
    curve = routing_curve(scores, strong, weak)
    assert np.any(np.diff(curve.quality) < 0)
    assert cpt(curve, 0.5) == pytest.approx(5.0)


def test_pgr() -> None:
    assert pgr(0.75, 0.8, 0.7) == pytest.approx(0.5)
    assert np.isnan(pgr(0.7, 0.7, 0.7))


def test_bootstrap_spread() -> None:
    rng = np.random.default_rng(3)
    strong = (rng.random(2000) < 0.8).astype(float)
    weak = (rng.random(2000) < 0.6).astype(float)
    scores = (strong - weak) + rng.normal(0, 1.0, 2000)
    point = apgr(scores, strong, weak)
    spread = bootstrap_apgr(scores, strong, weak, draws=50, seed=0)
    assert spread.draws == 50
    assert 0.0 < spread.std < 0.05
    assert spread.low < point < spread.high
    assert bootstrap_apgr(scores, strong, weak, draws=50, seed=0) == spread  # seeded


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        evaluate([0.1, 0.2], [1.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        evaluate([np.nan, 0.2], [1.0, 1.0], [0.0, 1.0])
