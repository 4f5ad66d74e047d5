"""Does `plan` match the bill? Its estimate per row against the realised cost of the same job.

For each dataset: a fresh ledger, a pilot (`plan --pilot N`: N sampled items answered by
both models, recorded as two jobs), then the plan of the whole file from that history;
then the job really run at every share of the plan (0, 10..90%, 100% strong, the same router
and the same cut as `--strong-share`) on a ledger of its own. Printed per row: the plan's
estimate, its p10-p90 interval, the old estimate (every answer at max_tokens), the realised
cost, the error, and whether the realised cost lies inside the interval.

Target (issue 13): every row within +-25% of the realised cost, realised inside the interval.

* sim: the built-in simulated provider (pseudo-answers of 5-64 words), on GSM8K's prompts;
* gsm8k-replay: the recorded GSM8K answers of gpt-4 and Mixtral (real lengths;
  examples/replay-gsm8k.toml pointed at the full file).

    .venv/bin/python bench/plan_accuracy.py [--pilot 40] [--n 1319] [--router length]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROUTEBATCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
GSM8K = SHARED / "routellm" / "gsm8k" / "gsm8k_responses.csv"
SAMPLE = ROOT / "tests" / "fixtures" / "routellm_sample" / "gsm8k" / "gsm8k_responses.csv"


def sim_config():
    from jobs.config import BUILTIN_CONFIG, parse_config

    data = copy.deepcopy(BUILTIN_CONFIG)
    data["providers"]["sim"]["simulated"]["latency_ms"] = 1
    return parse_config(data)


def replay_config(labels: Path, work: Path):
    from jobs.config import load_config

    text = (ROOT / "examples" / "replay-gsm8k.toml").read_text()
    text = text.replace('replay_file = "tests/fixtures/routellm_sample/gsm8k/gsm8k_responses.csv"', f'replay_file = "{labels}"')
    path = work / "replay.toml"
    path.write_text(text)
    return load_config(path)


def write_prompts(labels: Path, path: Path, n: int) -> Path:
    with labels.open(newline="", encoding="utf-8") as fh, path.open("w") as out:
        for i, r in zip(range(n), csv.DictReader(fh)):
            out.write(json.dumps({"custom_id": f"g{i}", "prompt": r["prompt"]}) + "\n")
    return path


def bench(name: str, cfg, data: Path, work: Path, pilot: int, router: str) -> list[dict]:
    from jobs.lifecycle.service import JobSpec, run
    from jobs.reports.planning import accepted_rows, estimate, plan_table, run_pilot
    from jobs.runtime import Runtime
    from jobs.settings import Settings

    strong, weak = cfg.defaults.strong, cfg.defaults.weak
    ledger = f"sqlite:///{work / f'{name}-plan.db'}"
    rt = Runtime(Settings(database_url=ledger, broker_url=None), cfg)
    rows = accepted_rows(cfg, data, strong, weak)
    t = time.perf_counter()
    run_pilot(rt, rows[0], pilot, strong, weak, workdir=work)
    rt.close()
    plan = plan_table(estimate(cfg, data, router, strong, weak, db_url=ledger, rows=rows))
    worst = plan_table(estimate(cfg, data, router, strong, weak, rows=rows))  # the old plan: max_tokens
    print(f"\n{name}: {plan['items']} items, pilot {pilot} items x 2 models ({time.perf_counter() - t:.1f}s)")
    print(f"  basis: {strong}: {plan['basis']['strong']}; {weak}: {plan['basis']['weak']}")
    print(f"  {'row':<12} {'estimate':>10} {'p10-p90':>23} {'max_tokens':>11} {'realised':>10} {'error':>7} {'inside':>6}")
    out = []
    for row, old in zip(plan["rows"], worst["rows"]):
        share = (
            row["strong_share"]
            if row["policy"] not in ("all weak", "all strong")
            else (0.0 if row["policy"] == "all weak" else 1.0)
        )
        rt = Runtime(Settings(database_url=f"sqlite:///{work / f'{name}-{share:.2f}.db'}", broker_url=None), cfg)
        st = run(rt, JobSpec(input_file=str(data), router=router, strong_share=share))
        rt.close()
        realised = st.cost_usd
        error = row["cost_usd"] / realised - 1 if realised else 0.0
        inside = row["cost_low_usd"] <= realised <= row["cost_high_usd"]
        print(
            f"  {row['policy']:<12} {row['cost_usd']:>10.6f} {row['cost_low_usd']:>11.6f}-{row['cost_high_usd']:<11.6f} "
            f"{old['cost_usd']:>11.6f} {realised:>10.6f} {error:>+7.1%} {'yes' if inside else 'NO':>6}"
        )
        out.append({"dataset": name, "row": row["policy"], "estimate_usd": row["cost_usd"], "low_usd": row["cost_low_usd"],
                    "high_usd": row["cost_high_usd"], "max_tokens_usd": old["cost_usd"], "realised_usd": realised,
                    "error": error, "inside": inside})  # fmt: skip
    worst_err = max(abs(r["error"]) for r in out)
    print(f"  worst error {worst_err:.1%}; inside the interval {sum(r['inside'] for r in out)}/{len(out)}; "
          f"old plan (max_tokens) off by {max(r['max_tokens_usd'] / r['realised_usd'] for r in out if r['realised_usd']):.1f}x at most")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pilot", type=int, default=40)
    ap.add_argument("--n", type=int, default=1319)
    ap.add_argument("--router", default="length")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    labels = GSM8K if GSM8K.exists() else SAMPLE
    work = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    data = write_prompts(labels, work / "prompts.jsonl", args.n)
    rows = bench("sim", sim_config(), data, work, args.pilot, args.router)
    rows += bench("gsm8k-replay", replay_config(labels, work), data, work, args.pilot, args.router)
    ok = all(abs(r["error"]) <= 0.25 and r["inside"] for r in rows)
    print(f"\ntarget (every row within +-25% and inside its interval): {'met' if ok else 'NOT met'}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
