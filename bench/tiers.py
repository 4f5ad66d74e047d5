"""N-model allocation (issue 13 item 3): three tiers on llmrouter's held-out test split.

Per-model quality heads (``routing.tier_quality``: ridge on the static embedder plus the
``blend`` text features) are fitted on the train split only and predict the test split; the
allocator (``routing.tiers.allocate_tiers``) picks one model per test prompt under caps of
20%, 40% and 60% of the all-top cost. At the spend each allocation really reaches, it is
compared with:

* the best two-model routing: every pair of the three tiers, routed by the same heads with
  the same allocator restricted to the pair (the two-model case), the best pair by *test*
  quality (which flatters the baseline);
* the best single model within the same spend, and the random mix of two single models at
  exactly the same spend (the straight line between price points).

Quality is the mean true score of the chosen answers; intervals are a paired bootstrap over
test prompts (choices fixed). Prices are a config-like table below (USD per million tokens,
hosted open-model prices of 2026); tokens are prompt chars / 4 in and ``OUTPUT_TOKENS`` out.

    .venv/bin/python bench/tiers.py [--data ../shared/data/llmrouter] [--boot 2000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

TIERS = {  # model: (input, output) USD per Mtok. Chosen on the *train* split: the best 49-70B model
    # (top), the best remaining model (mid), the best 8B model (bottom).
    "llama-3.1-nemotron-51b-instruct": (0.90, 0.90),
    "llama-3.3-nemotron-super-49b-v1": (0.40, 0.40),
    "llama-3.1-8b-instruct": (0.06, 0.06),
}
OUTPUT_TOKENS = 256
BUDGETS = (0.2, 0.4, 0.6)


def load(path: Path) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    prompts = [r["prompt"] for r in rows]
    scores = np.array([[float(r["scores"][m]) for m in TIERS] for r in rows])
    return prompts, scores


def costs(prompts: list[str]) -> np.ndarray:
    tokens_in = np.array([len(p) / 4 for p in prompts])
    return np.column_stack([(tokens_in * pin + OUTPUT_TOKENS * pout) / 1e6 for pin, pout in TIERS.values()])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter")
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args()
    if not (args.data / "train.jsonl").exists():
        print(f"{args.data}/train.jsonl not found: get the llmrouter data (see its README in ../shared/data/llmrouter)")
        return 2
    from routing.embeddings import get_embedder
    from routing.tier_quality import fit_tier_quality, tier_design
    from routing.tiers import allocate_tiers

    t0 = time.perf_counter()
    train_p, train_y = load(args.data / "train.jsonl")
    test_p, test_y = load(args.data / "test.jsonl")
    emb = get_embedder("static")
    X_train = tier_design(emb.embed(train_p), train_p)
    X_test = tier_design(emb.embed(test_p), test_p)
    pred = np.clip(fit_tier_quality(X_train, train_y).predict(X_test), 0, 1)  # held out: never saw a test label
    c = costs(test_p)
    n = len(test_p)
    rows = np.arange(n)
    names = list(TIERS)
    top_cost = float(c[:, 0].sum())
    rng = np.random.default_rng(0)
    boot = rng.integers(0, n, size=(args.boot, n))
    print(f"llmrouter test: {n} prompts, tiers {names}; heads fitted on {len(train_p)} train prompts")
    print("single models (test mean score, cost as % of all-top):")
    single = []
    for j, m in enumerate(names):
        single.append((float(c[:, j].sum()), float(test_y[:, j].mean()), m))
        print(f"  {m:34s} quality {test_y[:, j].mean():.4f}  cost {100 * c[:, j].sum() / top_cost:5.1f}%")

    def quality_of(choice: np.ndarray) -> np.ndarray:
        per = test_y[rows, choice]
        return np.asarray(per[boot].mean(axis=1))

    def mix_at(spend: float) -> tuple[float, str]:
        """The best random mix of two single models costing exactly ``spend`` (or one model)."""
        best = (-1.0, "")
        for (ca, qa, ma), (cb, qb, mb) in itertools.combinations(single, 2):
            lo, hi = sorted([(ca, qa, ma), (cb, qb, mb)])
            if lo[0] <= spend <= hi[0]:
                t = (spend - lo[0]) / (hi[0] - lo[0]) if hi[0] > lo[0] else 1.0
                best = max(best, ((1 - t) * lo[1] + t * hi[1], f"{1 - t:.2f} {lo[2]} + {t:.2f} {hi[2]}"))
        for cs, qs, ms in single:
            if cs <= spend:
                best = max(best, (qs, ms))
        return best

    ok = True
    print()
    for share in BUDGETS:
        cap = share * top_cost
        three = allocate_tiers(pred, c, cap)
        spend = three.cost
        q3 = float(test_y[rows, three.choice].mean())
        b3 = quality_of(three.choice)
        pairs = []
        for a, b in itertools.combinations(range(3), 2):
            two = allocate_tiers(pred[:, [a, b]], c[:, [a, b]], spend)  # the same spend as the three-tier choice
            choice = np.where(two.choice == 0, a, b)
            pairs.append((float(test_y[rows, choice].mean()), f"{names[a]} / {names[b]}", choice, float(c[rows, choice].sum())))
        q2, pair_name, pair_choice, pair_spend = max(pairs, key=lambda p: p[0])
        d2 = b3 - quality_of(pair_choice)
        q1, mix_name = mix_at(spend)
        d1 = b3 - float(q1)
        share_of = [float((three.choice == j).mean()) for j in range(3)]
        gap = three.gap / n
        print(f"budget {100 * share:.0f}% of all-top: allocator spends {100 * spend / top_cost:.1f}% "
              f"(models {', '.join(f'{100 * s:.0f}%' for s in share_of)}), quality {q3:.4f} "
              f"[{np.percentile(b3, 2.5):.4f}, {np.percentile(b3, 97.5):.4f}]; predicted-quality gap to the LP bound {gap:.5f}/prompt")
        print(f"  best two-model ({pair_name}) at {100 * pair_spend / top_cost:.1f}%: {q2:.4f}; "
              f"allocator - it = {q3 - q2:+.4f} [{np.percentile(d2, 2.5):+.4f}, {np.percentile(d2, 97.5):+.4f}]")
        print(f"  best single/mix at equal spend ({mix_name}): {q1:.4f}; "
              f"allocator - it = {q3 - q1:+.4f} [{np.percentile(d1, 2.5):+.4f}, {np.percentile(d1, 97.5):+.4f}]")
        beats = q3 > q2 and q3 > q1
        ok &= beats
        print(f"  ratio allocator / best two-model {q3 / q2:.3f}, allocator / best single-or-mix {q3 / q1:.3f}: "
              f"{'beats both' if beats else 'does NOT beat both'}")
    print(f"\n{'target met' if ok else 'target NOT met'} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
