"""The blend router: it learns, it round-trips, and the shipped checkpoint scores sanely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routing.data import load_gsm8k, load_mmlu
from routing.evaluation import apgr, make_folds, cross_fit_scores
from routing.routers.blend import BlendRouter, fit_blend, load_blend, save_blend, train_blend
from routing.routers.blend_features import FEATURE_NAMES, feature_matrix
from tests.unit.routing._fake_embedder import HashEmbedder

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "routellm_sample"


def _toy(n: int = 600, seed: int = 0):
    """Long prompts and prompts near one embedding direction are where the weak model fails."""
    rng = np.random.default_rng(seed)
    words = rng.integers(3, 120, n)
    prompts = [" ".join(f"w{rng.integers(0, 50)}" for _ in range(k)) + f" q{i}?" for i, k in enumerate(words)]
    E = rng.standard_normal((n, 16))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    hard = 1 / (1 + np.exp(-(words - 60) / 15 - 10 * E[:, 0]))
    weak = (rng.random(n) > hard).astype(float)
    strong = np.maximum(weak, (rng.random(n) < 0.8).astype(float))
    return prompts, E, strong, weak


def test_blend_learns_out_of_fold() -> None:
    prompts, E, strong, weak = _toy()
    F = feature_matrix(prompts)
    folds = make_folds(prompts, 5)

    def fit(train):
        model = fit_blend(E[train], F[train], strong[train], weak[train])
        return lambda test: model.score_arrays(E[test], F[test])

    scores = cross_fit_scores(len(prompts), folds, fit)
    assert np.all((scores >= 0) & (scores <= 1))
    length_only = apgr(F[:, FEATURE_NAMES.index("log_words")], strong, weak)
    assert apgr(scores, strong, weak) > max(0.6, length_only)


def test_save_load_round_trip_and_batch_invariance(tmp_path: Path) -> None:
    prompts, E, strong, weak = _toy(300, seed=1)
    model = fit_blend(E, feature_matrix(prompts), strong, weak, alpha=5.0)
    save_blend(model, tmp_path / "ckpt", {"trained_on": ["toy"]})
    loaded = load_blend(tmp_path / "ckpt")
    assert loaded.config["alpha"] == 5.0 and loaded.config["trained_on"] == ["toy"]
    F = feature_matrix(prompts)
    np.testing.assert_allclose(loaded.score_arrays(E, F), model.score_arrays(E, F), atol=1e-5)
    one_by_one = np.concatenate([loaded.score_arrays(E[i:i + 1], F[i:i + 1]) for i in range(20)])
    np.testing.assert_allclose(one_by_one, loaded.score_arrays(E[:20], F[:20]))


def test_graded_labels_and_a_single_class_train() -> None:
    prompts, E, strong, weak = _toy(200, seed=2)
    F = feature_matrix(prompts)
    graded = fit_blend(E, F, strong * 7 + 1, weak * 5 + 2)  # judge-like scores
    assert np.isfinite(graded.score_arrays(E, F)).all()
    const = fit_blend(E, F, np.ones(200), weak)  # strong always right
    assert np.isfinite(const.score_arrays(E, F)).all()


def test_train_blend_embeds_through_the_given_embeddings(tmp_path: Path) -> None:
    records = load_gsm8k(SAMPLE)
    prompts = [r.prompt for r in records]
    E = HashEmbedder(32).embed(prompts)
    model = train_blend(prompts, np.array([r.strong for r in records]), np.array([r.weak for r in records]),
                        tmp_path / "b", embeddings=E)
    assert (tmp_path / "b" / "router.json").exists() and (tmp_path / "b" / "weights.npz").exists()
    assert model.a["coef_emb"].size == 64


@pytest.mark.parametrize("embedder,dim", [("minilm", 384), ("static", 256)])
def test_shipped_checkpoint_scores_prompts(embedder: str, dim: int) -> None:
    router = BlendRouter(embedder=embedder)  # the shipped checkpoint for that embedder
    router.use_embedder(HashEmbedder(dim))
    prompts = [r.prompt for r in load_mmlu(SAMPLE)[:30]] + [r.prompt for r in load_gsm8k(SAMPLE)[:10]]
    scores = router.score(prompts)
    assert scores.shape == (40,) and np.all((scores >= 0) & (scores <= 1))
    assert len(set(np.round(scores, 9))) > 30  # continuous: no mass ties for the quantile thresholds
    np.testing.assert_allclose(router.score(prompts[:1]), scores[:1])
    assert router.score([]).shape == (0,)
    assert router.describe()["name"] == "blend"


def test_shipped_checkpoint_is_small_and_documented() -> None:
    ckpt = Path(__file__).resolve().parents[3] / "routing" / "checkpoints" / "blend"
    assert sum(p.stat().st_size for p in ckpt.iterdir()) < 200_000
    card = (ckpt / "MODEL_CARD.md").read_text()
    assert "0b64fdafe049e596a3f5657c219329f24af24198" in card and "Apache-2.0" in card
    assert "python -m routing.routers.blend --routellm" in card


def test_wrong_embedding_width_is_refused() -> None:
    router = BlendRouter()
    router.use_embedder(HashEmbedder(16))
    with pytest.raises(ValueError, match="embedding width"):
        router.score(["What is 2 + 2?"])


def test_registered_by_name() -> None:
    from routing.registry import get_router

    assert isinstance(get_router("blend"), BlendRouter)


def test_pair_options() -> None:
    from routing.registry import get_router

    router = get_router("blend:" + str(Path(__file__).resolve().parents[3] / "routing" / "checkpoints" / "blend")
                        + ",strong=gpt-4-1106-preview")
    assert router.describe()["weak"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    with pytest.raises(ValueError, match="trained for strong"):
        BlendRouter(strong="gpt-4o")
