"""The choice rule on equal terms (bagged), and the quality interval that re-chooses per draw."""

import numpy as np
import pytest

from routing.adapt import Sample, adapt, estimate_quality, realised_quality
from routing.adapt.quality import Selection, route_weak
from routing.evaluation import apgr


def _population(n: int, seed: int):
    """Hidden difficulty d; the prior sees it weakly, prompt length a little better."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=n)
    strong_needed = (rng.random(n) < 1 / (1 + np.exp(-3 * d))).astype(float)
    prior = 1 / (1 + np.exp(-(0.5 * d + rng.normal(size=n))))
    words = np.clip(np.round(40 + 12 * (0.7 * d + 0.9 * rng.normal(size=n))), 1, None).astype(int)
    prompts = [" ".join(["w"] * int(k)) + f" q{i}" for i, k in enumerate(words)]
    return prior, rng.normal(size=(n, 12)), prompts, 1.0 - strong_needed


def test_bagged_rule_does_not_cling_to_a_prior_that_length_beats() -> None:
    # the first rule kept the prior unless beaten by one SE; with 100 judged items a real
    # but modest gain of length stays under that margin in a third of the jobs
    kept = {"bagged": 0, "prior_margin": 0}
    rest_apgr: dict[str, list[float]] = {"bagged": [], "prior_margin": []}
    idx = np.arange(0, 400, 4)
    rest = np.setdiff1d(np.arange(400), idx)
    for seed in range(20):
        prior, E, prompts, wg = _population(400, 100 + seed)
        for rule in kept:
            c = adapt(prior, E, prompts, idx, wg[idx], seed=seed, rule=rule, draws=100)
            kept[rule] += c.chosen == "prior"
            rest_apgr[rule].append(apgr(c.scores[rest], np.ones(rest.size), wg[rest]))
            if rule == "bagged":
                assert abs(sum(c.win_share.values()) - 1.0) < 1e-9
                assert c.win_share[c.chosen] == max(c.win_share.values()) or c.cv_apgr[c.chosen] >= 0.5
    assert kept["bagged"] <= 2 < 5 <= kept["prior_margin"]
    assert np.mean(rest_apgr["bagged"]) > np.mean(rest_apgr["prior_margin"])


def test_unknown_rule_is_refused() -> None:
    prior, E, prompts, wg = _population(200, 0)
    with pytest.raises(ValueError, match="choice rule"):
        adapt(prior, E, prompts, np.arange(50), wg[:50], rule="best")


def test_selection_carries_every_candidate_on_the_sample() -> None:
    prior, E, prompts, wg = _population(300, 1)
    idx = np.arange(0, 300, 3)
    c = adapt(prior, E, prompts, idx, wg[idx], seed=0, draws=50)
    sel = c.selection()
    assert set(sel.sample_scores) == set(sel.positions) == {"prior", "adapted", "length", "inverted_length"}
    for name, pos in sel.positions.items():
        assert pos.shape == (100,) and (0 <= pos).all() and (pos <= 1).all()
        # a sampled item's position: the share of the 200 non-sampled items scoring above it
        rest = np.setdiff1d(np.arange(300), idx)
        if name != "adapted":  # the adapted router's sample scores are out-of-fold
            j = 7
            assert pos[j] == (c.candidates[name][rest] > c.candidates[name][idx[j]]).mean()


def _positions(scores: np.ndarray, smp: Sample) -> np.ndarray:
    rest = scores[~smp.mask]
    return np.array([(rest > s).mean() for s in scores[smp.indices]])


def _srs(n_items: int, n: int, rng: np.random.Generator) -> Sample:
    idx = np.sort(rng.choice(n_items, size=n, replace=False))
    return Sample(idx, np.zeros(n_items, dtype=int), np.full(n_items, n / n_items))


def test_predictive_interval_covers_when_the_sample_is_a_third_of_the_job() -> None:
    # 100 of 300: the realised loss of the 200 others varies on its own (var/m), which the
    # bootstrap of the rate alone (var/n) leaves out: that interval was too narrow
    rng = np.random.default_rng(0)
    n_items = 300
    scores = rng.random(n_items)
    wg_all = (rng.random(n_items) < 0.45 + 0.5 * (scores < 0.5)).astype(float)
    hits = {True: 0, False: 0}
    runs = 200
    for b in range(runs):
        smp = _srs(n_items, 100, rng)
        routed = route_weak(scores, smp, _positions(scores, smp), 0.5)
        truth = realised_quality(wg_all, routed, smp.mask)
        for predictive in hits:
            q = estimate_quality(smp, wg_all[smp.indices], routed, draws=300, seed=b, predictive=predictive)
            hits[predictive] += q.quality_vs_strong.contains(truth)
    assert hits[True] / runs >= 0.85
    assert hits[False] < hits[True]


def test_interval_covers_when_the_weak_routed_sample_holds_few_bad_answers() -> None:
    # 100 of 1,000 items, 3% of the weak-routed answers bad: ~1-2 bad ones in the sample.
    # The bootstrap's own rate gave draws with none, so the interval was short just where the
    # estimate was optimistic (77% coverage, 17% of runs below it); the Jeffreys posterior
    # of the rate keeps it at the nominal 90%
    rng = np.random.default_rng(1)
    n_items = 1000
    scores = rng.random(n_items)
    hits = below = 0
    runs = 300
    for b in range(runs):
        wg_all = (rng.random(n_items) >= np.where(scores < 0.5, 0.03, 0.09)).astype(float)
        smp = _srs(n_items, 100, rng)
        routed = route_weak(scores, smp, _positions(scores, smp), 0.5)
        truth = realised_quality(wg_all, routed, smp.mask)
        q = estimate_quality(smp, wg_all[smp.indices], routed, draws=400, seed=b).quality_vs_strong
        hits += q.contains(truth)
        below += truth < q.low
    assert hits / runs >= 0.85
    assert below / runs <= 0.08


def test_reselection_with_one_candidate_is_the_plain_interval() -> None:
    rng = np.random.default_rng(3)
    n_items = 300
    scores = rng.random(n_items)
    wg_all = (rng.random(n_items) < 0.4 + 0.5 * (scores < 0.5)).astype(float)
    smp = _srs(n_items, 100, rng)
    pos = _positions(scores, smp)
    routed = route_weak(scores, smp, pos, 0.5)
    sel = Selection({"only": scores[smp.indices]}, {"only": pos})
    a = estimate_quality(smp, wg_all[smp.indices], routed, draws=200, seed=1)
    b = estimate_quality(smp, wg_all[smp.indices], routed, draws=200, seed=1, selection=sel)
    assert a.quality_vs_strong == b.quality_vs_strong
