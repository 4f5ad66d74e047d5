"""Out-of-fold scores for any router spec: train on K-1 folds, score the held-out fold.

Why a separate module: ``routing.evaluation`` is pure metrics over arrays; this one knows
how to *train* each kind of router on a subset of labels. Three cases:

* untrained routers (``random``, ``length``) just score: nothing to leak;
* ``blend`` fits in memory on the fold's embeddings (computed once for all folds);
* the preference routers (``mf``, ``sw_ranking``, ``bert``, ``causal_llm``) go through
  ``routing.training.run.train_router`` into a temporary checkpoint, as a user would.

Folds come from :func:`routing.evaluation.make_folds`, so copies of a prompt share a fold.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routing.data.labels import LabelRecord, write_jsonl
from routing.evaluation import cross_fit_scores, make_folds
from routing.registry import get_router, parse_spec

UNTRAINED = ("random", "length")
PREFERENCE = ("mf", "sw_ranking", "bert", "causal_llm")


def assign_folds(records: Sequence[LabelRecord], k: int, group_by: str | None = None, seed: int = 0) -> np.ndarray:
    """Fold id per record; ``group_by`` names a record field (e.g. ``subject``)."""
    prompts = [r.prompt for r in records]
    if group_by is None:
        return make_folds(prompts, k, seed=seed)
    groups = [str(r.get(group_by, "")) for r in records]
    if all(g == "" for g in groups):
        raise ValueError(f"no record has a {group_by!r} field")
    return make_folds(prompts, k, groups=groups, seed=seed)


def out_of_fold_scores(
    spec: str,
    records: Sequence[LabelRecord],
    folds: np.ndarray,
    extra_train: Sequence[LabelRecord] = (),
    embeddings: np.ndarray | None = None,
    **train_options: Any,
) -> np.ndarray:
    """Scores of ``records`` by ``spec``, each from a router that never saw its fold.

    ``extra_train`` records are added to every training set and never scored (e.g. MMLU
    when the target is GSM8K). ``embeddings`` (rows for records, then extra_train) skip
    the embedder when the caller already has them.
    """
    name, path, options = parse_spec(spec)
    allrec = list(records) + list(extra_train)
    n = len(records)
    fold_all = np.concatenate([np.asarray(folds, dtype=np.int64), np.full(len(extra_train), -1)])
    always = np.zeros(len(allrec), dtype=bool)
    always[n:] = True
    prompts = [r.prompt for r in allrec]
    strong = np.array([r.strong for r in allrec], dtype=np.float64)
    weak = np.array([r.weak for r in allrec], dtype=np.float64)

    if name in UNTRAINED:
        router = get_router(spec)
        scores = router.score(prompts[:n])
        return np.asarray(scores, dtype=np.float64)

    if name == "blend":
        from routing.routers.blend import fit_blend
        from routing.routers.blend_features import feature_matrix

        if embeddings is None:
            from routing.embeddings import get_embedder

            embeddings = get_embedder(options.get("embedder", "minilm")).embed(prompts)
        E = np.asarray(embeddings)
        F = feature_matrix(prompts)
        opts = {**{k: v for k, v in options.items() if k != "embedder"}, **train_options}

        def fit_blend_fold(train: np.ndarray):
            model = fit_blend(E[train], F[train], strong[train], weak[train], **opts)
            return lambda test: model.score_arrays(E[test], F[test])

        return cross_fit_scores(len(allrec), fold_all, fit_blend_fold, always)[:n]

    if name in PREFERENCE:
        from routing.training.run import train_router

        out = np.full(n, np.nan)
        for f in np.unique(fold_all[fold_all >= 0]):
            test = np.flatnonzero(fold_all == f)
            train = np.flatnonzero(fold_all != f)  # other folds plus extra_train
            # score inside the with-block: the checkpoint lives in the temporary directory
            with tempfile.TemporaryDirectory(prefix=f"routebatch-{name}-") as tmp:
                data = Path(tmp) / "train.jsonl"
                write_jsonl(data, ({"prompt": prompts[i], "strong": strong[i], "weak": weak[i]} for i in train))
                train_router(name, data, Path(tmp) / "ckpt", **{**options, **train_options})
                router = get_router(f"{name}:{Path(tmp) / 'ckpt'}")
                out[test] = np.asarray(router.score([prompts[i] for i in test]), dtype=np.float64)
        return out

    raise ValueError(
        f"don't know how to train {name!r} per fold; --folds works with {', '.join(UNTRAINED + ('blend',) + PREFERENCE)}"
    )
