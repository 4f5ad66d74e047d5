"""SW ranking: the vectorised batch scorer equals RouteLLM's per-prompt refit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from routing.routers.sw_ranking import SWRankingRouter, bradley_terry_batch, sw_weights
from routing.training.data import battles_from_records
from routing.training.sw import build_sw


def reference_strong_win_rate(query, train_E, battles, strong, weak, gamma=1.0):
    """RouteLLM's way, one prompt at a time: weighted battles -> logistic-regression Elo."""
    from sklearn.linear_model import LogisticRegression

    sims = train_E @ query
    weights = 10 ** (gamma * sims / max(sims.max(), 1e-6))
    M = len(battles.models)
    wins = np.zeros((M, M))
    for p, a, b, y in zip(battles.prompt_idx, battles.a_idx, battles.b_idx, battles.outcome):
        # compute_elo_mle_with_tie: a win counts 2, a tie 1 for each side
        wins[a, b] += weights[p] * 2 * (y == 1.0) + weights[p] * (y == 0.5)
        wins[b, a] += weights[p] * 2 * (y == 0.0) + weights[p] * (y == 0.5)
    X, Y, w = [], [], []
    for i in range(M):
        for j in range(i + 1, M):
            for winner, loser in ((i, j), (j, i)):
                row = np.zeros(M)
                row[i], row[j] = math.log(10), -math.log(10)
                X.append(row)
                Y.append(1.0 if winner == i else 0.0)
                w.append(wins[winner, loser])
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10_000)
    lr.fit(np.array(X), np.array(Y), sample_weight=np.array(w))
    elo = 400 * lr.coef_[0] + 1000
    s, k = battles.models.index(strong), battles.models.index(weak)
    return 1 / (1 + 10 ** ((elo[k] - elo[s]) / 400))


def make_data(models, n_prompts=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n_prompts, d)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    records = []
    for i in range(n_prompts):
        for a in range(len(models)):
            for b in range(a + 1, len(models)):
                r = rng.random()
                p_a = 0.45 + 0.3 * E[i, 0] * (b - a) / len(models)
                winner = "model_a" if r < p_a else "model_b" if r < 0.85 else "tie"
                records.append({"prompt": f"p{i}", "model_a": models[a], "model_b": models[b], "winner": winner})
    return E, battles_from_records(records)


@pytest.mark.parametrize("models", [["strong", "weak"], ["strong", "mid", "weak"]])
def test_vectorised_equals_per_prompt_reference(tmp_path, models):
    E, battles = make_data(models)
    build_sw(battles, E, tmp_path / "sw", strong="strong", weak="weak")
    router = SWRankingRouter(str(tmp_path / "sw"))
    assert router._two_model == (len(models) == 2)
    queries = np.random.default_rng(1).normal(size=(7, E.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    train_E = router.train_embeddings.astype(np.float64)  # float16-stored, as the router sees them
    fast = router.score_embeddings(queries)
    slow = np.array([reference_strong_win_rate(q.astype(np.float64), train_E, battles, "strong", "weak")
                     for q in queries])
    np.testing.assert_allclose(fast, slow, atol=2e-4)
    assert len(np.unique(np.round(fast, 6))) > 1


def test_batch_equals_one_by_one_and_chunks(tmp_path):
    E, battles = make_data(["s", "w"], n_prompts=30)
    build_sw(battles, E, tmp_path / "sw")
    router = SWRankingRouter(str(tmp_path / "sw"), chunk=4)
    batch = router.score_embeddings(E)
    single = np.concatenate([router.score_embeddings(E[i:i + 1]) for i in range(len(E))])
    np.testing.assert_allclose(batch, single, rtol=1e-6)


def test_bradley_terry_two_models_is_win_share():
    wins = np.array([[[0.0, 3.0], [1.0, 0.0]]])
    r = bradley_terry_batch(wins)
    assert 1 / (1 + np.exp(r[0, 1] - r[0, 0])) == pytest.approx(0.75, abs=1e-9)


def test_weights_follow_routellm():
    sims = np.array([[0.5, 1.0, 0.0]])
    np.testing.assert_allclose(sw_weights(sims), [[10**0.5, 10.0, 1.0]])


def test_prior_keeps_unbeaten_models_finite(tmp_path):
    records = [{"prompt": f"p{i}", "model_a": "s", "model_b": "w", "winner": "model_a"} for i in range(5)]
    battles = battles_from_records(records)
    E = np.eye(5, 4, dtype=np.float32)
    E[4] = [0.5, 0.5, 0.5, 0.5]
    build_sw(battles, E, tmp_path / "sw", prior=1.0)
    scores = SWRankingRouter(str(tmp_path / "sw")).score_embeddings(E)
    assert ((scores > 0.5) & (scores < 1.0)).all()


@pytest.mark.parametrize("models", [["s", "w"], ["s", "m", "w"]])
def test_torch_head_equals_numpy_head(tmp_path, models):
    """The head used next to a CUDA encoder, run here on the CPU, matches the numpy head."""
    pytest.importorskip("torch")
    E, battles = make_data(models, n_prompts=25)
    build_sw(battles, E, tmp_path / "sw", strong="s", weak="w", prior=0.1)
    a = SWRankingRouter(str(tmp_path / "sw"), head="numpy").score_embeddings(E)
    b = SWRankingRouter(str(tmp_path / "sw"), head="torch").score_embeddings(E)
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError):
        SWRankingRouter(str(tmp_path / "sw"), head="tpu")
