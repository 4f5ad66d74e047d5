"""The per-job quality estimate: IPW unbiasedness, interval coverage, the replay judge."""

import numpy as np
import pytest

from routing.adapt import ReplayJudge, Sample, Verdict, estimate_quality, realised_quality, weak_good_from_qualities
from routing.adapt.quality import Costs, route_weak
from routing.data.labels import LabelRecord


def _unequal_sample(strata: np.ndarray, take: dict[int, int], rng: np.random.Generator) -> Sample:
    picked = [rng.choice(np.flatnonzero(strata == h), size=k, replace=False) for h, k in take.items()]
    sizes = np.bincount(strata)
    pi = np.array([take[h] / sizes[h] for h in range(sizes.size)])
    return Sample(np.sort(np.concatenate(picked)), strata, pi[strata])


def _population(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    strata = (np.arange(n) >= n // 3).astype(int)  # stratum 0: 1,000 items, stratum 1: 2,000
    # weak-good rate differs a lot by stratum and by the routing decision
    routed_weak = rng.random(n) < np.where(strata == 0, 0.7, 0.4)
    p_good = np.where(strata == 0, 0.9, 0.3) - 0.2 * ~routed_weak
    wg = (rng.random(n) < p_good).astype(float)
    return strata, routed_weak, wg


def test_ipw_estimate_is_unbiased_where_the_naive_mean_is_not() -> None:
    strata, routed_weak, wg = _population()
    rng = np.random.default_rng(1)
    est, ht, naive, truth = [], [], [], []
    for _ in range(300):
        smp = _unequal_sample(strata, {0: 100, 1: 40}, rng)  # stratum 0 sampled at 10%, 1 at 2%
        q = estimate_quality(smp, wg[smp.indices], routed_weak, draws=20)
        est.append(q.quality_vs_strong.estimate)
        ht.append(estimate_quality(smp, wg[smp.indices], routed_weak, draws=20, method="ht").quality_vs_strong.estimate)
        truth.append(realised_quality(wg, routed_weak, smp.mask))
        r = routed_weak[smp.indices]
        bad_rate = float((1 - wg[smp.indices])[r].mean())  # unweighted: over-represents stratum 0
        naive.append(1 - (routed_weak & ~smp.mask).sum() * bad_rate / wg.size)
    bias = np.mean(np.array(est) - truth)
    ht_bias = np.mean(np.array(ht) - truth)
    naive_bias = np.mean(np.array(naive) - truth)
    mc_se = np.std(np.array(ht) - truth) / np.sqrt(300)
    assert abs(ht_bias) < 3 * mc_se  # Horvitz-Thompson: unbiased
    assert abs(bias) < 0.01  # the ratio estimator: bias O(1/n), far below its interval width
    assert np.std(est) < np.std(ht)  # ... and it pays for that with a smaller spread
    assert naive_bias > 0.05
    # the all-weak quality is estimated without bias too
    smp = _unequal_sample(strata, {0: 100, 1: 40}, np.random.default_rng(2))
    assert estimate_quality(smp, wg[smp.indices], routed_weak).weak_vs_strong.low < wg.mean()


def test_interval_covers_the_realised_quality() -> None:
    strata, routed_weak, wg = _population(seed=3)
    rng = np.random.default_rng(4)
    hits = 0
    runs = 150
    for b in range(runs):
        smp = _unequal_sample(strata, {0: 60, 1: 60}, rng)
        q = estimate_quality(smp, wg[smp.indices], routed_weak, draws=300, seed=b)
        assert q.quality_vs_strong.low <= q.quality_vs_strong.estimate <= q.quality_vs_strong.high
        hits += q.quality_vs_strong.contains(realised_quality(wg, routed_weak, smp.mask))
    assert 0.82 <= hits / runs <= 0.98


def test_cost_share_estimate_tracks_the_realised_cost() -> None:
    strata, routed_weak, wg = _population(seed=5)
    rng = np.random.default_rng(6)
    n = wg.size
    in_s, in_w = np.full(n, 10.0), np.full(n, 0.6)
    out_s, out_w = rng.uniform(100, 300, n), rng.uniform(5, 15, n)
    smp = _unequal_sample(strata, {0: 100, 1: 100}, rng)
    idx = smp.indices
    judge = np.full(idx.size, 50.0)
    q = estimate_quality(smp, wg[idx], routed_weak, costs=Costs(in_s, in_w, out_s[idx], out_w[idx], judge), draws=300)
    rest = ~smp.mask
    spent = (in_s + out_s + in_w + out_w)[idx].sum() + judge.sum()
    spent += np.where(routed_weak, in_w + out_w, in_s + out_s)[rest].sum()
    true_share = spent / (in_s + out_s).sum()
    assert q.cost_share is not None
    assert abs(q.cost_share.estimate - true_share) < 0.03
    assert q.cost_share.low < q.cost_share.estimate < q.cost_share.high


def test_route_weak_applies_one_cut_to_the_sample() -> None:
    scores = np.linspace(0, 1, 11)
    smp = Sample(np.array([0, 9, 10]), np.zeros(11, dtype=int), np.full(11, 0.3))
    # positions: share of the 8 non-sampled items scoring above each sampled item
    weak = route_weak(scores, smp, np.array([0.0, 0.5, 0.375]), strong_share=0.5)
    # items 1..8: the top half (5..8) go strong
    assert weak[1:9].tolist() == [True] * 4 + [False] * 4
    # 0 above -> strong; 4 above = the 4 strong slots taken -> weak; 3 above -> strong
    assert weak[[0, 9, 10]].tolist() == [False, True, False]


def test_replay_judge_verdicts_and_ties() -> None:
    judge = ReplayJudge(
        [LabelRecord("a", 9.0, 3.0), LabelRecord("b", 5.0, 5.0), LabelRecord("c", 0.0, 1.0), LabelRecord("a", 9.0, 3.0)]
    )
    assert judge.verdict("a") is Verdict.STRONG
    assert judge.verdict("b") is Verdict.TIE
    assert judge.judge(["a", "b", "c"]).tolist() == [0.0, 1.0, 1.0]  # ties are weak-good
    assert judge.judge_indices([1, 0]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="no recorded label"):
        judge.verdict("zzz")
    conflicted = ReplayJudge([LabelRecord("x", 1.0, 0.0), LabelRecord("x", 0.0, 1.0)])
    with pytest.raises(ValueError, match="conflicting"):
        conflicted.verdict("x")
    assert weak_good_from_qualities([1, 0, 1], [1, 1, 0]).tolist() == [1.0, 1.0, 0.0]


def test_replay_judge_reads_the_eval_labels_format(tmp_path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"prompt": "p1", "strong": true, "weak": false}\n{"prompt": "p2", "strong": 7, "weak": 8}\n')
    judge = ReplayJudge.from_file(path)
    assert judge.judge(["p1", "p2"]).tolist() == [0.0, 1.0]
