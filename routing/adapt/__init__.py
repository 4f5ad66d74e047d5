"""In-batch adaptation: judge a small stratified sample, fit a per-job router, estimate quality.

A batch job holds its whole dataset before it spends anything, so it can *measure* on a
small sample what a router trained elsewhere cannot know (another model pair, another
distribution). This package is the measured core, pure functions over arrays (no DB, no
provider calls), so the pipeline can wire it in around its own judge calls and ledger:

1. :func:`stratified_sample` picks the items to send to both models (strata over the prior
   router's scores and embedding clusters; deterministic by seed);
2. a judge (:class:`ReplayJudge` replays recorded labels) gives one pairwise verdict per
   sampled item: is the weak answer as good as the strong one;
3. :func:`adapt` fits a per-job router on those verdicts on top of the prior router and
   chooses, by cross-validation on the sample, among the prior, the adapted router,
   ``length``, inverted ``length`` and random — never one the sample says is worse than random;
4. :func:`estimate_quality` estimates the routed job's quality relative to all-strong (and
   its cost share) from the judged sample, with a bootstrap interval.
"""

from routing.adapt.choose import CANDIDATES, Choice, adapt, verdict_apgr
from routing.adapt.fit import AdaptedModel, fit_adapted
from routing.adapt.judge import ReplayJudge, Verdict, weak_good_from_qualities
from routing.adapt.quality import Interval, QualityEstimate, Selection, estimate_quality, realised_quality
from routing.adapt.sample import JobSample, Sample, job_sample, stratified_sample

__all__ = [
    "CANDIDATES",
    "AdaptedModel",
    "Choice",
    "Interval",
    "JobSample",
    "QualityEstimate",
    "ReplayJudge",
    "Sample",
    "Selection",
    "Verdict",
    "adapt",
    "estimate_quality",
    "fit_adapted",
    "job_sample",
    "realised_quality",
    "stratified_sample",
    "verdict_apgr",
    "weak_good_from_qualities",
]
