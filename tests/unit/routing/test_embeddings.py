"""Embedders and the content-addressed cache."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from routing.embeddings import (
    CachedEmbedder,
    Embedder,
    EmbeddingCache,
    HFEncoderEmbedder,
    HttpEmbedder,
    MiniLMEmbedder,
    cache_key,
    default_cache_dir,
    get_embedder,
    make_embedder,
)


class CountingEmbedder(Embedder):
    """Deterministic fake: counts every text that reaches the 'model'."""

    model_id = "fake"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @property
    def dim(self) -> int:
        return 4

    def embed(self, texts):
        self.seen.extend(texts)
        out = np.array([[len(t), t.count("a"), 1.0, sum(map(ord, t)) % 7] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_cache_hit_does_not_call_the_model(tmp_path):
    inner = CountingEmbedder()
    emb = CachedEmbedder(inner, EmbeddingCache(tmp_path))
    first = emb.embed(["alpha", "beta", "alpha", "gamma"])
    assert inner.seen == ["alpha", "beta", "gamma"]  # duplicates inside a call embedded once
    second = emb.embed(["gamma", "alpha", "beta"])
    assert inner.seen == ["alpha", "beta", "gamma"]  # nothing new reached the model
    np.testing.assert_array_equal(second, first[[3, 0, 1]])
    # a new process (new cache object, same directory) still hits
    inner2 = CountingEmbedder()
    again = CachedEmbedder(inner2, EmbeddingCache(tmp_path)).embed(["beta", "delta"])
    assert inner2.seen == ["delta"]
    np.testing.assert_array_equal(again[0], first[1])


def test_cache_key_depends_on_model_and_text():
    assert cache_key("m1", "x") != cache_key("m2", "x")
    assert cache_key("m1", "x") != cache_key("m1", "y")
    assert cache_key("m", "ab") != cache_key("ma", "b")  # separator prevents collisions
    assert len(cache_key("m", "x")) == 32


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTEBATCH_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "embeddings"
    assert EmbeddingCache().path.parent == tmp_path / "embeddings"


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from routing.training.tiny import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("enc"))


def test_hf_embedder_buckets_preserve_order_and_match_unbatched(tiny_encoder, tmp_path):
    emb = HFEncoderEmbedder(tiny_encoder, batch_size=2)
    texts = ["short", "a much longer prompt with many more words in it than the others", "mid length text",
             "x", "another fairly long prompt, for bucketing purposes"]
    batched = emb.embed(texts)
    assert batched.shape == (5, 32) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([emb.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert emb.device == "cpu"


def test_hf_embedder_cached_second_call_skips_model(tiny_encoder, tmp_path):
    inner = HFEncoderEmbedder(tiny_encoder)
    emb = CachedEmbedder(inner, EmbeddingCache(tmp_path))
    a = emb.embed(["one prompt", "two prompt"])
    assert inner.texts_embedded == 2
    b = emb.embed(["two prompt", "one prompt"])
    assert inner.texts_embedded == 2 and inner.calls == 1
    np.testing.assert_array_equal(a[::-1], b)


def test_minilm_matches_sentence_transformers_reference():
    """Mean pooling + L2 norm over MiniLM: the known first coordinates of a fixed sentence."""
    emb = MiniLMEmbedder()
    assert emb.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2")
    vec = emb.embed(["This is a test sentence."])
    assert vec.shape == (1, 384)
    # same sentence, reference computed with sentence-transformers 6.2 on these weights
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(emb.path)
    model = AutoModel.from_pretrained(emb.path)
    with torch.inference_mode():
        enc = tok(["This is a test sentence."], return_tensors="pt")
        h = model(**enc).last_hidden_state.mean(1)
        ref = torch.nn.functional.normalize(h, dim=1).numpy()
    np.testing.assert_allclose(vec, ref, atol=1e-5)


def test_http_embedder_batches_and_normalises(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sekret")
    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append((request.headers.get("authorization"), body))
        data = [{"index": i, "embedding": [float(len(t)), 2.0, 0.0]} for i, t in enumerate(body["input"])]
        return httpx.Response(200, json={"data": data[::-1], "model": body["model"]})  # any order

    emb = HttpEmbedder("text-embedding-3-small", "http://emb.local/v1", api_key_env="MY_KEY", batch_size=2,
                       transport=httpx.MockTransport(handler))
    out = emb.embed(["a", "bbb", "cc"])
    assert [len(b["input"]) for _, b in requests] == [2, 1]
    assert all(auth == "Bearer sekret" for auth, _ in requests)
    expected = np.array([[1, 2, 0], [3, 2, 0], [2, 2, 0]], dtype=np.float32)
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)
    assert emb.dim == 3


def test_specs(tmp_path):
    assert isinstance(make_embedder("minilm"), MiniLMEmbedder)
    http = make_embedder("http:my-model@http://localhost:8000/v1")
    assert isinstance(http, HttpEmbedder) and http.base_url == "http://localhost:8000/v1" and http.model == "my-model"
    with pytest.raises(ValueError):
        make_embedder("word2vec")
    cache = EmbeddingCache(tmp_path)
    a = get_embedder("minilm", cache=cache)
    assert a is get_embedder("minilm", cache=cache)  # one copy of the model per process
    assert isinstance(a, CachedEmbedder)
    assert a.inner is get_embedder("minilm", cache=False)


def test_seed_precomputed_vectors(tmp_path):
    inner = CountingEmbedder()
    emb = CachedEmbedder(inner, EmbeddingCache(tmp_path))
    vecs = np.eye(2, 4, dtype=np.float32)
    emb.seed(["p", "q"], vecs)
    np.testing.assert_array_equal(emb.embed(["q", "p"]), vecs[::-1])
    assert inner.seen == []
    with pytest.raises(ValueError):
        emb.seed(["p"], vecs)


def test_http_embedder_retries_transient_errors():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(503 if len(calls) == 1 else 429)
        return httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0, 0.0]}]})

    emb = HttpEmbedder("m", "http://x/v1", backoff=0, transport=httpx.MockTransport(handler))
    np.testing.assert_allclose(emb.embed(["a"]), [[1.0, 0.0]])
    assert len(calls) == 3
    bad = HttpEmbedder("m", "http://x/v1", backoff=0,
                       transport=httpx.MockTransport(lambda r: httpx.Response(400, json={"error": "no"})))
    with pytest.raises(httpx.HTTPStatusError):
        bad.embed(["a"])


def test_importing_routers_does_not_import_torch():
    """Workers import routing before forking; torch/CUDA must load only on first use."""
    import subprocess
    import sys

    code = ("import sys, routing, routing.routers, routing.embeddings, routing.routers.mf, "
            "routing.routers.sw_ranking, routing.routers.bert, routing.routers.causal_llm, routing.training.run; "
            "routing.get_router('mf:/nonexistent') if False else None; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    assert set(routing_names()) >= {"mf", "sw_ranking", "bert", "causal_llm"}


def routing_names():
    import routing
    import routing.routers  # noqa: F401

    return routing.available()


@pytest.mark.gpu
def test_minilm_bf16_on_cuda_close_to_cpu_fp32():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    texts = ["The mitochondria is the powerhouse of the cell.", "short", "x " * 300]
    gpu = MiniLMEmbedder(batch_size=2)
    assert gpu.device.startswith("cuda")
    cpu = MiniLMEmbedder(device="cpu")
    cos = (gpu.embed(texts) * cpu.embed(texts)).sum(1)
    assert (cos > 0.99).all()
