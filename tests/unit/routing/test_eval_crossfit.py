"""routing.crossfit: per-fold training for each kind of router."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routing.crossfit import assign_folds, out_of_fold_scores
from routing.data import load_gsm8k, load_mmlu
from tests.unit.routing._fake_embedder import HashEmbedder

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "routellm_sample"


@pytest.fixture()
def fake_embedder(monkeypatch: pytest.MonkeyPatch) -> HashEmbedder:
    emb = HashEmbedder(384)
    import routing.embeddings

    monkeypatch.setattr(routing.embeddings, "get_embedder", lambda *a, **k: emb)
    return emb


def test_assign_folds_by_subject() -> None:
    recs = load_mmlu(SAMPLE)
    folds = assign_folds(recs, 3, group_by="subject")
    for subject in {r.get("subject") for r in recs}:
        assert len({f for f, r in zip(folds, recs) if r.get("subject") == subject}) == 1
    with pytest.raises(ValueError, match="no record has"):
        assign_folds(recs, 3, group_by="nosuchfield")


def test_length_needs_no_training() -> None:
    recs = load_gsm8k(SAMPLE)
    scores = out_of_fold_scores("length", recs, assign_folds(recs, 3))
    assert scores.shape == (56,) and np.isfinite(scores).all()


def test_blend_with_extra_training_rows(fake_embedder: HashEmbedder) -> None:
    gsm, mmlu = load_gsm8k(SAMPLE), load_mmlu(SAMPLE)
    E = fake_embedder.embed([r.prompt for r in gsm + mmlu])
    scores = out_of_fold_scores("blend", gsm, assign_folds(gsm, 4), extra_train=mmlu, embeddings=E)
    assert scores.shape == (56,) and np.all((scores >= 0) & (scores <= 1))
    assert fake_embedder.texts_embedded == len(gsm) + len(mmlu)  # only the caller's one call


def test_blend_fold_models_differ_from_the_full_model(fake_embedder: HashEmbedder) -> None:
    from routing.routers.blend import fit_blend
    from routing.routers.blend_features import feature_matrix

    recs = load_mmlu(SAMPLE)
    E = fake_embedder.embed([r.prompt for r in recs])
    folds = assign_folds(recs, 4)
    oof = out_of_fold_scores("blend", recs, folds, embeddings=E)
    F = feature_matrix([r.prompt for r in recs])
    full = fit_blend(E, F, np.array([r.strong for r in recs]), np.array([r.weak for r in recs]))
    assert not np.allclose(oof, full.score_arrays(E, F))  # in-sample scores are not what eval reports


def test_unknown_router_is_refused() -> None:
    recs = load_gsm8k(SAMPLE)
    with pytest.raises(ValueError):
        out_of_fold_scores("nosuch", recs, assign_folds(recs, 2))


def test_mf_trains_per_fold(fake_embedder: HashEmbedder) -> None:
    pytest.importorskip("routing.training.mf")
    recs = load_gsm8k(SAMPLE)
    scores = out_of_fold_scores("mf", recs, assign_folds(recs, 2), epochs=2)
    assert scores.shape == (56,) and np.isfinite(scores).all()
