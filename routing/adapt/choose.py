"""Choose the job's scorer by cross-validation on the judged sample.

Candidates: the prior (shipped) router, the adapted router (:mod:`routing.adapt.fit`),
``length``, inverted ``length`` and random. Each is scored on the sample by the APGR of its
(out-of-fold, for the adapted router) scores against the verdicts: routing an item to the
strong model gives an answer as good as strong's (1), to the weak model gives the verdict
(1 if the weak answer is as good, else 0). Random's value is its expectation, 0.5.

Two rules (``rule=``):

``"bagged"`` (the default since the second measurement, docs/evaluation.md): every
candidate competes on equal terms. The sample is resampled ``draws`` times; in each draw
the candidate with the highest APGR on it wins; the candidate that wins most often is
chosen (ties: the earlier in :data:`CANDIDATES`, so the prior). Why not keep the prior
unless beaten by a margin (the first rule): on a pair the prior was not trained for, the
prior is no more credible than ``length``, and the margin made the job keep the prior when
the sample said ``length`` was better by as much as the margin's noise (measured: it kept
the prior 11-14 times in 20 where ``length`` was 0.05 better). Win frequencies over
resamples are a bagged argmax: less jumpy than the plain argmax when two candidates are
close, and the shares say how sure the choice is.

``"prior_margin"`` (the first rule, kept to compare): start from the prior; switch to the
best other candidate only if it beats the prior by more than ``margin_se`` bootstrap
standard errors of the paired difference on the sample.

Both: never keep a scorer whose sample APGR is below 0.5 (what the sample says is worse
than random): take the best candidate at or above 0.5, else random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from routing.adapt.features import JobDesign, job_design
from routing.adapt.fit import AdaptedModel, fit_adapted, stratified_folds
from routing.adapt.quality import Selection
from routing.baselines import LengthRouter, RandomRouter
from routing.evaluation import NUM_BINS, apgr

CANDIDATES = ("prior", "adapted", "length", "inverted_length", "random")
RULES = ("bagged", "prior_margin")
RANDOM_APGR = 0.5
_COMPETING = ("prior", "adapted", "length", "inverted_length")


def verdict_apgr(scores: np.ndarray, weak_good: np.ndarray) -> float:
    """APGR against pairwise verdicts (strong quality 1, weak quality = weak_good); NaN without a gap."""
    wg = np.asarray(weak_good, dtype=np.float64)
    if wg.size < 2 or wg.min() == 1.0:
        return float("nan")
    return float(apgr(np.asarray(scores, dtype=np.float64), np.ones_like(wg), wg))


@dataclass(frozen=True)
class Choice:
    """The chosen scorer, its scores for every item, and the evidence it was chosen on."""

    chosen: str
    scores: np.ndarray  # the chosen scorer on all items (higher: more likely to need strong)
    sample_scores: np.ndarray  # the chosen scorer on the sample items (out-of-fold if fitted)
    cv_apgr: dict[str, float]
    diff_se: dict[str, float]  # bootstrap SE of (candidate - prior) on the sample
    reason: str
    model: AdaptedModel | None = None
    candidates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: per sampled item, the share of non-sampled items scoring above it under the scorer
    #: chosen without the item's fold: what the quality estimate routes the sample by
    sample_positions: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    #: ``rule="bagged"``: the share of bootstrap resamples of the sample each candidate won
    win_share: dict[str, float] = field(default_factory=dict)
    #: per competing candidate, its scores on the sampled items (out-of-fold for the adapted
    #: router) and each sampled item's position among the non-sampled items under it
    sample_candidates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    candidate_positions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def selection(self) -> Selection:
        """What :func:`routing.adapt.estimate_quality` needs to redo this choice per bootstrap draw."""
        return Selection(self.sample_candidates, self.candidate_positions)

    def to_dict(self) -> dict[str, object]:
        return {
            "chosen": self.chosen,
            "cv_apgr": self.cv_apgr,
            "diff_se": self.diff_se,
            "win_share": self.win_share,
            "reason": self.reason,
            "model": self.model.to_dict() if self.model is not None else None,
        }


def verdict_apgr_many(scores: np.ndarray, weak_good: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """:func:`verdict_apgr` for each row of (B, n) arrays at once (bootstrap draws), vectorised.

    The same curve as :func:`routing.evaluation.routing_curve` (quantile edges, ``>=`` except
    ``>`` at the top edge, points sorted by share, trapezoid area); NaN where a row has no gap.
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    wg = np.atleast_2d(np.asarray(weak_good, dtype=np.float64))
    edges = np.quantile(s, np.linspace(0.0, 1.0, num_bins + 1), axis=1).T  # (B, bins+1)
    sel = s[:, None, :] >= edges[:, :, None]
    sel[:, -1, :] = s > edges[:, -1, None]
    quality = np.where(sel, 1.0, wg[:, None, :]).mean(2)
    share = sel.mean(2)
    # by share, then quality, as routing_curve's lexsort (shares differ by >= 1/n >> 1e-9)
    order = np.argsort(share + quality * 1e-9, axis=1, kind="stable")
    x = np.take_along_axis(share, order, 1)
    y = np.take_along_axis(quality, order, 1)
    weak_q = wg.mean(1)
    gap = 1.0 - weak_q
    width = x[:, -1] - x[:, 0]
    area = ((y[:, 1:] + y[:, :-1]) * np.diff(x, axis=1)).sum(1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (area - weak_q * width) / (gap * width)
    out[(gap <= 0) | (width <= 0)] = np.nan
    return out


def _boot_apgr(on_sample: dict[str, np.ndarray], wg: np.ndarray, draws: int, seed: int) -> dict[str, np.ndarray]:
    """Each competing candidate's APGR on the same ``draws`` resamples of the sample (paired)."""
    rng = np.random.default_rng([seed, 11])
    idx = rng.integers(0, wg.size, (draws, wg.size))
    return {name: verdict_apgr_many(on_sample[name][idx], wg[idx]) for name in _COMPETING}


def _paired_se(boot: dict[str, np.ndarray], name: str) -> float:
    """Bootstrap SE of APGR(name) - APGR(prior) over the paired resamples."""
    d = boot[name] - boot["prior"]
    d = d[np.isfinite(d)]
    return float(np.std(d, ddof=1)) if d.size > 1 else float("inf")


def _win_share(boot: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of resamples (with a gap) in which each candidate has the highest APGR."""
    A = np.stack([boot[n] for n in _COMPETING])  # (C, B)
    ok = np.isfinite(A).all(0)
    if not ok.any():
        return {n: float("nan") for n in _COMPETING}
    winners = np.argmax(A[:, ok], axis=0)  # ties: the earlier candidate
    counts = np.bincount(winners, minlength=len(_COMPETING))
    return {n: float(c / ok.sum()) for n, c in zip(_COMPETING, counts, strict=True)}


def adapt(
    prior_scores: np.ndarray,
    embeddings: np.ndarray,
    prompts: Sequence[str],
    sample_indices: np.ndarray,
    weak_good: np.ndarray,
    *,
    seed: int = 0,
    folds: int = 5,
    margin_se: float = 1.0,
    draws: int = 200,
    pca_dims: int = 6,
    job: JobDesign | None = None,
    rule: str = "bagged",
) -> Choice:
    """Fit the per-job router on the judged sample and choose the job's scorer.

    ``weak_good`` holds one verdict per ``sample_indices`` entry (1 = weak as good as strong,
    0 = strong better; values in between are allowed for soft ties). ``job``: the job's
    :func:`routing.adapt.features.job_design`, when the caller already has it (it does not
    depend on the sample or the seed). ``rule``: ``"bagged"`` or ``"prior_margin"`` (module
    docstring; ``margin_se`` applies to the latter). Deterministic by seed.
    """
    if rule not in RULES:
        raise ValueError(f"unknown choice rule {rule!r}; use one of {RULES}")
    prior = np.asarray(prior_scores, dtype=np.float64)
    idx = np.asarray(sample_indices, dtype=int)
    wg = np.asarray(weak_good, dtype=np.float64)
    if idx.size != wg.size:
        raise ValueError(f"{wg.size} verdicts for {idx.size} sampled items")
    if len(prompts) != prior.size or len(embeddings) != prior.size:
        raise ValueError("prior scores, embeddings and prompts differ in length")
    if job is None:
        job = job_design(prior, embeddings, prompts, dims=pca_dims)
    offset, X = job.offset, job.X
    length = LengthRouter().score(prompts)
    fixed = {
        "prior": prior,
        "length": length,
        "inverted_length": 1.0 - length,
        "random": RandomRouter(seed).score(prompts),
    }
    y = 1.0 - wg  # strong needed
    model = fit_adapted(X[idx], y, offset[idx], seed=seed)
    adapted_all = model.score(offset, X)
    # out-of-fold scores of the adapted router on the sample (nested: lambda chosen inside)
    minority = int(min((y >= 0.5).sum(), (y < 0.5).sum()))
    oof = prior[idx].copy()
    if minority >= 2 and idx.size >= 10:
        k = min(folds, minority)
        fid = stratified_folds(y, k, seed)
        for f in range(k):
            tr, te = fid != f, fid == f
            m = fit_adapted(X[idx][tr], y[tr], offset[idx][tr], seed=seed)
            oof[te] = m.score(offset[idx][te], X[idx][te])
    on_sample = {name: s[idx] for name, s in fixed.items()}
    on_sample["adapted"] = oof
    all_scores = {**fixed, "adapted": adapted_all}

    chosen, reason, cv, se, wins = _choose(on_sample, wg, margin_se, draws, seed, rule)
    positions = _held_out_positions(on_sample, all_scores, idx, wg, margin_se, draws, seed, folds, rule)
    mask = np.zeros(prior.size, dtype=bool)
    mask[idx] = True
    by_candidate = {n: _positions(on_sample[n], all_scores[n][~mask]) for n in _COMPETING}
    competing = {n: on_sample[n] for n in _COMPETING}
    return Choice(
        chosen,
        all_scores[chosen],
        on_sample[chosen],
        cv,
        se,
        reason,
        model,
        all_scores,
        positions,
        wins,
        competing,
        by_candidate,
    )


def _positions(sample_scores: np.ndarray, rest_scores: np.ndarray) -> np.ndarray:
    """Per sampled item: the share of non-sampled items that score strictly above it."""
    ref = np.sort(rest_scores)
    above = ref.size - np.searchsorted(ref, sample_scores, side="right")
    return above / max(ref.size, 1)


def _choose(
    on_sample: dict[str, np.ndarray], wg: np.ndarray, margin_se: float, draws: int, seed: int, rule: str = "bagged"
) -> tuple[str, str, dict[str, float], dict[str, float], dict[str, float]]:
    """The rule of the module docstring on the sample's scores: (chosen, reason, cv APGR, SEs, win shares)."""
    cv = {name: verdict_apgr(on_sample[name], wg) for name in CANDIDATES if name != "random"}
    cv["random"] = RANDOM_APGR
    if not np.isfinite(cv["prior"]):
        return "prior", "the sample shows no gap between the models", cv, {}, {}
    others = ("adapted", "length", "inverted_length")
    boot = _boot_apgr(on_sample, wg, draws, seed)
    se = {name: _paired_se(boot, name) for name in others}
    wins: dict[str, float] = {}
    if rule == "bagged":
        wins = _win_share(boot)
        if np.isfinite(wins["prior"]):
            chosen = max(_COMPETING, key=lambda n: wins[n])  # first maximum: the prior on ties
        else:  # no resample with a gap in every candidate: the point estimates decide
            chosen = max(_COMPETING, key=lambda n: cv[n] if np.isfinite(cv[n]) else -np.inf)
        reason = f"wins {wins.get(chosen, float('nan')):.0%} of {draws} resamples of the sample (APGR {cv[chosen]:.3f})"
    else:
        chosen, reason = "prior", "no candidate beats the prior by more than the margin"
        best = max(others, key=lambda n: cv[n])
        if cv[best] - cv["prior"] > margin_se * se[best]:
            chosen, reason = best, f"beats the prior by {cv[best] - cv['prior']:.3f} (> {margin_se:g} SE = {se[best]:.3f})"
    if cv[chosen] < RANDOM_APGR:
        ok = [n for n in ("prior", *others) if cv[n] >= RANDOM_APGR]
        if ok:
            chosen = max(ok, key=lambda n: cv[n])
            reason = f"the first choice is below random on the sample; best at or above 0.5 is {chosen}"
        else:
            chosen, reason = "random", "every candidate is below random on the sample"
    return chosen, reason, cv, se, wins


def _held_out_positions(
    on_sample: dict[str, np.ndarray],
    all_scores: dict[str, np.ndarray],
    idx: np.ndarray,
    wg: np.ndarray,
    margin_se: float,
    draws: int,
    seed: int,
    folds: int,
    rule: str = "bagged",
) -> np.ndarray:
    """Per sampled item: the share of non-sampled items that score above it, under the scorer
    the rule chooses *without* the item's fold.

    Why: the chosen scorer is the one that looks best on the sample, so the sample routes
    well under it by selection (winner's curse), and a quality estimate that trusted those
    routes would be optimistic. Choosing per held-out fold makes each item's route
    independent of its own verdict; positions (not raw scores) make routes under different
    scorers comparable to the job's one threshold (:func:`routing.adapt.quality.route_weak`).
    """
    mask = np.zeros(next(iter(all_scores.values())).size, dtype=bool)
    mask[idx] = True
    y = 1.0 - wg
    minority = int(min((y >= 0.5).sum(), (y < 0.5).sum()))
    k = min(folds, max(minority, 1))
    fid = stratified_folds(y, k, seed) if k >= 2 else np.zeros(y.size, dtype=int)
    rest_sorted = {name: np.sort(s[~mask]) for name, s in all_scores.items()}
    out = np.empty(idx.size)
    for f in range(k):
        te = fid == f
        tr = ~te if k >= 2 else te
        name = _choose({n: v[tr] for n, v in on_sample.items()}, wg[tr], margin_se, draws, seed, rule)[0]
        ref = rest_sorted[name]
        above = ref.size - np.searchsorted(ref, on_sample[name][te], side="right")
        out[te] = above / max(ref.size, 1)
    return out
