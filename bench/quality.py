"""Router quality on the RouteLLM labels, cross-fitted: every issue-6 target with its spread.

    .venv/bin/python bench/quality.py [--data ../shared/data/routellm] [--routers length,blend]
                                      [--folds 5] [--boot 200] [--json]

Three settings, all out-of-fold (a router never scores a prompt it was trained on; copies of
a prompt share a fold):

* ``mmlu_random``  — MMLU, 5 random folds; targets APGR >= 0.66 and CPT(50%) <= 30%;
* ``mmlu_subject`` — MMLU, 5 folds by subject (no subject in train and test); APGR >= 0.62;
* ``gsm8k``        — GSM8K, 5 folds; each fold's router trained on all of MMLU plus the other
  GSM8K folds; APGR >= 0.65;
* ``arena``        — arena-bench-v1 (gpt-4-1106-preview vs Mixtral-8x7B, judged 1-10, turned
  into win labels: see :func:`routing.data.arena.load_arena_labels`), 5 folds; each fold's router trained on MMLU +
  GSM8K + the other arena folds. No target: 293 prompts, the spread is large.

``--embedders minilm,static`` runs every embedding router on both embedders and prints the
paired difference of APGR (same bootstrap resamples for both) per setting.

Every APGR comes with its bootstrap spread (prompts resampled with replacement; std and 95%
interval). Embeddings come from the shared content-addressed cache, so only the first run
pays for MiniLM (about 5 minutes on 2 CPU cores).
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

from routing.crossfit import assign_folds, out_of_fold_scores
from routing.data import load_gsm8k, load_mmlu
from routing.data.arena import load_arena_labels
from routing.evaluation import bootstrap_apgr, evaluate, random_baseline

TARGETS = {
    "mmlu_random": {"apgr": 0.66, "cpt50": 30.0},
    "mmlu_subject": {"apgr": 0.62},
    "gsm8k": {"apgr": 0.65},
    "arena": {},  # no target: 293 prompts
}


def default_data() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm"


def default_arena() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "arena-bench-v1"


def machine_banner() -> str:
    """Where and when a bench ran: its figures mean little without the machine and its load."""
    import platform

    return (
        f"# machine: {platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def _router_kind(spec: str) -> str:
    return spec.split(":")[0]


def run(
    data: Path,
    routers: list[str],
    k: int,
    boot: int,
    seed: int,
    embedders: list[str] | None = None,
    arena: Path | None = None,
    only: list[str] | None = None,
) -> dict:
    """Every setting x router (x embedder for the embedding routers), out-of-fold."""
    mmlu, gsm = load_mmlu(data), load_gsm8k(data)
    ar = load_arena_labels(arena) if arena is not None and (arena / "scores.csv").exists() else []
    allrec = mmlu + gsm + ar
    embedders = embedders or ["minilm"]
    cache: dict[str, np.ndarray] = {}

    def vectors(name: str) -> np.ndarray:
        if name not in cache:
            from routing.embeddings import get_embedder

            t = time.perf_counter()
            cache[name] = np.asarray(get_embedder(name).embed([r.prompt for r in allrec]))
            print(f"# embeddings ({name}): {len(allrec)} prompts in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        return cache[name]

    n_m, n_g = len(mmlu), len(gsm)

    def part(E: np.ndarray, which: str) -> np.ndarray:
        return {"mmlu": E[:n_m], "gsm": E[n_m : n_m + n_g], "arena": E[n_m + n_g :]}[which]

    settings = {
        "mmlu_random": (mmlu, assign_folds(mmlu, k, seed=seed), [], lambda E: part(E, "mmlu")),
        "mmlu_subject": (mmlu, assign_folds(mmlu, k, group_by="subject", seed=seed), [], lambda E: part(E, "mmlu")),
        "gsm8k": (gsm, assign_folds(gsm, k, seed=seed), mmlu, lambda E: np.vstack([part(E, "gsm"), part(E, "mmlu")])),
    }
    if ar:
        settings["arena"] = (
            ar,
            assign_folds(ar, k, seed=seed),
            mmlu + gsm,
            lambda E: np.vstack([part(E, "arena"), part(E, "mmlu"), part(E, "gsm")]),
        )
    if only:
        settings = {k: v for k, v in settings.items() if k in only}
    runs: list[tuple[str, str, str | None]] = []  # (label, spec, embedder)
    for spec in routers:
        if _router_kind(spec) in ("random", "length"):
            runs.append((spec, spec, None))
        else:
            for emb in embedders:
                label = spec if len(embedders) == 1 else f"{spec}@{emb}"
                runs.append((label, spec, emb))
    results: dict = {"folds": k, "bootstrap_draws": boot, "embedders": embedders, "settings": {}}
    for name, (records, folds, extra, pick) in settings.items():
        strong = np.array([r.strong for r in records])
        weak = np.array([r.weak for r in records])
        base = random_baseline(strong, weak, draws=50, seed=seed)
        entry: dict = {
            "n": len(records),
            "strong": float(strong.mean()),
            "weak": float(weak.mean()),
            "random": base.to_dict(),
            "targets": TARGETS[name],
            "routers": {},
        }
        for label, spec, emb in runs:
            t = time.perf_counter()
            kwargs: dict = {}
            run_spec = spec
            if emb is not None:
                if _router_kind(spec) == "blend":
                    kwargs = {"embeddings": pick(vectors(emb))}
                else:
                    run_spec = f"{spec}{',' if ':' in spec else ':'}embedder={emb}"
            scores = out_of_fold_scores(run_spec, records, folds, extra_train=extra, **kwargs)
            m = evaluate(scores, strong, weak)
            spread = bootstrap_apgr(scores, strong, weak, draws=boot, seed=seed)
            tgt = TARGETS[name]
            met = bool(tgt) and m.apgr >= tgt["apgr"] and m.cpt50 <= tgt.get("cpt50", 100.0)
            entry["routers"][label] = {
                **m.to_dict(),
                "apgr_boot": spread.to_dict(),
                "meets_target": met,
                "seconds": round(time.perf_counter() - t, 1),
                "scores": scores,
            }
        if len(embedders) == 2:
            entry["paired"] = paired_differences(entry, runs, embedders, strong, weak, boot, seed)
        for r in entry["routers"].values():
            r.pop("scores")
        results["settings"][name] = entry
    return results


def paired_apgr_difference(
    scores_a: np.ndarray, scores_b: np.ndarray, strong: np.ndarray, weak: np.ndarray, boot: int, seed: int
) -> dict:
    """APGR(b) - APGR(a) with a paired bootstrap: both routers scored on the same resampled prompts.

    Pairing matters: the two routers' spreads overlap widely, but their difference on the
    same prompts is much tighter, and it is the difference the question is about.
    """
    rng = np.random.default_rng(seed)
    n = len(strong)
    diffs = []
    for _ in range(boot):
        idx = rng.integers(0, n, n)
        if strong[idx].mean() == weak[idx].mean():
            continue
        diffs.append(evaluate(scores_b[idx], strong[idx], weak[idx]).apgr - evaluate(scores_a[idx], strong[idx], weak[idx]).apgr)
    d = np.asarray(diffs)
    return {
        "diff": evaluate(scores_b, strong, weak).apgr - evaluate(scores_a, strong, weak).apgr,
        "std": float(d.std()),
        "low": float(np.quantile(d, 0.025)),
        "high": float(np.quantile(d, 0.975)),
    }


def paired_differences(
    entry: dict, runs: list, embedders: list[str], strong: np.ndarray, weak: np.ndarray, boot: int, seed: int
) -> dict:
    """APGR(second embedder) - APGR(first) per embedding router, paired."""
    a_name, b_name = embedders
    return {
        spec: paired_apgr_difference(
            entry["routers"][f"{spec}@{a_name}"]["scores"],
            entry["routers"][f"{spec}@{b_name}"]["scores"],
            strong,
            weak,
            boot,
            seed,
        )
        for spec in dict.fromkeys(s for _, s, e in runs if e is not None)
    }


def render(results: dict) -> None:
    for name, entry in results["settings"].items():
        tgt = entry["targets"]
        tgt_s = (
            f"APGR >= {tgt['apgr']}" + (f", CPT(50%) <= {tgt['cpt50']:.0f}%" if "cpt50" in tgt else "") if tgt else "no target"
        )
        print(f"\n{name}  (n={entry['n']}, strong {entry['strong']:.3f}, weak {entry['weak']:.3f}; target {tgt_s})")
        print(f"  {'router':<14} {'APGR':>7} {'±std':>7} {'95% CI':>17} {'CPT50%':>7} {'CPT80%':>7}  met")
        r = entry["random"]
        print(f"  {'random (mean)':<14} {r['apgr']:7.3f} {'':>7} {'':>17} {r['cpt50']:7.1f} {r['cpt80']:7.1f}")
        for spec, m in entry["routers"].items():
            b = m["apgr_boot"]
            print(
                f"  {spec:<14} {m['apgr']:7.3f} {b['std']:7.3f}   [{b['low']:.3f}, {b['high']:.3f}] "
                f"{m['cpt50']:7.1f} {m['cpt80']:7.1f}  {('yes' if m['meets_target'] else 'no') if tgt else '-'}"
            )
        for spec, d in entry.get("paired", {}).items():
            a, b = results["embedders"]
            print(
                f"  {spec}: APGR {b} - {a} = {d['diff']:+.4f}  paired bootstrap std {d['std']:.4f}  "
                f"95% CI [{d['low']:+.4f}, {d['high']:+.4f}]"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--routers", default="length,blend")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--embedders",
        default="minilm",
        help="comma-separated embedders for the embedding routers, e.g. minilm,static (paired diff)",
    )
    ap.add_argument(
        "--arena", type=Path, default=default_arena(), help="arena-bench-v1 directory (setting 'arena'; skipped when absent)"
    )
    ap.add_argument("--settings", default="", help="comma-separated subset of the settings (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    print(machine_banner(), file=sys.stderr)
    started = time.perf_counter()
    results = run(
        args.data,
        [r for r in args.routers.split(",") if r],
        args.folds,
        args.boot,
        args.seed,
        [e for e in args.embedders.split(",") if e],
        args.arena,
        [x for x in args.settings.split(",") if x],
    )
    print(f"# total {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        render(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
