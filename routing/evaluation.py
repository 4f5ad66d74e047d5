"""Router quality as RouteLLM measures it: PGR, APGR, CPT(x%), plus what it lacks.

RouteLLM (``routellm/evals/evaluate.py`` and ``benchmarks.py``) scores a router like this:

1. the router gives every prompt a strong-win score;
2. thresholds are the 11 edges of 10 equal-count bins of those scores (``pd.qcut``);
3. at each threshold the prompts with ``score >= threshold`` go to the strong model (at the
   top edge ``score > threshold``, so that the curve reaches 0% strong calls);
4. the curve is (% strong calls, quality of the mixed answers);
5. PGR = (quality - weak) / (strong - weak); APGR = the trapezoid area between the curve and
   the weak line over the area between the strong and the weak lines, over the strong-call
   fraction; CPT(x%) = the % strong calls at which the curve reaches weak + x(strong - weak).

Two differences, both deliberate:

* ``pd.qcut`` raises when edges repeat (tied scores: kNN routers, coarse routers, a constant
  router). Here the edges come from ``np.quantile`` with the same linear interpolation, and
  repeated edges just give repeated curve points, which add nothing to the area.
* RouteLLM's CPT is ``np.interp(target, accuracy, strong_pct)``, which is undefined when the
  curve is not monotone. :func:`cpt` walks the curve from 0% strong calls and interpolates
  inside the first segment that reaches the target — the same number whenever the curve is
  monotone, and "first reaches" when it is not.

Out-of-fold scoring (:func:`make_folds`, :func:`cross_fit_scores`) guarantees a learned
router is never scored on a prompt it was trained on, including duplicated prompts, which
are always put in the same fold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

NUM_BINS = 10  # RouteLLM's --num-results


@dataclass(frozen=True)
class Curve:
    """Quality against strong-call share, sorted by share (0..1), one point per threshold."""

    thresholds: np.ndarray
    strong_share: np.ndarray
    quality: np.ndarray
    strong_quality: float
    weak_quality: float


@dataclass(frozen=True)
class Metrics:
    """The numbers ``routebatch eval`` prints; CPT values are percentages of strong calls."""

    apgr: float
    cpt50: float
    cpt80: float
    strong_quality: float
    weak_quality: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _as_arrays(
    scores: Sequence[float] | np.ndarray, strong: Sequence[float] | np.ndarray, weak: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    a = np.asarray(strong, dtype=np.float64).ravel()
    b = np.asarray(weak, dtype=np.float64).ravel()
    if not (s.size == a.size == b.size):
        raise ValueError(f"scores, strong and weak differ in length: {s.size}, {a.size}, {b.size}")
    if s.size == 0:
        raise ValueError("no prompts to evaluate")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    return s, a, b


def quantile_thresholds(scores: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """The ``num_bins + 1`` edges ``pd.qcut(scores, num_bins, retbins=True)`` would return.

    Duplicates are kept rather than raised on.
    """
    return np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0.0, 1.0, num_bins + 1))


def routing_curve(
    scores: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    num_bins: int = NUM_BINS,
) -> Curve:
    """RouteLLM's (strong share, quality) points at the quantile thresholds of ``scores``."""
    s, a, b = _as_arrays(scores, strong, weak)
    edges = quantile_thresholds(s, num_bins)
    # selection at edge i: score >= edge, except the top edge where score > edge (0% strong)
    sel = s[None, :] >= edges[:, None]
    sel[-1] = s > edges[-1]
    quality = np.where(sel, a[None, :], b[None, :]).mean(axis=1)
    share = sel.mean(axis=1)
    order = np.lexsort((quality, share))  # by share; equal shares have equal selections
    return Curve(edges[order], share[order], quality[order], float(a.mean()), float(b.mean()))


def pgr(quality: float, strong_quality: float, weak_quality: float) -> float:
    """Performance gap recovered: 0 at the weak model's quality, 1 at the strong model's."""
    gap = strong_quality - weak_quality
    if gap == 0:
        return float("nan")
    return (quality - weak_quality) / gap


def apgr_of_curve(curve: Curve) -> float:
    """Trapezoid area between curve and weak line over that between strong and weak lines."""
    x = curve.strong_share
    width = float(x[-1] - x[0])
    gap = curve.strong_quality - curve.weak_quality
    if width <= 0 or gap == 0:
        return float("nan")
    area = float(np.trapezoid(curve.quality, x))
    return (area - curve.weak_quality * width) / (gap * width)


def cpt(curve: Curve, fraction: float) -> float:
    """% strong calls at which the curve first reaches weak + fraction * (strong - weak).

    Returns a percentage (0..100). If the curve never reaches the target, the largest
    share on the curve (100% for a full curve), as ``np.interp`` would clip to.
    """
    target = curve.weak_quality + fraction * (curve.strong_quality - curve.weak_quality)
    x, y = curve.strong_share, curve.quality
    hit = np.flatnonzero(y >= target - 1e-12)
    if hit.size == 0:
        return float(x[-1] * 100.0)
    i = int(hit[0])
    if i == 0 or y[i] == y[i - 1]:
        return float(x[i] * 100.0)
    t = (target - y[i - 1]) / (y[i] - y[i - 1])
    return float((x[i - 1] + t * (x[i] - x[i - 1])) * 100.0)


def evaluate(
    scores: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    num_bins: int = NUM_BINS,
) -> Metrics:
    """APGR, CPT(50%), CPT(80%) of one router's scores on labelled prompts."""
    curve = routing_curve(scores, strong, weak, num_bins)
    return Metrics(
        apgr_of_curve(curve), cpt(curve, 0.5), cpt(curve, 0.8), curve.strong_quality, curve.weak_quality, int(np.size(scores))
    )


def apgr(
    scores: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    num_bins: int = NUM_BINS,
) -> float:
    return apgr_of_curve(routing_curve(scores, strong, weak, num_bins))


def per_group_metrics(
    scores: np.ndarray, strong: np.ndarray, weak: np.ndarray, groups: Sequence[str], min_size: int = 10
) -> dict[str, dict[str, float]]:
    """APGR and CPT(50%) within each group (e.g. MMLU subject) with at least ``min_size``
    prompts and a quality gap between the models (APGR is undefined without one)."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: dict[str, dict[str, float]] = {}
    for g, idx in sorted(members.items()):
        ix = np.array(idx)
        if ix.size >= min_size and strong[ix].mean() != weak[ix].mean():
            m = evaluate(scores[ix], strong[ix], weak[ix])
            out[g] = {"n": int(ix.size), "apgr": m.apgr, "cpt50": m.cpt50}
    return out


def random_baseline(
    strong: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    draws: int = 50,
    seed: int = 0,
    num_bins: int = NUM_BINS,
) -> Metrics:
    """Mean metrics of uniformly random scores on these labels (APGR about 0.5).

    Measured instead of assumed, so the printed baseline carries the same binning
    and finite-sample effects as the router it is compared with.
    """
    a = np.asarray(strong, dtype=np.float64)
    b = np.asarray(weak, dtype=np.float64)
    rng = np.random.default_rng(seed)
    runs = [evaluate(rng.random(a.size), a, b, num_bins) for _ in range(draws)]
    return Metrics(
        float(np.mean([m.apgr for m in runs])),
        float(np.mean([m.cpt50 for m in runs])),
        float(np.mean([m.cpt80 for m in runs])),
        float(a.mean()),
        float(b.mean()),
        int(a.size),
    )


@dataclass(frozen=True)
class Spread:
    """Bootstrap spread of APGR: resampling prompts with replacement."""

    mean: float
    std: float
    low: float  # 2.5th percentile
    high: float  # 97.5th percentile
    draws: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def bootstrap_apgr(
    scores: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    draws: int = 200,
    seed: int = 0,
    num_bins: int = NUM_BINS,
) -> Spread:
    """APGR spread over ``draws`` bootstrap resamples of the prompts.

    Strong and weak quality are recomputed on each resample, as a new test set would.
    """
    s, a, b = _as_arrays(scores, strong, weak)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(draws):
        idx = rng.integers(0, s.size, s.size)
        v = apgr(s[idx], a[idx], b[idx], num_bins)
        if np.isfinite(v):
            vals.append(v)
    arr = np.asarray(vals)
    if arr.size == 0:
        return Spread(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    return Spread(
        float(arr.mean()),
        float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        float(np.percentile(arr, 2.5)),
        float(np.percentile(arr, 97.5)),
        int(arr.size),
    )


# ---------------------------------------------------------------- cross-fitting


def _stable_unit(text: str, seed: int) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode()).digest(), "big"
    )


def make_folds(prompts: Sequence[str], k: int, groups: Sequence[str] | None = None, seed: int = 0) -> np.ndarray:
    """Fold id (0..k-1) per prompt; identical prompts always share a fold.

    Without ``groups``: prompts are spread by a seeded hash of their text, so every copy of a
    duplicated prompt lands together (random folds that never leak a test prompt). With
    ``groups`` (e.g. MMLU subject): whole groups are assigned to folds, largest first to the
    currently smallest fold, so no group is in both train and test.
    """
    if k < 2:
        raise ValueError("need at least 2 folds")
    n = len(prompts)
    if groups is None:
        # shuffle distinct prompts by hash, deal round-robin: balanced and duplicate-safe
        distinct = sorted(set(prompts), key=lambda p: _stable_unit(p, seed))
        fold_of = {p: i % k for i, p in enumerate(distinct)}
        return np.fromiter((fold_of[p] for p in prompts), dtype=np.int64, count=n)
    if len(groups) != n:
        raise ValueError("groups and prompts differ in length")
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    if len(sizes) < k:
        raise ValueError(f"{len(sizes)} groups cannot fill {k} folds")
    load = np.zeros(k, dtype=np.int64)
    fold_of_group: dict[str, int] = {}
    for g in sorted(sizes, key=lambda g: (-sizes[g], _stable_unit(g, seed))):
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    folds = np.fromiter((fold_of_group[g] for g in groups), dtype=np.int64, count=n)
    # a prompt repeated across groups would leak: move its copies to one fold
    first: dict[str, int] = {}
    for i, p in enumerate(prompts):
        folds[i] = first.setdefault(p, int(folds[i]))
    return folds


Fit = Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]


def cross_fit_scores(n: int, folds: np.ndarray, fit: Fit, always_train: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold scores: for each fold, ``fit(train_idx)`` returns ``score(test_idx)``.

    Works on indices so that callers keep features, embeddings and labels wherever they
    like. ``always_train`` marks extra rows (e.g. MMLU when scoring GSM8K) that are in every
    training set and never scored (give them fold id -1).
    """
    out = np.full(n, np.nan)
    extra = np.flatnonzero(always_train) if always_train is not None else np.array([], dtype=np.int64)
    for f in np.unique(folds[folds >= 0]):
        test = np.flatnonzero(folds == f)
        train = np.concatenate([np.flatnonzero((folds != f) & (folds >= 0)), extra])
        if np.intersect1d(train, test).size:
            raise AssertionError("a test row is in its own training set")
        out[test] = np.asarray(fit(train)(test), dtype=np.float64)
    return out


# ---------------------------------------------------------------- is APGR meaningful here?

#: the strong-weak gap must be this many standard errors above zero
MIN_GAP_Z = 2.0
#: a 95% bootstrap interval wider than this says the APGR is not measured
MAX_INTERVAL_WIDTH = 0.5


@dataclass(frozen=True)
class GapCheck:
    """Whether the labels separate the two models enough for APGR to mean something.

    APGR divides by the strong-weak quality gap. When the gap is within noise of zero
    (few prompts, or two models of about the same quality) the ratio swings wildly: 168
    MMLU prompts with a gap of 0.036 ± 0.035 give ``length`` an "APGR" of 0.92 with a 95%
    interval of [-1.7, 3.2]. Such a number must come with a warning, not alone.
    """

    gap: float
    gap_se: float
    z: float
    interval_width: float | None
    warning: str | None

    def to_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


def check_gap(
    strong: Sequence[float] | np.ndarray,
    weak: Sequence[float] | np.ndarray,
    spread: Spread | None = None,
    min_z: float = MIN_GAP_Z,
    max_width: float = MAX_INTERVAL_WIDTH,
) -> GapCheck:
    """The gap, its standard error (of the paired per-prompt difference) and a warning or None."""
    a = np.asarray(strong, dtype=np.float64)
    b = np.asarray(weak, dtype=np.float64)
    d = a - b
    gap = float(d.mean()) if d.size else float("nan")
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("inf")
    z = gap / se if se > 0 else (float("inf") if gap > 0 else float("-inf") if gap < 0 else 0.0)
    width = None if spread is None or not np.isfinite(spread.high - spread.low) else float(spread.high - spread.low)
    warning = None
    if not gap > 0:
        warning = f"the strong model is not better than the weak one on these labels (gap {gap:+.4f}): APGR is meaningless"
    elif z < min_z:
        warning = (
            f"strong-weak gap {gap:.4f} ± {se:.4f} is within noise ({z:.1f} standard errors, need {min_z:g}): "
            f"APGR is not meaningful on these {d.size} prompts; use more prompts or a pair with a larger gap"
        )
    elif width is not None and width > max_width:
        warning = f"APGR's 95% interval is {width:.2f} wide (more than {max_width:g}): too few prompts to measure it"
    return GapCheck(gap, se, float(z), width, warning)
