"""Scoring throughput: bare encoder forward vs end-to-end router scoring, in one run.

    .venv/bin/python bench/scoring.py [--prompts 512] [--batch-size 64] [--words 50] [--json]

Prints, on this machine (and on CUDA when present):

1. prompts/s of the bare MiniLM forward pass over pre-tokenised, padded batches;
2. prompts/s of end-to-end scoring (tokenise + embed + cache write + MF / SW head) on the
   same batches, and the ratio to (1) (target >= 0.8; the head alone should add <= 10%);
3. batched scoring vs the same router called one prompt at a time (RouteLLM's way);
4. the SW ranking head with 10,000 training battles: its time as a share of embedding time;
5. ``routebatch score`` end to end (read, tokenise, embed, score, write) with the default
   router (``blend`` on this machine's default embedder: ``static`` on a CPU) and, in the same
   run, with ``ROUTEBATCH_EMBEDDER=minilm`` (fresh cache), and their ratio. Target: the
   default >= 10,000 prompts/s on a 2-core CPU (``--cli-prompts``, ``--no-cli`` to skip).

The core, :func:`score_batches` / :func:`time_end_to_end`, takes any iterator of prompt
batches, so a caller can feed it batches read from the ledger DB and write the scores back.
Modes are interleaved batch by batch (rotating order) and timed in total, so a noisy
neighbour on a shared machine hurts all modes alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there one all we their been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like "
         "our over man me even most made after also did many before must through back years where much your way "
         "well down should because each just those people how too little state good very make world still own see "
         "integral theorem probability molecule contract species economy history algorithm").split()


def synthetic_prompts(n: int, words: int = 50, seed: int = 0) -> list[str]:
    """``n`` distinct prompts of about ``words`` words (±20%), deterministic."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(words * rng.uniform(0.8, 1.2))
        out.append(f"Q{i}: " + " ".join(rng.choice(WORDS, size=k)) + "?")
    return out


def batched(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def score_batches(router: Any, batches: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
    """The scoring loop a worker runs: one ``router.score`` call per incoming batch."""
    for batch in batches:
        yield router.score(batch)


def time_end_to_end(router: Any, batches: Iterable[Sequence[str]],
                    sink: Callable[[np.ndarray], None] | None = None) -> dict[str, float]:
    """Wall time and prompts/s of :func:`score_batches` over ``batches`` (``sink`` gets each result)."""
    n = 0
    t0 = time.perf_counter()
    for scores in score_batches(router, batches):
        n += len(scores)
        if sink is not None:
            sink(scores)
    dt = time.perf_counter() - t0
    return {"prompts": n, "seconds": dt, "prompts_per_s": n / dt if dt > 0 else float("inf")}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_bare_forward(embedder: Any, batches: Sequence[Sequence[str]]) -> dict[str, float]:
    """The encoder's forward pass alone, on batches tokenised and padded beforehand."""
    padded = [b for batch in batches for _, b in embedder.tokenize_buckets(batch)]
    n = sum(len(b) for b in batches)
    _sync(embedder.device)
    t0 = time.perf_counter()
    for b in padded:
        embedder.forward(b)
    _sync(embedder.device)
    dt = time.perf_counter() - t0
    return {"prompts": n, "seconds": dt, "prompts_per_s": n / dt}


def make_checkpoints(root: Path, dim: int, embed_dim: int, n_battles: int, seed: int = 0) -> tuple[Path, Path]:
    """Random-weight MF and SW checkpoints: the head's cost does not depend on trained values."""
    from routing.routers.mf import save_mf
    from routing.routers.sw_ranking import save_sw

    rng = np.random.default_rng(seed)
    mf = save_mf(root / "mf", models=["strong", "weak"], strong="strong", weak="weak", embedder="minilm",
                 P=rng.normal(size=(2, dim)), W=rng.normal(size=(dim, embed_dim)) / np.sqrt(embed_dim),
                 w=rng.normal(size=dim), b=np.zeros(2))
    E = rng.normal(size=(n_battles, embed_dim))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    sw = save_sw(root / "sw", models=["strong", "weak"], strong="strong", weak="weak", embeddings=E,
                 prompt_idx=np.arange(n_battles), a_idx=np.zeros(n_battles, int), b_idx=np.ones(n_battles, int),
                 outcome=rng.choice([0.0, 0.5, 1.0], size=n_battles), embedder="minilm")
    return mf, sw


def run(n_prompts: int = 512, batch_size: int = 64, words: int = 50, repeats: int = 3, single: int = 64,
        device: str | None = None, n_battles: int = 10_000, num_threads: int | None = None) -> dict[str, Any]:
    """All measurements on one device; returns a dict of results."""
    from routing.embeddings import CachedEmbedder, EmbeddingCache, MiniLMEmbedder
    from routing.routers.mf import MFRouter
    from routing.routers.sw_ranking import SWRankingRouter

    inner = MiniLMEmbedder(batch_size=batch_size, device=device, num_threads=num_threads)
    prompts = synthetic_prompts(n_prompts, words)
    batches = list(batched(prompts, batch_size))
    tmp = Path(tempfile.mkdtemp(prefix="rb-bench-"))
    mf_dir, sw_dir = make_checkpoints(tmp, 128, inner.dim, n_battles)
    mf, sw = MFRouter(str(mf_dir)), SWRankingRouter(str(sw_dir))
    inner.embed(prompts[:batch_size])  # warm-up: load weights, first-call allocations

    # Interleaved per batch: for every batch the three modes run back to back (in rotating
    # order), so a noisy neighbour slows all three alike; totals are summed over repeats.
    padded = [[b for _, b in inner.tokenize_buckets(batch)] for batch in batches]
    spent = {"bare": 0.0, "mf": 0.0, "sw": 0.0}
    modes = ["bare", "mf", "sw"]
    sw_head: list[float] = []
    for rep in range(repeats):
        # a fresh cache per repeat: every prompt is embedded, and the cache write is paid
        mf.use_embedder(CachedEmbedder(inner, EmbeddingCache(tmp / f"cache-mf-{rep}")))
        sw.use_embedder(CachedEmbedder(inner, EmbeddingCache(tmp / f"cache-sw-{rep}")))
        for k, batch in enumerate(batches):
            turn = (k + rep) % 3
            for name in modes[turn:] + modes[:turn]:
                t0 = time.perf_counter()
                if name == "bare":
                    for b in padded[k]:
                        inner.forward(b)
                    _sync(inner.device)
                else:
                    (mf if name == "mf" else sw).score(batch)
                spent[name] += time.perf_counter() - t0
        E = inner.embed(batches[0])
        t0 = time.perf_counter()
        for _ in range(5):
            sw.score_embeddings(E)
        sw_head.append((time.perf_counter() - t0) / 5)

    total = n_prompts * repeats
    bare, mf_rate, sw_rate = (total / spent[m] for m in modes)
    embed_time_per_batch = batch_size / bare
    out: dict[str, Any] = {
        "device": inner.device,
        "torch_threads": __import__("torch").get_num_threads(),
        "prompts": n_prompts, "batch_size": batch_size, "words": words, "repeats": repeats,
        "bare_forward_prompts_per_s": round(bare, 1),
        "mf_end_to_end_prompts_per_s": round(mf_rate, 1),
        "mf_ratio": round(mf_rate / bare, 3),
        "sw_end_to_end_prompts_per_s": round(sw_rate, 1),
        "sw_ratio": round(sw_rate / bare, 3),
        "sw_battles": n_battles,
        "sw_head_ms_per_batch": round(1000 * statistics.median(sw_head), 2),
        "sw_head_share_of_embedding": round(statistics.median(sw_head) / embed_time_per_batch, 4),
    }
    # where the end-to-end time goes, per batch: less sensitive to a noisy machine than rates
    def per_batch_ms(fn: Callable[[list[str]], Any]) -> float:
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        return 1000 * (time.perf_counter() - t0) / len(batches)

    from routing.embeddings import cache_key

    probe = EmbeddingCache(tmp / "cache-probe")
    vec = np.zeros(inner.dim, dtype=np.float32)
    E_batch = inner.embed(batches[0])
    parts = {
        "tokenize_ms": per_batch_ms(inner.tokenize_buckets),
        "cache_get_put_ms": per_batch_ms(lambda b: (probe.get_many([cache_key(inner.model_id, t) for t in b]),
                                                    probe.put_many([(cache_key(inner.model_id, t), vec) for t in b]))),
        "mf_head_ms": per_batch_ms(lambda b: mf.score_embeddings(E_batch[:len(b)])),
        "sw_head_ms": per_batch_ms(lambda b: sw.score_embeddings(E_batch[:len(b)])),
        "forward_ms": 1000 * embed_time_per_batch,
    }
    out["per_batch_ms"] = {k: round(v, 2) for k, v in parts.items()}
    extra = parts["tokenize_ms"] + parts["cache_get_put_ms"]
    out["mf_overhead_share"] = round((extra + parts["mf_head_ms"]) / parts["forward_ms"], 4)
    out["sw_overhead_share"] = round((extra + parts["sw_head_ms"]) / parts["forward_ms"], 4)

    mf_cached = CachedEmbedder(inner, EmbeddingCache(tmp / "cache-mf-0"))  # already holds every prompt
    mf.use_embedder(mf_cached)
    out["mf_cached_prompts_per_s"] = round(time_end_to_end(mf, batches)["prompts_per_s"], 1)

    # batched vs one prompt at a time, same router, same prompts, no cache; interleaved per chunk
    subset = prompts[:single]
    mf.use_embedder(inner)
    t_one = t_many = 0.0
    for start in range(0, len(subset), batch_size):
        chunk = subset[start:start + batch_size]
        t0 = time.perf_counter()
        for p in chunk:
            mf.score([p])
        t_one += time.perf_counter() - t0
        t0 = time.perf_counter()
        mf.score(chunk)
        t_many += time.perf_counter() - t0
    one = {"prompts_per_s": len(subset) / t_one}
    many = {"prompts_per_s": len(subset) / t_many}
    out.update(single_prompts=single, one_at_a_time_prompts_per_s=round(one["prompts_per_s"], 1),
               batched_prompts_per_s=round(many["prompts_per_s"], 1),
               batched_speedup=round(many["prompts_per_s"] / one["prompts_per_s"], 2))
    return out


def cli_rates(n_default: int, n_minilm: int, words: int, chunk: int = 4096) -> dict[str, Any]:
    """``routebatch score`` with the default router, then with MiniLM forced: both rates, one run."""
    from bench.static_embedder import routebatch_score, write_prompts
    from routing.embeddings import default_embedder_spec

    env = {k: v for k, v in os.environ.items() if k != "ROUTEBATCH_EMBEDDER"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="rb-cli-bench-") as tmp:
        root = Path(tmp)
        big, small, warm = root / "p.jsonl", root / "p_minilm.jsonl", root / "warm.jsonl"
        write_prompts(big, synthetic_prompts(n_default, words, seed=1))
        write_prompts(small, synthetic_prompts(n_minilm, words, seed=int(time.time())))
        write_prompts(warm, synthetic_prompts(10, words, seed=2))
        routebatch_score(warm, root / "warm.out", env, chunk)  # builds the static embedder once if needed
        d = routebatch_score(big, root / "d.out", env, chunk)
        m = routebatch_score(small, root / "m.out", {**env, "ROUTEBATCH_EMBEDDER": "minilm",
                                                    "ROUTEBATCH_CACHE_DIR": str(root / "cold")}, chunk)
    return {"default_embedder": default_embedder_spec(), "default_prompts": d["scored"],
            "default_prompts_per_s": d["prompts_per_s"], "minilm_prompts": m["scored"],
            "minilm_prompts_per_s": m["prompts_per_s"], "ratio": d["prompts_per_s"] / m["prompts_per_s"],
            "chunk": chunk}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--words", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--single", type=int, default=64, help="prompts for the one-at-a-time comparison")
    ap.add_argument("--battles", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--gpu-prompts", type=int, default=65_536)
    ap.add_argument("--gpu-batch-size", type=int, default=1024)
    ap.add_argument("--cli-prompts", type=int, default=50_000, help="prompts for the routebatch score run")
    ap.add_argument("--cli-minilm-prompts", type=int, default=500)
    ap.add_argument("--no-cli", action="store_true", help="skip the routebatch score comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    report: dict[str, Any] = {"machine": f"{platform.machine()} {os.cpu_count()} cores",
                              "load_avg": os.getloadavg()[0]}
    report["cpu"] = run(args.prompts, args.batch_size, args.words, args.repeats, args.single, "cpu",
                        args.battles, args.threads)
    if torch.cuda.is_available():
        report["gpu_name"] = torch.cuda.get_device_name(0)
        report["gpu"] = run(args.gpu_prompts, args.gpu_batch_size, args.words, args.repeats, min(args.single, 256),
                            "cuda", args.battles)
    else:
        report["gpu"] = "skipped: no CUDA device"
    if not args.no_cli:
        report["cli"] = cli_rates(args.cli_prompts, args.cli_minilm_prompts, args.words)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"machine: {report['machine']}, load average {report['load_avg']:.2f}")
    if "cli" in report:
        c = report["cli"]
        print(f"[routebatch score] default ({c['default_embedder']}) {c['default_prompts_per_s']:>9,.0f} prompts/s "
              f"({c['default_prompts']:,} prompts)   MiniLM {c['minilm_prompts_per_s']:>6,.0f} prompts/s "
              f"({c['minilm_prompts']:,} prompts, fresh cache)   ratio {c['ratio']:,.0f}x   "
              f"target default >= 10,000: {'met' if c['default_prompts_per_s'] >= 10_000 else 'NOT met'}")
    for dev in ("cpu", "gpu"):
        r = report[dev]
        if isinstance(r, str):
            print(f"[{dev}] {r}")
            continue
        print(f"[{dev}] device={r['device']} threads={r['torch_threads']} batch={r['batch_size']} "
              f"prompts={r['prompts']} (~{r['words']} words)")
        print(f"  bare MiniLM forward        {r['bare_forward_prompts_per_s']:>10.1f} prompts/s")
        print(f"  end-to-end MF              {r['mf_end_to_end_prompts_per_s']:>10.1f} prompts/s  "
              f"ratio {r['mf_ratio']:.3f} (target >= 0.8)")
        print(f"  end-to-end SW ({r['sw_battles']} battles) {r['sw_end_to_end_prompts_per_s']:>7.1f} prompts/s  "
              f"ratio {r['sw_ratio']:.3f}")
        print(f"  SW head per batch          {r['sw_head_ms_per_batch']:>10.2f} ms = "
              f"{100 * r['sw_head_share_of_embedding']:.2f}% of embedding time (target <= 10%)")
        pb = r["per_batch_ms"]
        print(f"  per batch: forward {pb['forward_ms']:.1f} ms, tokenise {pb['tokenize_ms']:.1f} ms, cache get+put "
              f"{pb['cache_get_put_ms']:.1f} ms, MF head {pb['mf_head_ms']:.2f} ms, SW head {pb['sw_head_ms']:.1f} ms")
        print(f"  => work beyond the forward pass: MF {100 * r['mf_overhead_share']:.1f}%, "
              f"SW {100 * r['sw_overhead_share']:.1f}% of the forward time")
        print(f"  MF, all prompts cached     {r['mf_cached_prompts_per_s']:>10.1f} prompts/s")
        print(f"  one prompt at a time       {r['one_at_a_time_prompts_per_s']:>10.1f} prompts/s")
        print(f"  batched ({r['batch_size']})              {r['batched_prompts_per_s']:>10.1f} prompts/s  "
              f"speed-up {r['batched_speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
