"""bench/scoring.py stays runnable: a tiny run of every measurement."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "scoring.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_scoring", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_smoke():
    bench = load_bench()
    r = bench.run(n_prompts=8, batch_size=4, words=10, repeats=1, single=4, device="cpu", n_battles=50,
                  num_threads=1)
    for key in ("bare_forward_prompts_per_s", "mf_end_to_end_prompts_per_s", "sw_end_to_end_prompts_per_s",
                "one_at_a_time_prompts_per_s", "batched_prompts_per_s"):
        assert r[key] > 0
    assert r["device"] == "cpu" and r["sw_head_share_of_embedding"] > 0


def test_score_batches_keeps_batches():
    bench = load_bench()

    class Echo:
        def score(self, prompts):
            import numpy as np

            return np.array([len(p) for p in prompts], dtype=float)

    out = list(bench.score_batches(Echo(), [["a", "bb"], ["ccc"]]))
    assert [list(x) for x in out] == [[1.0, 2.0], [3.0]]
    stats = bench.time_end_to_end(Echo(), iter([["a"], ["b", "c"]]))
    assert stats["prompts"] == 3


@pytest.mark.gpu
def test_bench_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    r = load_bench().run(n_prompts=256, batch_size=128, repeats=1, single=16, device="cuda", n_battles=1000)
    assert r["device"].startswith("cuda")
