"""Router quality on the RouteLLM labels, cross-fitted: every issue-6 target with its spread.

    .venv/bin/python bench/quality.py [--data ../shared/data/routellm] [--routers length,blend]
                                      [--folds 5] [--boot 200] [--json]

Three settings, all out-of-fold (a router never scores a prompt it was trained on; copies of
a prompt share a fold):

* ``mmlu_random``  — MMLU, 5 random folds; targets APGR >= 0.66 and CPT(50%) <= 30%;
* ``mmlu_subject`` — MMLU, 5 folds by subject (no subject in train and test); APGR >= 0.62;
* ``gsm8k``        — GSM8K, 5 folds; each fold's router trained on all of MMLU plus the other
  GSM8K folds; APGR >= 0.65.

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

from routing.crossfit import assign_folds, out_of_fold_scores  # noqa: E402
from routing.data import load_gsm8k, load_mmlu  # noqa: E402
from routing.evaluation import bootstrap_apgr, evaluate, random_baseline  # noqa: E402

TARGETS = {
    "mmlu_random": {"apgr": 0.66, "cpt50": 30.0},
    "mmlu_subject": {"apgr": 0.62},
    "gsm8k": {"apgr": 0.65},
}


def default_data() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm"


def run(data: Path, routers: list[str], k: int, boot: int, seed: int) -> dict:
    mmlu, gsm = load_mmlu(data), load_gsm8k(data)
    embeddings = None
    if any(r.split(":")[0] == "blend" for r in routers):
        from routing.embeddings import get_embedder

        t = time.perf_counter()
        emb = get_embedder("minilm")
        embeddings = np.asarray(emb.embed([r.prompt for r in mmlu + gsm]))
        print(f"# embeddings: {len(embeddings)} prompts in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    e_mmlu = embeddings[: len(mmlu)] if embeddings is not None else None
    e_gsm = embeddings[len(mmlu):] if embeddings is not None else None
    settings = {
        "mmlu_random": (mmlu, assign_folds(mmlu, k, seed=seed), [], e_mmlu),
        "mmlu_subject": (mmlu, assign_folds(mmlu, k, group_by="subject", seed=seed), [], e_mmlu),
        "gsm8k": (gsm, assign_folds(gsm, k, seed=seed), mmlu,
                  np.vstack([e_gsm, e_mmlu]) if embeddings is not None else None),
    }
    results: dict = {"folds": k, "bootstrap_draws": boot, "settings": {}}
    for name, (records, folds, extra, E) in settings.items():
        strong = np.array([r.strong for r in records])
        weak = np.array([r.weak for r in records])
        base = random_baseline(strong, weak, draws=50, seed=seed)
        entry: dict = {"n": len(records), "strong": float(strong.mean()), "weak": float(weak.mean()),
                       "random": base.to_dict(), "targets": TARGETS[name], "routers": {}}
        for spec in routers:
            t = time.perf_counter()
            kwargs = {"embeddings": E} if spec.split(":")[0] == "blend" else {}
            scores = out_of_fold_scores(spec, records, folds, extra_train=extra, **kwargs)
            m = evaluate(scores, strong, weak)
            spread = bootstrap_apgr(scores, strong, weak, draws=boot, seed=seed)
            tgt = TARGETS[name]
            met = m.apgr >= tgt["apgr"] and m.cpt50 <= tgt.get("cpt50", 100.0)
            entry["routers"][spec] = {**m.to_dict(), "apgr_boot": spread.to_dict(), "meets_target": met,
                                      "seconds": round(time.perf_counter() - t, 1)}
        results["settings"][name] = entry
    return results


def render(results: dict) -> None:
    for name, entry in results["settings"].items():
        tgt = entry["targets"]
        tgt_s = f"APGR >= {tgt['apgr']}" + (f", CPT(50%) <= {tgt['cpt50']:.0f}%" if "cpt50" in tgt else "")
        print(f"\n{name}  (n={entry['n']}, strong {entry['strong']:.3f}, weak {entry['weak']:.3f}; target {tgt_s})")
        print(f"  {'router':<14} {'APGR':>7} {'±std':>7} {'95% CI':>17} {'CPT50%':>7} {'CPT80%':>7}  met")
        r = entry["random"]
        print(f"  {'random (mean)':<14} {r['apgr']:7.3f} {'':>7} {'':>17} {r['cpt50']:7.1f} {r['cpt80']:7.1f}")
        for spec, m in entry["routers"].items():
            b = m["apgr_boot"]
            print(f"  {spec:<14} {m['apgr']:7.3f} {b['std']:7.3f}   [{b['low']:.3f}, {b['high']:.3f}] "
                  f"{m['cpt50']:7.1f} {m['cpt80']:7.1f}  {'yes' if m['meets_target'] else 'no'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--routers", default="length,blend")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = run(args.data, [r for r in args.routers.split(",") if r], args.folds, args.boot, args.seed)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        render(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
