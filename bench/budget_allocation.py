"""Budget-optimal allocation vs a fixed threshold at the same spend, on GSM8K labels.

For each prompt the recorded answers of both models give the real cost of each call
(prompt tokens + that model's answer tokens at the config's prices) and whether each answer
was correct. A router scores the prompts; then at a budget of X% of the all-strong cost:

* threshold: the highest-scored prompts go strong while the total fits (one threshold);
* allocation: routing.allocation.allocate_budget, strong-win score per extra dollar;

both realised accuracies are printed with their difference and a bootstrap interval.
Costs passed to the allocator are *estimates* (prompt tokens + a per-model mean answer
length), as a job would have them before any call; the realised spend uses the real ones.

    .venv/bin/python bench/budget_allocation.py [--router length] [--labels .../gsm8k_responses.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
PRICES = {STRONG: (10.0, 30.0), WEAK: (0.6, 0.6)}  # USD per million input / output tokens
DEFAULT_LABELS = Path(os.environ.get("ROUTEBATCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "routellm" / "gsm8k" / "gsm8k_responses.csv"


def load(path: Path):
    from jobs.money.tokens import count_text_tokens

    rows = list(csv.DictReader(path.open(newline="", encoding="utf-8")))
    prompts = [r["prompt"] for r in rows]
    ok_s = np.array([r[STRONG] == "True" for r in rows], dtype=float)
    ok_w = np.array([r[WEAK] == "True" for r in rows], dtype=float)
    tin = np.array([count_text_tokens(p) for p in prompts], dtype=float)
    out_s = np.array([count_text_tokens(r[f"{STRONG}_response"]) for r in rows], dtype=float)
    out_w = np.array([count_text_tokens(r[f"{WEAK}_response"]) for r in rows], dtype=float)
    return prompts, ok_s, ok_w, tin, out_s, out_w


def cost(tin, tout, model):
    pin, pout = PRICES[model]
    return (tin * pin + tout * pout) / 1e6


def main() -> None:
    from routing import get_router
    from routing.allocation import allocate_budget, threshold_at_spend

    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    ap.add_argument("--router", default="length")
    ap.add_argument("--budgets", default="0.2,0.3,0.4,0.5,0.6")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    if not args.labels.exists():
        raise SystemExit(f"{args.labels}: not found; get gsm8k_responses.csv from lm-sys/RouteLLM (routellm/evals/gsm8k/)")

    prompts, ok_s, ok_w, tin, out_s, out_w = load(args.labels)
    real_s, real_w = cost(tin, out_s, STRONG), cost(tin, out_w, WEAK)
    est_s, est_w = cost(tin, np.full_like(tin, out_s.mean()), STRONG), cost(tin, np.full_like(tin, out_w.mean()), WEAK)
    scores = np.asarray(get_router(args.router).score(prompts), dtype=float)
    all_strong = real_s.sum()
    print(f"GSM8K: {len(prompts)} prompts; strong acc {ok_s.mean():.3f}, weak acc {ok_w.mean():.3f}; all-strong cost ${all_strong:.2f}, all-weak ${real_w.sum():.2f}")
    print(f"router {args.router}")
    print(f"{'budget':>8} {'thr acc':>8} {'thr spend':>10} {'alloc acc':>9} {'alloc spend':>11} {'diff (pp)':>9} {'95% CI (pp)':>16}")
    rng = np.random.default_rng(0)
    for frac in (float(x) for x in args.budgets.split(",")):
        cap = frac * all_strong
        thr = threshold_at_spend(scores, est_s, est_w, cap)
        alloc = allocate_budget(scores, est_s, est_w, cap).strong
        acc_t = np.where(thr, ok_s, ok_w)
        acc_a = np.where(alloc, ok_s, ok_w)
        spend_t = np.where(thr, real_s, real_w).sum()
        spend_a = np.where(alloc, real_s, real_w).sum()
        diffs = []
        for _ in range(args.bootstrap):
            idx = rng.integers(0, len(prompts), len(prompts))
            diffs.append(acc_a[idx].mean() - acc_t[idx].mean())
        lo, hi = np.percentile(diffs, [2.5, 97.5]) * 100
        print(
            f"{frac:>7.0%} {acc_t.mean():>8.3f} {spend_t / all_strong:>9.1%} {acc_a.mean():>9.3f} {spend_a / all_strong:>10.1%} "
            f"{100 * (acc_a.mean() - acc_t.mean()):>+9.2f} [{lo:+.2f}, {hi:+.2f}]"
        )


if __name__ == "__main__":
    main()
