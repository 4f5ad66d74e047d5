"""Templated prompts: does the default router route them as well as the same prompts bare?

    .venv/bin/python bench/templated.py [--boot 200] [--chunk 500] [--embedder auto] [--json]

Batch jobs wrap every item in the same few-shot block or instruction. This benchmark takes
the RouteLLM MMLU and GSM8K labels and scores every prompt three ways, out-of-fold (5
folds; GSM8K folds train on all of MMLU too, as in ``bench/quality.py``):

* ``plain``: the prompt as it is;
* ``prefix``: a shared few-shot prefix of >= 1,000 characters in front of every prompt
  (five or more examples taken from the same data set, then removed from the evaluation);
* ``suffix``: a shared instruction after every prompt.

Each templated set is scored by the same fold's router twice: ``old`` = the router with
``templates=0`` (the whole prompt, as before this change), ``new`` = the default scoring
path (:mod:`routing.templates` strips the shared template per scored batch). The router is
``blend`` on the default embedder of this machine, refit per fold on the *plain* training
prompts (the shipped checkpoint is trained on plain prompts too). Prompts are scored in
chunks of ``--chunk`` in data order, as a job scores its chunks. Printed per setting: APGR
with its bootstrap std and 95% interval, and the paired difference to ``plain`` (the same
bootstrap resamples for both). Target: |templated-new - plain| <= 0.02.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 0.02
MMLU_SUFFIX = "\n\nRespond with the letter of the correct option only (A, B, C or D), with no explanation."
GSM8K_SUFFIX = "\n\nSolve the problem step by step, then give the final numeric answer on its own line, prefixed by '####'."


def few_shot_prefix(prompts: list[str], header: str, answer: Any, min_chars: int = 1000) -> tuple[str, list[int]]:
    """A header plus examples (prompt + answer) until >= ``min_chars``; returns it and the examples' indices."""
    rng = np.random.default_rng(7)
    used: list[int] = []
    text = header
    for i in rng.permutation(len(prompts)):
        if len(prompts[i]) > 600:  # keep examples short, like a real few-shot block
            continue
        used.append(int(i))
        text += prompts[i] + answer(len(used)) + "\n\n"
        if len(text) >= min_chars and len(used) >= 5:
            break
    return text, used


def paired(
    scores_a: np.ndarray, scores_b: np.ndarray, strong: np.ndarray, weak: np.ndarray, draws: int, seed: int = 0
) -> dict[str, float]:
    """APGR(b) - APGR(a) over the same bootstrap resamples."""
    from routing.evaluation import apgr

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        idx = rng.integers(0, strong.size, strong.size)
        d = apgr(scores_b[idx], strong[idx], weak[idx]) - apgr(scores_a[idx], strong[idx], weak[idx])
        if np.isfinite(d):
            diffs.append(d)
    arr = np.asarray(diffs)
    point = apgr(scores_b, strong, weak) - apgr(scores_a, strong, weak)
    return {
        "diff": float(point),
        "std": float(arr.std(ddof=1)),
        "low": float(np.percentile(arr, 2.5)),
        "high": float(np.percentile(arr, 97.5)),
    }


def run(data: Path, boot: int, chunk: int, embedder: str, k: int = 5) -> dict[str, Any]:
    from routing.crossfit import assign_folds
    from routing.data.routellm import load_gsm8k, load_mmlu
    from routing.embeddings import canonical_spec, get_embedder
    from routing.evaluation import bootstrap_apgr, evaluate
    from routing.routers.blend import BlendRouter, fit_blend
    from routing.routers.blend_features import feature_matrix

    embedder = canonical_spec(embedder)
    emb = get_embedder(embedder)
    mmlu_all, gsm_all = load_mmlu(data), load_gsm8k(data)
    letters = "ABCD"
    mmlu_prefix, mmlu_used = few_shot_prefix(
        [r.prompt for r in mmlu_all],
        "The following are multiple choice questions (with answers).\n\n",
        lambda j: " " + letters[j % 4],
    )
    gsm_prefix, gsm_used = few_shot_prefix(
        [r.prompt for r in gsm_all],
        "Solve the following grade-school math word problems.\n\n",
        lambda j: "\nAnswer: work it out step by step, then give the number.",
    )
    ex_m, ex_g = {mmlu_all[i].prompt for i in mmlu_used}, {gsm_all[i].prompt for i in gsm_used}
    mmlu = [r for r in mmlu_all if r.prompt not in ex_m]
    gsm = [r for r in gsm_all if r.prompt not in ex_g]
    out: dict[str, Any] = {
        "embedder": embedder,
        "chunk": chunk,
        "boot": boot,
        "templates": {
            "mmlu_prefix_chars": len(mmlu_prefix),
            "mmlu_prefix_examples": len(mmlu_used),
            "gsm8k_prefix_chars": len(gsm_prefix),
            "gsm8k_prefix_examples": len(gsm_used),
            "mmlu_suffix_chars": len(MMLU_SUFFIX),
            "gsm8k_suffix_chars": len(GSM8K_SUFFIX),
        },
        "settings": {},
    }
    t0 = time.perf_counter()
    E_m = emb.embed([r.prompt for r in mmlu])
    E_g = emb.embed([r.prompt for r in gsm])
    F_m = feature_matrix([r.prompt for r in mmlu])
    F_g = feature_matrix([r.prompt for r in gsm])
    settings = {
        "mmlu": (mmlu, [], E_m, np.zeros((0, E_m.shape[1])), F_m, np.zeros((0, F_m.shape[1])), mmlu_prefix, MMLU_SUFFIX),
        "gsm8k": (gsm, mmlu, E_g, E_m, F_g, F_m, gsm_prefix, GSM8K_SUFFIX),
    }
    for name, (records, extra, E, E_x, F, F_x, prefix, suffix) in settings.items():
        n = len(records)
        folds = assign_folds(records, k)
        strong = np.array([r.strong for r in records])
        weak = np.array([r.weak for r in records])
        s_x = np.array([r.strong for r in extra])
        w_x = np.array([r.weak for r in extra])
        variants = {"plain": lambda p: p, "prefix": lambda p, pre=prefix: pre + p, "suffix": lambda p, suf=suffix: p + suf}
        scores: dict[str, np.ndarray] = {f"{v}-{m}": np.full(n, np.nan) for v in variants for m in ("old", "new")}
        stripped: dict[str, list[str]] = {v: [] for v in variants}
        for f in range(k):
            test = np.flatnonzero(folds == f)
            train = np.flatnonzero(folds != f)
            model = fit_blend(
                np.vstack([E[train], E_x]),
                np.vstack([F[train], F_x]),
                np.concatenate([strong[train], s_x]),
                np.concatenate([weak[train], w_x]),
            )
            model.config["embedder"] = embedder
            routers = {m: BlendRouter(model=model, embedder=embedder, templates=(m == "new")) for m in ("old", "new")}
            for r in routers.values():
                r.use_embedder(emb)
            for v, wrap in variants.items():
                prompts = [wrap(records[i].prompt) for i in test]
                for m, router in routers.items():
                    res = np.empty(len(test))
                    for s in range(0, len(test), chunk):
                        sc, info = router.score_with_template(prompts[s : s + chunk])
                        res[s : s + chunk] = sc
                        if m == "new" and info.stripped and f == 0:
                            stripped[v].append(info.describe())
                    scores[f"{v}-{m}"][test] = res
        rows = {}
        for key, sc in scores.items():
            met = evaluate(sc, strong, weak)
            sp = bootstrap_apgr(sc, strong, weak, draws=boot)
            rows[key] = {"apgr": met.apgr, "std": sp.std, "low": sp.low, "high": sp.high}
            if key != "plain-old":
                rows[key]["vs_plain"] = paired(scores["plain-old"], sc, strong, weak, boot)
        out["settings"][name] = {"n": n, "rows": rows, "stripped_fold0": {v: sorted(set(d))[:4] for v, d in stripped.items()}}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def render(res: dict[str, Any]) -> None:
    t = res["templates"]
    print(
        f"blend on embedder {res['embedder']}, out-of-fold (5 folds), chunks of {res['chunk']}, "
        f"{res['boot']} bootstrap draws; {res['seconds']} s"
    )
    print(
        f"templates: MMLU prefix {t['mmlu_prefix_chars']:,} chars ({t['mmlu_prefix_examples']} examples), "
        f"GSM8K prefix {t['gsm8k_prefix_chars']:,} chars ({t['gsm8k_prefix_examples']} examples), "
        f"suffixes {t['mmlu_suffix_chars']} / {t['gsm8k_suffix_chars']} chars"
    )
    ok = True
    for name, s in res["settings"].items():
        print(f"\n{name} (n={s['n']:,})")
        print(f"  {'condition':<14} {'APGR':>7} {'± std':>7}  {'95% CI':<17} {'vs plain [95% CI]':<28}")
        for key, r in s["rows"].items():
            vs = r.get("vs_plain")
            vs_txt = f"{vs['diff']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}]" if vs else "-"
            print(f"  {key:<14} {r['apgr']:>7.4f} {r['std']:>7.4f}  [{r['low']:.3f}, {r['high']:.3f}]   {vs_txt}")
            if key in ("prefix-new", "suffix-new") and abs(vs["diff"]) > TARGET:
                ok = False
        for v, notes in s["stripped_fold0"].items():
            if notes:
                print(f"  stripped ({v}, fold 0): {'; '.join(notes)}")
    print(f"\ntarget: templated-new within {TARGET} APGR of plain on both sets: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm")
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=500, help="prompts per scored batch (a job's chunk size)")
    ap.add_argument("--embedder", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.data, args.boot, args.chunk, args.embedder)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        render(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
