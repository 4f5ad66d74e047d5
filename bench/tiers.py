"""N-model allocation (issue 13 item 3): three tiers on llmrouter's held-out test split.

What is fixed before any test label is looked at:

* **The tiers**, by a rule applied to the *train* split: the config-like price table below puts
  every model of the data set in a price band (top >= $0.60/Mtok: the 51B and 70B models;
  mid $0.15-0.60: the 49B NAS model; bottom < $0.15: the 7-9B models), and each tier is the
  model with the best train mean score in its band.
* **The quality heads** (``routing.tier_quality.fit_task_quality``): a softmax classifier
  prompt -> task, each task's mean score per model and a per-task ridge head on the residual,
  on the static embedder plus the ``blend`` text features. Their two constants were chosen by
  5-fold out-of-fold allocator quality on the train split (``--select`` prints that table).
  Only train prompts need task labels; test prompts are scored from their text alone.

The heads are fitted on the train split and predict the test split; the allocator
(``routing.tiers.allocate_tiers``) picks one model per test prompt under caps of 20%, 40% and
60% of the all-top cost. At the spend each allocation really reaches, it is compared with:

* the best two-model routing: every pair of the three tiers, routed by the two-model
  allocator (the same knapsack on the pair) under the same cap, once with the task-mixture
  heads and once with the plain ridge heads (``fit_tier_quality``); the best of those six
  routings by *test* quality, which flatters the baseline. A pairwise router trained on the
  pair's score difference is the same thing here: every part of the heads is linear in the
  labels, so the difference head is the difference of the heads;
* the best single model within the same spend, or the random mix of two single models at
  exactly that spend (the straight line between price points).

Quality is the mean true score of the chosen answers; intervals are a paired bootstrap over
test prompts (choices fixed, the baseline recomputed on each resample). Tokens are prompt
chars / 4 in and ``OUTPUT_TOKENS`` out.

    .venv/bin/python bench/tiers.py [--data ../shared/data/llmrouter] [--boot 2000] [--select]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from routing.embeddings import Embedder

PRICES = {  # model: USD per Mtok, input and output alike (hosted open-model prices, 2026)
    "llama-3.1-nemotron-51b-instruct": 0.90,
    "llama3-chatqa-1.5-70b": 0.90,
    "llama-3.3-nemotron-super-49b-v1": 0.40,
    "gemma-2-9b-it": 0.06,
    "llama-3.1-8b-instruct": 0.06,
    "qwen2.5-7b-instruct": 0.06,
    "mistral-7b-instruct-v0.3": 0.06,
    "codegemma-7b": 0.06,
    "llama3-chatqa-1.5-8b": 0.06,
}
BANDS = (("top", 0.60, float("inf")), ("mid", 0.15, 0.60), ("bottom", 0.0, 0.15))  # [low, high) USD/Mtok
OUTPUT_TOKENS = 256
BUDGETS = (0.2, 0.4, 0.6)
FOLDS = 5


def load(path: Path) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    prompts = [r["prompt"] for r in rows]
    tasks = [r["task"] for r in rows]
    scores = {m: np.array([float(r["scores"][m]) for r in rows]) for m in PRICES}
    return prompts, tasks, scores


def choose_tiers(train_scores: dict[str, np.ndarray]) -> list[str]:
    """The best-on-train model of each price band, top band first: the rule fixed in advance."""
    tiers = []
    for _, low, high in BANDS:
        band = [m for m, p in PRICES.items() if low <= p < high]
        tiers.append(max(band, key=lambda m: float(train_scores[m].mean())))
    return tiers


def costs(prompts: list[str], tiers: list[str]) -> np.ndarray:
    tokens_in = np.array([len(p) / 4 for p in prompts])
    return np.column_stack([(tokens_in + OUTPUT_TOKENS) * PRICES[m] / 1e6 for m in tiers])


def best_pair(
    pred_sets: dict[str, np.ndarray], y: np.ndarray, c: np.ndarray, cap: float, names: list[str]
) -> tuple[float, str, np.ndarray]:
    """The best two-model routing within ``cap`` by test quality, over every pair and head set."""
    from routing.tiers import allocate_tiers

    rows = np.arange(len(y))
    best: tuple[float, str, np.ndarray] = (-1.0, "", rows)
    for heads, pred in pred_sets.items():
        for a, b in itertools.combinations(range(c.shape[1]), 2):
            two = allocate_tiers(pred[:, [a, b]], c[:, [a, b]], cap)
            choice = np.where(two.choice == 0, a, b)
            q = float(y[rows, choice].mean())
            if q > best[0]:
                best = (q, f"{names[a]} / {names[b]}, {heads}", choice)
    return best


def select(X: np.ndarray, y: np.ndarray, tasks: list[str], c: np.ndarray) -> None:
    """Train-split 5-fold out-of-fold table behind the heads' constants (never sees test)."""
    from routing.tier_quality import out_of_fold_quality, out_of_fold_task_quality
    from routing.tiers import allocate_tiers

    n = len(y)
    rows = np.arange(n)
    folds = np.random.default_rng(0).permutation(n) % FOLDS
    top = float(c[:, 0].sum())
    cands: list[tuple[str, np.ndarray]] = []
    for alpha in (0.05, 0.2):
        cands.append((f"ridge alpha={alpha}", out_of_fold_quality(X, y, folds, alpha)))
    for alpha in (1.0, 3.0, 10.0, 30.0):
        cands.append((f"task-mixture alpha={alpha}", out_of_fold_task_quality(X, y, tasks, folds, alpha)))
    print(f"train split, {FOLDS}-fold out-of-fold (selection of the heads' constants):")
    for name, pred in cands:
        pred = np.clip(pred, 0, 1)
        qs = []
        for share in BUDGETS:
            a = allocate_tiers(pred, c, share * top)
            qs.append(float(y[rows, a.choice].mean()))
        print(
            f"  {name:28s} Brier {((pred - y) ** 2).mean():.4f}  three-tier quality at "
            f"{', '.join(f'{100 * s:.0f}%: {q:.4f}' for s, q in zip(BUDGETS, qs, strict=True))}  mean {np.mean(qs):.4f}"
        )
    print()


def compare(title: str, pred: np.ndarray, ridge: np.ndarray, y: np.ndarray, c: np.ndarray, names: list[str], nboot: int) -> bool:
    """Allocator vs the best two-model routing and the best single model or mix, at the three budgets;
    True when it beats both on point estimates at every budget."""
    from routing.tiers import allocate_tiers

    n = len(y)
    rows = np.arange(n)
    top_cost = float(c[:, 0].sum())
    boot = np.random.default_rng(0).integers(0, n, size=(nboot, n))
    print(title)
    print("single models (mean score, cost as % of all-top):")
    single_cost = c.sum(axis=0)
    for j, m in enumerate(names):
        print(f"  {m:34s} quality {y[:, j].mean():.4f}  cost {100 * single_cost[j] / top_cost:5.1f}%")

    def boot_mean(per: np.ndarray) -> np.ndarray:
        return np.asarray(per[boot].mean(axis=1))

    def mix_at(spend: float) -> tuple[float, str, np.ndarray]:
        """The best random mix of two single models costing ``spend`` (or one model), with its
        bootstrap replicates on the same resamples."""
        best: tuple[float, str, np.ndarray] = (-1.0, "", np.zeros(nboot))
        for a, b in itertools.permutations(range(len(names)), 2):
            lo, hi = (a, b) if single_cost[a] <= single_cost[b] else (b, a)
            if a != lo or not single_cost[lo] <= spend <= single_cost[hi]:
                continue
            t = (spend - single_cost[lo]) / (single_cost[hi] - single_cost[lo]) if single_cost[hi] > single_cost[lo] else 1.0
            q = (1 - t) * y[:, lo].mean() + t * y[:, hi].mean()
            if q > best[0]:
                reps = (1 - t) * boot_mean(y[:, lo]) + t * boot_mean(y[:, hi])
                best = (float(q), f"{1 - t:.2f} {names[lo]} + {t:.2f} {names[hi]}", reps)
        for j in range(len(names)):
            if single_cost[j] <= spend and y[:, j].mean() > best[0]:
                best = (float(y[:, j].mean()), names[j], boot_mean(y[:, j]))
        return best

    def ci(x: np.ndarray) -> str:
        return f"[{np.percentile(x, 2.5):+.4f}, {np.percentile(x, 97.5):+.4f}]"

    ok = True
    print()
    for share in BUDGETS:
        cap = share * top_cost
        three = allocate_tiers(pred, c, cap)
        spend = three.cost
        q3 = float(y[rows, three.choice].mean())
        b3 = boot_mean(y[rows, three.choice])
        old = allocate_tiers(ridge, c, cap)
        q2, pair_name, pair_choice = best_pair({"task-mixture": pred, "ridge": ridge}, y, c, spend, names)
        d2 = b3 - boot_mean(y[rows, pair_choice])
        q1, mix_name, mix_reps = mix_at(spend)
        d1 = b3 - mix_reps
        share_of = [float((three.choice == j).mean()) for j in range(3)]
        print(
            f"budget {100 * share:.0f}% of all-top: allocator spends {100 * spend / top_cost:.1f}% "
            f"(models {', '.join(f'{100 * s:.0f}%' for s in share_of)}), quality {q3:.4f} "
            f"[{np.percentile(b3, 2.5):.4f}, {np.percentile(b3, 97.5):.4f}]; predicted-quality gap to the LP bound "
            f"{three.gap / n:.5f}/prompt; (three tiers on the ridge heads: {float(y[rows, old.choice].mean()):.4f})"
        )
        print(
            f"  best two-model ({pair_name} heads) at {100 * float(c[rows, pair_choice].sum()) / top_cost:.1f}%: "
            f"{q2:.4f}; allocator - it = {q3 - q2:+.4f} {ci(d2)}, P(boot <= 0) {float((d2 <= 0).mean()):.3f}"
        )
        print(f"  best single/mix at equal spend ({mix_name}): {q1:.4f}; allocator - it = {q3 - q1:+.4f} {ci(d1)}")
        beats = q3 > q2 and q3 > q1
        ok &= beats
        print(
            f"  ratio allocator / best two-model {q3 / q2:.3f}, allocator / best single-or-mix {q3 / q1:.3f}: "
            f"{'beats both' if beats else 'does NOT beat both'}"
        )
    return ok


def crossfit_folds(prompts: list[str], tasks: list[str], k: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Fold of each row: unique prompts dealt round-robin within each task after a seeded shuffle,
    so every task is spread over the folds and copies of a prompt (train and test share 100) share one."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    by_task: dict[str, list[str]] = {}
    for p, t in zip(prompts, tasks, strict=True):
        if p not in fold_of:
            fold_of[p] = -1
            by_task.setdefault(t, []).append(p)
    for t in sorted(by_task):
        for i, j in enumerate(rng.permutation(len(by_task[t]))):
            fold_of[by_task[t][j]] = i % k
    return np.array([fold_of[p] for p in prompts])


def crossfit(prompts: list[str], tasks: list[str], y: np.ndarray, names: list[str], emb: Embedder, nboot: int) -> bool:
    """The same comparison on every prompt of the data set, each scored by heads fitted without its
    fold. Tiers and the heads' constants stay those fixed on the train split; the test split's task
    labels now train the folds that hold them. The allocation runs once over all out-of-fold predictions."""
    from routing.tier_quality import out_of_fold_quality, out_of_fold_task_quality, tier_design

    X = tier_design(emb.embed(prompts), prompts)
    folds = crossfit_folds(prompts, tasks)
    pred = out_of_fold_task_quality(X, y, tasks, folds)
    ridge = np.clip(out_of_fold_quality(X, y, folds), 0.0, 1.0)
    print()
    return compare(
        f"llmrouter train + test, {FOLDS}-fold out-of-fold (folds by task, copies together): {len(prompts)} prompts",
        pred,
        ridge,
        y,
        costs(prompts, names),
        names,
        nboot,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--select", action="store_true", help="first print the train-split out-of-fold selection table")
    ap.add_argument(
        "--crossfit",
        action="store_true",
        help=f"also compare {FOLDS}-fold out-of-fold over train and test together (11x the prompts of the test split)",
    )
    args = ap.parse_args()
    if not (args.data / "train.jsonl").exists():
        print(f"{args.data}/train.jsonl not found: get the llmrouter data (see its README in ../shared/data/llmrouter)")
        return 2
    from routing.embeddings import get_embedder
    from routing.tier_quality import fit_task_quality, fit_tier_quality, tier_design

    t0 = time.perf_counter()
    train_p, train_t, train_s = load(args.data / "train.jsonl")
    test_p, test_t, test_s = load(args.data / "test.jsonl")  # test tasks are read by --crossfit only
    names = choose_tiers(train_s)
    train_y = np.column_stack([train_s[m] for m in names])
    test_y = np.column_stack([test_s[m] for m in names])
    emb = get_embedder("static")
    X_train = tier_design(emb.embed(train_p), train_p)
    X_test = tier_design(emb.embed(test_p), test_p)
    print(
        "tiers (best train mean per price band): "
        + ", ".join(f"{m} (${PRICES[m]:.2f}/Mtok, train {train_s[m].mean():.3f})" for m in names)
    )
    if args.select:
        select(X_train, train_y, train_t, costs(train_p, names))
    # held out: the heads never saw a test label or a test task
    pred = fit_task_quality(X_train, train_y, train_t).predict(X_test)
    ridge = fit_tier_quality(X_train, train_y).predict(X_test)
    ok = compare(
        f"llmrouter test: {len(test_p)} prompts; heads fitted on {len(train_p)} train prompts",
        pred,
        ridge,
        test_y,
        costs(test_p, names),
        names,
        args.boot,
    )
    if args.crossfit:
        ok &= crossfit(train_p + test_p, train_t + test_t, np.vstack([train_y, test_y]), names, emb, args.boot)
    print(f"\n{'target met (point estimates)' if ok else 'target NOT met'} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
