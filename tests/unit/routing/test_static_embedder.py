"""The static (model2vec) embedder: deterministic, cached, checked against checkpoints, batch-independent.

Distillation runs on a tiny random-initialised BERT that uses MiniLM's tokenizer (a 1-layer,
32-wide encoder over the same 30k vocabulary), so the tests stay fast and need nothing
beyond the installed packages; ``pca_dims=8``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("model2vec")
pytest.importorskip("torch")

from routing import embeddings as E
from routing.routers import _checkpoint as ckpt

from ._fake_embedder import HashEmbedder

PROMPTS = [
    "What is 2+2?",
    "Prove that there are infinitely many primes.",
    "A train leaves at 3 pm and travels 120 km at 60 km/h. When does it arrive?",
    "Which of the following is NOT a mammal?\nA. whale\nB. bat\nC. shark\nD. dog",
    "",
    "Translate 'good morning' into French.",
]


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT over a 7,000-token cut of MiniLM's WordPiece vocabulary (deterministic weights)."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    src = Path(E.minilm_path())
    out = tmp_path_factory.mktemp("tiny-bert")
    vocab = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()
    small = vocab[:1000] + vocab[1996:8000]  # specials and characters, then the commonest words
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tj["model"]["vocab"] = {t: i for i, t in enumerate(small)}
    for tok in tj.get("added_tokens", []):
        tok["id"] = small.index(tok["content"])
    post = tj.get("post_processor") or {}
    for key in ("cls", "sep"):
        if key in post:
            post[key][1] = small.index(post[key][0])
    (out / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    (out / "vocab.txt").write_text("\n".join(small) + "\n", encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(small), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def distilled(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return E.distill_static(tiny_source, tmp_path_factory.mktemp("static") / "a", pca_dims=8)


def test_distillation_is_deterministic(tiny_source: Path, distilled: Path, tmp_path: Path) -> None:
    again = E.distill_static(tiny_source, tmp_path / "b", pca_dims=8)
    a, b = np.load(distilled / "embeddings.npy"), np.load(again / "embeddings.npy")
    assert a.shape[1] == 8 and a.dtype == np.float32
    assert np.array_equal(a, b)
    ea = E.StaticEmbedder(tiny_source, pca_dims=8, directory=distilled)
    eb = E.StaticEmbedder(tiny_source, pca_dims=8, directory=again)
    assert np.array_equal(ea.embed(PROMPTS), eb.embed(PROMPTS))


def test_model_card_and_vectors(tiny_source: Path, distilled: Path) -> None:
    card = (distilled / "MODEL_CARD.md").read_text()
    for needle in (str(tiny_source.resolve()), "vocabulary", "dimensions: 8", "model2vec", "pca_dims=8"):
        assert needle in card
    emb = E.StaticEmbedder(tiny_source, pca_dims=8, directory=distilled)
    X = emb.embed(PROMPTS)
    assert X.shape == (len(PROMPTS), 8) and X.dtype == np.float32 and emb.dim == 8
    norms = np.linalg.norm(X, axis=1)
    assert np.allclose(norms[[0, 1, 2, 3, 5]], 1.0, atol=1e-5)
    assert norms[4] == 0.0  # an empty prompt has no tokens
    assert emb.model_id.startswith("static:") and "pca=8" in emb.model_id


def test_distilled_once_and_cached_on_disk(tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEBATCH_CACHE_DIR", str(tmp_path))
    first = E.StaticEmbedder(tiny_source, pca_dims=8)
    X1 = first.embed(PROMPTS)
    assert first.distilled and first.directory.parent == tmp_path / "embeddings" / "static"
    assert (first.directory / "static.json").exists() and (first.directory / "MODEL_CARD.md").exists()

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("distilled a second time")

    monkeypatch.setattr(E, "distill_static", boom)
    second = E.StaticEmbedder(tiny_source, pca_dims=8)
    assert second.directory == first.directory
    assert np.array_equal(second.embed(PROMPTS), X1) and not second.distilled
    # other distillation parameters are another cache entry
    assert E.StaticEmbedder(tiny_source, pca_dims=4).directory != first.directory


def test_static_embedder_is_not_wrapped_in_the_sqlite_cache(tiny_source: Path, distilled: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(E, "_SHARED", {})
    monkeypatch.setattr(E, "make_embedder", lambda spec, **o: E.StaticEmbedder(tiny_source, pca_dims=8,
                                                                                directory=distilled))
    emb = E.get_embedder("minilm-static")
    assert isinstance(emb, E.StaticEmbedder)


def test_default_embedder_cpu_vs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv(E.EMBEDDER_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert E.default_embedder_spec() == "static" and E.canonical_spec("auto") == "static"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert E.default_embedder_spec() == "minilm"
    monkeypatch.setenv(E.EMBEDDER_ENV, "minilm-static")  # forced, whatever the device
    assert E.default_embedder_spec() == "static"
    monkeypatch.setenv(E.EMBEDDER_ENV, "minilm")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert E.default_embedder_spec() == "minilm"


def test_blend_default_checkpoint_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from routing.routers.blend import BlendRouter

    monkeypatch.delenv(E.EMBEDDER_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = BlendRouter()
    assert cpu.path is None  # nothing resolved (no CUDA question) before first use
    assert cpu.describe()["embedder"] == "static" and cpu.path == ckpt.default_checkpoint("blend_static")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = BlendRouter()
    assert gpu.describe()["embedder"] == "minilm" and gpu.path == ckpt.default_checkpoint("blend")
    # forced by the spec option, on either device
    import routing

    forced = routing.get_router("blend:embedder=minilm-static")
    assert forced.path == ckpt.default_checkpoint("blend_static")
    assert routing.get_router("blend:embedder=minilm").path == ckpt.default_checkpoint("blend")


def test_shipped_checkpoints_name_their_embedder() -> None:
    for name, emb, dim in (("blend", "minilm", 384), ("blend_static", "static", 256), ("mf", "minilm", 384)):
        cfg = ckpt.read_config(ckpt.default_checkpoint(name))
        assert cfg["embedder"] == emb
        assert cfg.get("embedding_dim", dim) == dim
    # no static mf ships (it lost more than 0.01 APGR on unseen subjects): mf falls back to MiniLM
    assert not (ckpt.default_checkpoint("mf_static") / "router.json").exists()


def test_wrong_embedder_name_is_a_clear_error() -> None:
    from routing.routers.blend import BlendRouter
    from routing.routers.mf import MFRouter

    with pytest.raises(ValueError, match=r"trained on embedder 'static', not 'minilm'"):
        BlendRouter(str(ckpt.default_checkpoint("blend_static")), embedder="minilm")
    with pytest.raises(ValueError, match=r"trained on embedder 'minilm', not 'static'"):
        MFRouter(str(ckpt.default_checkpoint("mf")), embedder="static")
    with pytest.raises(ValueError, match=r"no shipped mf checkpoint for embedder 'static'"):
        MFRouter(embedder="static")
    # the same vectors under another spelling are fine
    BlendRouter(str(ckpt.default_checkpoint("blend_static")), embedder="minilm-static")


def test_wrong_embedding_width_is_a_clear_error(tmp_path: Path) -> None:
    from routing.routers.blend import BlendRouter
    from routing.routers.mf import MFRouter, save_mf

    blend = BlendRouter(str(ckpt.default_checkpoint("blend_static")))
    blend.use_embedder(HashEmbedder(384))
    with pytest.raises(ValueError, match=r"expects 256-d embeddings from 'static'.*gives 384-d"):
        blend.score(PROMPTS[:2])
    rng = np.random.default_rng(0)
    save_mf(tmp_path / "mf", models=["s", "w"], strong="s", weak="w", P=rng.normal(size=(2, 4)),
            W=rng.normal(size=(4, 256)), w=rng.normal(size=4), b=np.zeros(2), embedder="static")
    mf = MFRouter(str(tmp_path / "mf"))
    mf.use_embedder(HashEmbedder(384))
    with pytest.raises(ValueError, match=r"expects 256-d embeddings from 'static'.*gives 384-d"):
        mf.score(PROMPTS[:2])


def test_router_scores_a_prompt_the_same_alone_and_in_a_batch(tiny_source: Path, distilled: Path,
                                                              tmp_path: Path) -> None:
    from routing.routers.blend import BlendRouter, fit_blend
    from routing.routers.blend_features import feature_matrix
    from routing.routers.mf import MFRouter, save_mf

    emb = E.StaticEmbedder(tiny_source, pca_dims=8, directory=distilled)
    train = [f"Question {i}: how many {i * 7} apples are left after {i} are eaten?" for i in range(40)] + PROMPTS
    rng = np.random.default_rng(1)
    strong, weak = rng.integers(0, 2, len(train)).astype(float), rng.integers(0, 2, len(train)).astype(float)
    model = fit_blend(emb.embed(train), feature_matrix(train), strong, weak)
    blend = BlendRouter(model=model)
    blend.use_embedder(emb)
    save_mf(tmp_path / "mf", models=["s", "w"], strong="s", weak="w", P=rng.normal(size=(2, 4)),
            W=rng.normal(size=(4, 8)), w=rng.normal(size=4), b=np.zeros(2), embedder="static")
    mf = MFRouter(str(tmp_path / "mf"))
    mf.use_embedder(emb)
    batch = PROMPTS + train[:20]
    for router in (blend, mf):
        together = router.score(batch)
        alone = np.array([router.score([p])[0] for p in batch])
        assert np.array_equal(together, alone)


def test_fast_text_feature_paths_equal_the_plain_definitions() -> None:
    """The ASCII fast paths of blend's features (bytes.translate, lowercased patterns) change no value."""
    import re

    from routing.routers import blend_features as bf

    texts = PROMPTS + ["5 Percent of 3 HOURS, EACH mile TOTAL", "Ünïcødé ÀB 12 ½ 50 PERCENT Hours", "K\u212a km",
                       "Statement 1 | x\nScenario 1 | y\nHow MANY pounds?"]
    for t in texts:
        assert bf._char_counts(t) == (sum(c.isalpha() for c in t), sum(c.isupper() for c in t),
                                      sum(c.isdigit() for c in t))
        if t.isascii():
            for pat in (bf._TIME, bf._UNITS, bf._MULTISTEP, bf._PERCENT):
                assert len(pat.findall(t)) == len(re.compile(pat.pattern).findall(t.lower()))


def test_no_gpu_driver_means_static_without_importing_torch() -> None:
    import subprocess
    import sys

    code = ("import os, sys; os.environ.pop('ROUTEBATCH_EMBEDDER', None); import routing.embeddings as E; "
            "E._GPU_DRIVER_PATHS = ('/nonexistent/gpu',); print(E.default_embedder_spec(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["static", "False"]


def _corpus() -> list[str]:
    from routing.data.routellm import load_gsm8k, load_mmlu

    sample = Path(__file__).resolve().parents[2] / "fixtures" / "routellm_sample"
    edge = ["Ünïcode café naïve 3 hours", "tab\there\x0bvertical", "a_b-c'd\"e [x]{y}^_`~|\\", "x" * 150, "a" * 101 + " b",
            "CamelCase UPPER 12,345.67 $5 50% q123: zzqxj", "word " * 600, "", "   ", "nul\x00inside", "end."]
    return [r.prompt for r in load_mmlu(sample)] + [r.prompt for r in load_gsm8k(sample)] + PROMPTS + edge


def test_fast_tokenisation_gives_the_tokenizers_ids(tiny_source: Path, distilled: Path) -> None:
    """The pure-Python path (ASCII text) and the tokenizer agree, [UNK] and truncation included:
    the tiny model's vocabulary is a 7,000-token cut, so many words fall to [UNK] or pieces."""
    emb = E.StaticEmbedder(tiny_source, pca_dims=8, directory=distilled)
    texts = _corpus()
    expected = [e.ids for e in emb.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    assert emb.token_ids(texts) == expected
    assert emb.token_ids(texts) == expected  # second call: every chunk from the word cache
    assert max(map(len, expected)) == emb.max_length  # the 600-word prompt was truncated


def test_batched_text_features_equal_the_reference() -> None:
    from routing.routers.blend_features import feature_matrix, text_features, text_features_reference

    texts = _corpus() + ["Q\nA.", "A. a\nB. b\n", "5,,, 1/2 more than less  than", "Statement 1 | x", "NOTE NOT"]
    ref = np.array([text_features_reference(t) for t in texts])
    assert np.array_equal(np.array([text_features(t) for t in texts]), ref)
    assert np.array_equal(feature_matrix(texts), ref)
    assert np.array_equal(feature_matrix(texts[::-1]), ref[::-1])
    assert np.array_equal(feature_matrix(["a b.", ""]), np.array([text_features_reference("a b."), ref[texts.index("")]]))
    for k in (1, 2, 5):
        assert np.array_equal(feature_matrix(texts[:k]), ref[:k])
