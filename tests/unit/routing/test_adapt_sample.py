"""Stratified sample selection: size, strata coverage, inclusion probabilities, determinism."""

import numpy as np

from routing.adapt import stratified_sample
from routing.adapt.sample import allocate, kmeans, sample_size


def _job(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 4
    E = centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 16))
    return rng.random(n), E


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    s, E = _job()
    a = stratified_sample(s, E, 0.1, seed=3)
    b = stratified_sample(s, E, 0.1, seed=3)
    c = stratified_sample(s, E, 0.1, seed=4)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.strata, b.strata)
    assert not np.array_equal(a.indices, c.indices)


def test_size_min_count_and_inclusion_probabilities() -> None:
    s, E = _job(600)
    assert stratified_sample(s, E, 0.1).n == 100  # the minimum (100) is above 10% of 600
    assert stratified_sample(s, E, 0.1, min_count=20).n == 60
    assert stratified_sample(s, E, 0.01, min_count=20).n == 20
    assert stratified_sample(s[:10], E[:10], 0.5, min_count=20).n == 10  # never more than the job
    smp = stratified_sample(s, E, 0.1, min_count=20, seed=1)
    for h in np.unique(smp.strata):
        members = smp.strata == h
        taken = int(smp.mask[members].sum())
        assert taken >= 1  # every stratum is represented
        assert np.allclose(smp.inclusion[members], taken / members.sum())
    # 60 items, about 5 per stratum -> 3 score bins x 3 clusters
    assert np.unique(smp.strata).size == 9


def test_sample_covers_the_score_range() -> None:
    s, E = _job(1000)
    smp = stratified_sample(s, E, 0.05, seed=0)
    picked = s[smp.indices]
    # four score quarters, each holds a fair share of the sample (not left to chance)
    counts = np.histogram(picked, bins=[0, 0.25, 0.5, 0.75, 1.0])[0]
    assert counts.min() >= 8


def test_allocate_is_proportional_and_exact() -> None:
    alloc = allocate(np.array([100, 300, 600]), 10)
    assert alloc.tolist() == [1, 3, 6]
    alloc = allocate(np.array([1, 2, 997]), 5)
    assert alloc.sum() == 5 and alloc.min() >= 1 and (alloc <= [1, 2, 997]).all()
    assert sample_size(1000, 0.02, 20) == 20


def test_kmeans_finds_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    labels = kmeans(X, 2, seed=0)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]


def test_job_sample_policy() -> None:
    from routing.adapt import job_sample

    big = job_sample(1000, 0.05, 100)
    assert big is not None and (big.size, big.min_count, big.small_job) == (100, 100, False)
    assert job_sample(4000, 0.05, 100).size == 200  # the fraction above the minimum
    assert job_sample(4000, 0.05, 100, remembered=100).size == 150  # a remembered verdict counts half
    assert job_sample(4000, 0.05, 100, remembered=1000).size == 100  # never under the minimum
    small = job_sample(50, 0.1, 100)
    assert small is not None and (small.size, small.min_count, small.small_job) == (25, 25, True)
    assert job_sample(20, 0.1, 100).size == 10
    assert job_sample(19, 0.1, 100) is None  # fewer than 10 judged items: nothing to learn or estimate
