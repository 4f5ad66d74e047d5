"""What adding the arena-bench-v1 chat prompts to the shipped training recipe costs or buys.

    .venv/bin/python bench/arena_recipe.py [--data ../shared/data/routellm]
        [--arena ../shared/data/arena-bench-v1] [--embedder static] [--folds 5] [--boot 200] [--json]

The shipped ``blend`` checkpoints are trained on MMLU + GSM8K + the 293 judged arena chat
prompts. This bench answers the question that decision raises: does the chat data hurt
the benchmarks the router is good at? For each of ``bench/quality.py``'s settings
(``mmlu_random``, ``mmlu_subject``, ``gsm8k``) it computes out-of-fold ``blend`` scores
twice on the same folds, once with the recipe without arena and once with the arena
prompts added to every training fold (never scored), and prints the paired-bootstrap
difference of APGR (same resampled prompts for both).

The static embedder is the default because the question is about the training data, not
the encoder, and it runs in seconds (``--embedder minilm`` takes about 5 minutes on 2 CPU
cores the first time, then reads the embedding cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import default_arena, default_data, machine_banner, paired_apgr_difference

from routing.crossfit import assign_folds, out_of_fold_scores
from routing.data import load_gsm8k, load_mmlu
from routing.data.arena import load_arena_labels
from routing.evaluation import evaluate


def run(data: Path, arena: Path, embedder: str, k: int, boot: int, seed: int) -> dict:
    """Per setting: APGR without and with the arena prompts in training, and the paired difference."""
    from routing.embeddings import get_embedder

    mmlu, gsm, ar = load_mmlu(data), load_gsm8k(data), load_arena_labels(arena)
    t = time.perf_counter()
    E = np.asarray(get_embedder(embedder).embed([r.prompt for r in mmlu + gsm + ar]))
    print(f"# embeddings ({embedder}): {len(E)} prompts in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    n_m, n_g = len(mmlu), len(gsm)
    e_mmlu, e_gsm, e_ar = E[:n_m], E[n_m : n_m + n_g], E[n_m + n_g :]
    # (records, folds, extra training records, their embeddings in the same order)
    settings = {
        "mmlu_random": (mmlu, assign_folds(mmlu, k, seed=seed), [], e_mmlu, []),
        "mmlu_subject": (mmlu, assign_folds(mmlu, k, group_by="subject", seed=seed), [], e_mmlu, []),
        "gsm8k": (gsm, assign_folds(gsm, k, seed=seed), mmlu, e_gsm, [e_mmlu]),
    }
    out: dict = {"embedder": embedder, "folds": k, "bootstrap_draws": boot, "arena_prompts": len(ar), "settings": {}}
    for name, (records, folds, extra, e_records, e_extra) in settings.items():
        strong = np.array([r.strong for r in records])
        weak = np.array([r.weak for r in records])
        without = out_of_fold_scores("blend", records, folds, extra_train=extra, embeddings=np.vstack([e_records, *e_extra]))
        with_arena = out_of_fold_scores(
            "blend", records, folds, extra_train=list(extra) + ar, embeddings=np.vstack([e_records, *e_extra, e_ar])
        )
        out["settings"][name] = {
            "n": len(records),
            "apgr_without_arena": evaluate(without, strong, weak).apgr,
            "apgr_with_arena": evaluate(with_arena, strong, weak).apgr,
            "paired": paired_apgr_difference(without, with_arena, strong, weak, boot, seed),
        }
    return out


def render(result: dict) -> None:
    print(
        f"blend@{result['embedder']}, {result['folds']} folds, + {result['arena_prompts']} arena prompts in training; "
        f"paired bootstrap over {result['bootstrap_draws']} resamples"
    )
    print(f"  {'setting':<13} {'n':>6} {'without':>8} {'with':>8} {'diff':>8}  95% CI")
    for name, s in result["settings"].items():
        d = s["paired"]
        print(
            f"  {name:<13} {s['n']:6d} {s['apgr_without_arena']:8.4f} {s['apgr_with_arena']:8.4f} "
            f"{d['diff']:+8.4f}  [{d['low']:+.4f}, {d['high']:+.4f}]"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--arena", type=Path, default=default_arena())
    ap.add_argument("--embedder", default="static")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for needed in (args.data, args.arena):
        if not needed.is_dir():
            print(f"error: {needed} not found (the RouteLLM labels and arena-bench-v1: see docs/benchmarks.md)")
            return 2
    print(machine_banner(), file=sys.stderr)
    started = time.perf_counter()
    result = run(args.data, args.arena, args.embedder, args.folds, args.boot, args.seed)
    print(f"# total {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
