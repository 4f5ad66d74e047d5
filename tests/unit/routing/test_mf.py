"""Matrix factorisation router: training, the folded scoring head, checkpoints, specs."""

from __future__ import annotations

import numpy as np
import pytest

import routing
import routing.routers  # noqa: F401  registers mf, sw_ranking, bert, causal_llm
from routing.routers.mf import MFRouter
from routing.training.data import battles_from_records
from routing.training.mf import train_mf


def synthetic(n=600, d=16, seed=0):
    """Strong wins where the prompt's first coordinate is positive, ties/weak elsewhere."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    records = []
    for i in range(n):
        s = X[i, 0] > 0
        records.append({"prompt": f"p{i}", "scores": {"big": float(s), "small": float(not s and rng.random() < 0.5)}})
    return X, battles_from_records(records)


def test_mf_learns_a_separable_ranking(tmp_path):
    X, battles = synthetic()
    report = train_mf(battles, X, tmp_path / "mf", dim=8, epochs=100, lr=2e-2, batch_size=128, seed=1)
    assert report["strong"] == "big" and report["weak"] == "small"
    router = MFRouter(str(tmp_path / "mf"))
    scores = router.score_embeddings(X)
    assert scores.shape == (len(X),) and ((scores >= 0) & (scores <= 1)).all()
    positive = X[:, 0] > 0
    # every strong-needing prompt ranks above (almost) every other one
    auc = (scores[positive][:, None] > scores[~positive][None, :]).mean()
    assert auc > 0.97
    # swapping the pair turns the probabilities around
    flipped = MFRouter(str(tmp_path / "mf"), strong="small", weak="big").score_embeddings(X)
    np.testing.assert_allclose(flipped, 1 - scores, atol=1e-6)


def test_mf_folded_head_equals_the_factorised_model(tmp_path):
    X, battles = synthetic(n=200)
    train_mf(battles, X, tmp_path / "mf", dim=4, epochs=3)
    z = np.load(tmp_path / "mf" / "weights.npz")
    P, W, w, b = (z[k].astype(np.float64) for k in ("P", "W", "w", "b"))
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    router = MFRouter(str(tmp_path / "mf"))
    s, k = router.models.index("big"), router.models.index("small")
    q = X.astype(np.float64) @ W.T
    manual = 1 / (1 + np.exp(-(((Pn[s] * q) @ w + b[s]) - ((Pn[k] * q) @ w + b[k]))))
    np.testing.assert_allclose(router.score_embeddings(X), manual, atol=1e-5)


def test_mf_any_model_set_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    records = [{"prompt": f"q{i}", "scores": {"a": 1.0, "b": float(X[i, 1] > 0), "c": 0.0}} for i in range(300)]
    battles = battles_from_records(records)
    assert len(battles) == 900  # three pairs per prompt
    r1 = train_mf(battles, X, tmp_path / "one", dim=4, epochs=5, seed=3)
    train_mf(battles, X, tmp_path / "two", dim=4, epochs=5, seed=3)
    assert (r1["strong"], r1["weak"]) == ("a", "c")
    a = MFRouter(str(tmp_path / "one"), strong="b", weak="c").score_embeddings(X)
    b = MFRouter(str(tmp_path / "two"), strong="b", weak="c").score_embeddings(X)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        MFRouter(str(tmp_path / "one"), strong="zzz")


def test_mf_spec_and_checkpoint_errors(tmp_path):
    X, battles = synthetic(n=100)
    train_mf(battles, X, tmp_path / "ck", dim=4, epochs=2)
    router = routing.get_router(f"mf:{tmp_path / 'ck'},strong=small,weak=big")
    assert isinstance(router, MFRouter) and router.strong == "small"
    assert router.describe()["checkpoint"].endswith("ck")
    assert (tmp_path / "ck" / "weights.npz").stat().st_size < 1_000_000
    with pytest.raises(FileNotFoundError):
        MFRouter(str(tmp_path / "nothing"))


def test_mf_end_to_end_on_minilm(tmp_path, monkeypatch):
    """Train from a JSONL file through the cached MiniLM embedder, score raw prompts."""
    import json

    from routing.training.run import train_router

    monkeypatch.setenv("ROUTEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    hard = [f"Prove that the integral of x^{i} from 0 to 1 equals 1/{i + 1} using Riemann sums." for i in range(30)]
    easy = [f"Say hello to my friend number {i}, please." for i in range(30)]
    data = tmp_path / "labels.jsonl"
    with open(data, "w") as fh:
        for p in hard:
            fh.write(json.dumps({"prompt": p, "scores": {"gpt": 1, "tiny": 0}}) + "\n")
        for p in easy:
            fh.write(json.dumps({"prompt": p, "scores": {"gpt": 1, "tiny": 1}}) + "\n")
    report = train_router("mf", data, tmp_path / "mf", epochs=60, dim=8, lr=1e-2)
    assert report["strong"] == "gpt"
    router = routing.get_router(f"mf:{tmp_path / 'mf'}")
    scores = router.score(["Prove that the integral of x^7 from 0 to 1 equals 1/8 using Riemann sums.",
                           "Say hello to my friend number 99, please."])
    assert scores[0] > scores[1]
    # training embedded the prompts; scoring them again must be served by the cache
    inner = router.embedder.inner
    before = inner.texts_embedded
    router.score(hard[:5] + easy[:5])
    assert inner.texts_embedded == before


def test_shipped_checkpoint_routes_without_training():
    """A fresh install scores with the plain spec ``mf``."""
    from routing.routers._checkpoint import default_checkpoint

    if not (default_checkpoint("mf") / "router.json").exists():
        pytest.skip("no shipped mf checkpoint")
    router = routing.get_router("mf")
    assert router.strong == "gpt-4-1106-preview"
    assert (default_checkpoint("mf") / "weights.npz").stat().st_size < 1_000_000
    E = np.random.default_rng(0).normal(size=(5, 384)).astype(np.float32)
    s = router.score_embeddings(E / np.linalg.norm(E, axis=1, keepdims=True))
    assert s.shape == (5,) and ((s > 0) & (s < 1)).all()


def test_describe_fingerprints_the_weights(tmp_path):
    X, battles = synthetic(n=100)
    train_mf(battles, X, tmp_path / "a", dim=4, epochs=2, seed=0)
    train_mf(battles, X, tmp_path / "b", dim=4, epochs=2, seed=1)
    fa = MFRouter(str(tmp_path / "a")).describe()["fingerprint"]
    assert fa == MFRouter(str(tmp_path / "a")).describe()["fingerprint"] and len(fa) == 16
    assert fa != MFRouter(str(tmp_path / "b")).describe()["fingerprint"]
