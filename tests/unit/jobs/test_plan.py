"""`plan` prices a dataset without calling any provider."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.config import load_config
from jobs.reports.planning import estimate, plan_table


def test_plan_is_monotone_and_the_budget_optimum_fits(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    with data.open("w") as fh:
        for i in range(80):
            fh.write(json.dumps({"prompt": f"q{i} " + "word " * (i % 13)}) + "\n")
        fh.write("{bad\n")
    cfg = load_config(None)
    inp = estimate(cfg, data, "length", "sim-strong", "sim-weak", output_tokens=50)
    assert inp.scores.size == 80 and inp.invalid == 1
    assert (inp.strong_micro > inp.weak_micro).all()
    cap_usd = float(inp.weak_micro.sum() + 0.25 * (inp.strong_micro - inp.weak_micro).sum()) / 1e6
    table = plan_table(inp, budget_usd=cap_usd)
    rows = {r["policy"]: r for r in table["rows"]}
    costs = [rows["all weak"]["cost_micro_usd"]] + [rows[f"routed {p}%"]["cost_micro_usd"] for p in range(10, 100, 10)] + [rows["all strong"]["cost_micro_usd"]]
    assert costs == sorted(costs)
    assert rows["all strong"]["savings_pct"] == 0.0 and rows["all weak"]["savings_pct"] > 90
    optimum = rows["budget optimum"]
    assert optimum["cost_micro_usd"] <= cap_usd * 1e6
    assert 0 < optimum["strong_items"] < 80


def test_eval_compares_allocation_with_threshold_at_the_same_spend(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    sample = root / "tests" / "fixtures" / "routellm_sample"
    env_cmd = [sys.executable, "-m", "jobs.cli.__main__"]
    subprocess.run([*env_cmd, "convert-routellm", str(sample), "--out", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    done = subprocess.run(
        [*env_cmd, "eval", "--router", "length", "--labels", str(tmp_path / "mmlu_labels.jsonl"), "--boot", "0",
         "--budget-share", "0.2,0.5", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["budget_comparison"]
    assert [r["budget_share"] for r in rows] == [0.2, 0.5]
    for r in rows:
        assert r["threshold_spend_share"] <= r["budget_share"] + 1e-9
        assert r["allocation_spend_share"] <= r["budget_share"] + 1e-9
        assert r["difference"] == r["allocation_quality"] - r["threshold_quality"]
    assert rows[1]["threshold_quality"] >= rows[0]["threshold_quality"]


def test_plan_prices_each_prompt_exactly_as_the_budget_holds_it(tmp_path: Path, runtime_factory) -> None:
    """One request shape and one token bound: plan's all-strong worst case is the sum of the
    holds an all-strong run takes (it used a tokenizer count before and disagreed)."""
    from sqlalchemy import func, select

    from jobs.ledger.models import Reservation
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.service import JobSpec, run

    data = tmp_path / "in.jsonl"
    with data.open("w") as fh:
        for i in range(40):
            row = {"prompt": f"question {i}: " + "déjà vu " * (i % 9)}
            if i % 5 == 0:
                row["max_tokens"] = 17 + i
            fh.write(json.dumps(row) + "\n")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    rt = runtime_factory(db)
    inp = estimate(rt.config, data, "length", "sim-strong", "sim-weak", max_tokens=64)
    st = run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0, budget_usd=1000.0, max_tokens=64))
    assert st.succeeded == 40
    with session_scope(db) as s:
        held = s.scalar(select(func.sum(Reservation.amount_micro_usd)).where(Reservation.job_id == st.job_id))
    assert held == int(inp.strong_micro.sum())
