"""bench/arena_recipe.py stays runnable, and its paired difference means what it says."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.unit.routing._fake_embedder import HashEmbedder

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"


def load_bench():
    """The bench imports its sibling ``quality``: bench/ is on the path only while it loads."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_arena_recipe", ROOT / "bench" / "arena_recipe.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        while str(ROOT / "bench") in sys.path:  # the bench inserts it again itself
            sys.path.remove(str(ROOT / "bench"))
    return mod


def test_paired_difference_of_a_router_with_itself_is_exactly_zero() -> None:
    bench = load_bench()
    rng = np.random.default_rng(0)
    strong, weak = rng.integers(0, 2, 300).astype(float), rng.integers(0, 2, 300).astype(float)
    scores = rng.random(300)
    d = bench.paired_apgr_difference(scores, scores, strong, weak, boot=50, seed=0)
    assert d == {"diff": 0.0, "std": 0.0, "low": 0.0, "high": 0.0}


def test_paired_difference_favours_the_router_that_knows_the_labels() -> None:
    bench = load_bench()
    rng = np.random.default_rng(1)
    strong = np.ones(400)
    weak = (rng.random(400) < 0.5).astype(float)
    oracle = 1.0 - weak  # needs the strong model exactly where the weak one fails
    noise = rng.random(400)
    d = bench.paired_apgr_difference(noise, oracle, strong, weak, boot=100, seed=0)
    assert d["diff"] > 0.2 and d["low"] > 0.0 and d["low"] <= d["diff"] <= d["high"]


def test_runs_on_the_fixture_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    import routing.embeddings

    bench = load_bench()
    monkeypatch.setattr(routing.embeddings, "get_embedder", lambda name: HashEmbedder())
    out = bench.run(FIXTURES / "routellm_sample", FIXTURES / "arena_sample", "hash", k=3, boot=20, seed=0)
    assert out["arena_prompts"] == 39
    assert set(out["settings"]) == {"mmlu_random", "mmlu_subject", "gsm8k"}
    for s in out["settings"].values():
        assert np.isfinite(s["apgr_without_arena"]) and np.isfinite(s["apgr_with_arena"])
        assert s["paired"]["diff"] == pytest.approx(s["apgr_with_arena"] - s["apgr_without_arena"])
