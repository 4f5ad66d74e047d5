"""Stratified sample selection over the prior router's scores and embedding clusters.

Why stratify: the sample must cover the score range (or the per-job router cannot learn
where the prior is wrong) and the job's topics (a cluster of coding prompts must not be
missed by chance), and known inclusion probabilities per stratum make the quality estimate
an inverse-probability-weighted one (:mod:`routing.adapt.quality`).

Strata are score-quantile bins x k-means clusters of the PCA-reduced embeddings; their
number grows with the sample so that each stratum gets about five items (a stratum with a
single item gives no bootstrap variance). Allocation is proportional with largest
remainders and at least one item per stratum. Deterministic by ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from routing.adapt.features import pca

PER_STRATUM = 5
MAX_PER_AXIS = 4


@dataclass(frozen=True)
class Sample:
    """Which items were sampled, each item's stratum, and each item's inclusion probability."""

    indices: np.ndarray  # sorted item indices of the sample
    strata: np.ndarray  # stratum id per item (all items)
    inclusion: np.ndarray  # n_h / N_h of the item's stratum (all items)

    @property
    def n(self) -> int:
        return int(self.indices.size)

    @property
    def mask(self) -> np.ndarray:
        m = np.zeros(self.strata.size, dtype=bool)
        m[self.indices] = True
        return m

    def to_dict(self) -> dict[str, object]:
        return {
            "indices": self.indices.tolist(),
            "strata": self.strata.tolist(),
            "inclusion": self.inclusion.tolist(),
        }


def sample_size(n_items: int, fraction: float, min_count: int) -> int:
    """max(min_count, round(fraction * n_items)), at most n_items."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"sample fraction must be in (0, 1], got {fraction}")
    return int(min(n_items, max(min_count, round(fraction * n_items))))


SMALL_JOB_MIN = 10  # judged items below which a job neither learns nor estimates anything


@dataclass(frozen=True)
class JobSample:
    """How a job's adapt sample is drawn: ``stratified_sample(..., fraction, min_count=min_count)``."""

    fraction: float
    min_count: int
    size: int
    small_job: bool  # the job is under twice the minimum: the sample is half of it


def job_sample(n_items: int, fraction: float, minimum: int, remembered: int = 0) -> JobSample | None:
    """The one sample-size policy of an adapting job (the pipeline and ``plan`` both use it).

    ``fraction`` of the items, less half as many as the job's memory already holds for the
    pair (a remembered verdict is worth about half a fresh one: it comes from another
    batch), and never under ``minimum``. A job under twice the minimum would be mostly
    sample, so its minimum becomes half of it: the estimate is still worth having on a
    small job, and routing the other half is still routing. ``None`` when even that is under
    :data:`SMALL_JOB_MIN` judged items: the job is routed as usual.
    """
    min_count = min(minimum, n_items // 2)
    if min_count < SMALL_JOB_MIN:
        return None
    wanted = max(min_count, round(fraction * n_items - remembered / 2))
    share = min(1.0, wanted / n_items)
    return JobSample(share, min_count, sample_size(n_items, share, min_count), min_count < minimum)


def kmeans(X: np.ndarray, k: int, seed: int = 0, iters: int = 25) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns labels 0..k-1 (empty clusters dropped)."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    k = max(1, min(k, n))
    if k == 1 or X.shape[1] == 0:
        return np.zeros(n, dtype=int)
    rng = np.random.default_rng(seed)
    centres = [X[rng.integers(n)]]
    d2 = ((X - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        j = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centres.append(X[j])
        d2 = np.minimum(d2, ((X - X[j]) ** 2).sum(1))
    C = np.array(centres)
    labels = np.zeros(n, dtype=int)
    for it in range(iters):
        dist = ((X[:, None, :] - C[None, :, :]) ** 2).sum(2)
        new = dist.argmin(1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            if (labels == c).any():
                C[c] = X[labels == c].mean(0)
    _, labels = np.unique(labels, return_inverse=True)
    return labels


def strata_for(prior_scores: np.ndarray, embeddings: np.ndarray | None, n_sample: int, seed: int = 0) -> np.ndarray:
    """Stratum id per item: score-quantile bin x embedding cluster, sized for ``n_sample``."""
    s = np.asarray(prior_scores, dtype=np.float64)
    per_axis = max(1, min(MAX_PER_AXIS, math.isqrt(max(n_sample // PER_STRATUM, 1))))
    ranks = np.argsort(np.argsort(s, kind="stable"), kind="stable")
    bins = (ranks * per_axis) // max(s.size, 1)
    if embeddings is None or per_axis == 1:
        clusters = np.zeros(s.size, dtype=int)
    else:
        E = np.asarray(embeddings, dtype=np.float64)
        reduced = E if E.shape[1] <= 8 else pca(E, 8)  # already reduced (JobDesign.reduced): as is
        clusters = kmeans(reduced, per_axis, seed=seed)
    _, strata = np.unique(bins * (int(clusters.max()) + 1) + clusters, return_inverse=True)
    return strata.astype(int)


def allocate(sizes: np.ndarray, n: int) -> np.ndarray:
    """Items per stratum: proportional with largest remainders, >= 1 each when n allows, <= size."""
    sizes = np.asarray(sizes, dtype=int)
    n = int(min(n, sizes.sum()))
    quota = n * sizes / sizes.sum()
    alloc = np.floor(quota).astype(int)
    if n >= sizes.size:
        alloc = np.maximum(alloc, 1)
    alloc = np.minimum(alloc, sizes)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while alloc.sum() < n:  # add to the largest remainders that still have room
        for h in order:
            if alloc.sum() >= n:
                break
            if alloc[h] < sizes[h]:
                alloc[h] += 1
    while alloc.sum() > n:  # the >= 1 rule overshot: take from the largest allocations
        h = int(np.argmax(alloc))
        alloc[h] -= 1
    return alloc


def stratified_sample(
    prior_scores: np.ndarray,
    embeddings: np.ndarray | None,
    fraction: float,
    *,
    min_count: int = 100,
    seed: int = 0,
) -> Sample:
    """Pick ``max(min_count, fraction * N)`` items, stratified; same inputs and seed, same sample."""
    s = np.asarray(prior_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("need a non-empty 1-d array of prior scores")
    if embeddings is not None and len(embeddings) != s.size:
        raise ValueError(f"{len(embeddings)} embeddings for {s.size} scores")
    n = sample_size(s.size, fraction, min_count)
    strata = strata_for(s, embeddings, n, seed=seed)
    sizes = np.bincount(strata)
    alloc = allocate(sizes, n)
    rng = np.random.default_rng([seed, 1])
    picked: list[np.ndarray] = []
    for h in range(sizes.size):
        members = np.flatnonzero(strata == h)
        picked.append(rng.choice(members, size=int(alloc[h]), replace=False))
    indices = np.sort(np.concatenate(picked)).astype(int)
    inclusion = (alloc / sizes)[strata]
    return Sample(indices, strata, inclusion)
