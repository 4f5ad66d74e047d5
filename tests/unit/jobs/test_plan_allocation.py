"""`plan --budget-usd` shows the allocation `--allocate budget` makes: sized on the estimates
(the ledger's answer lengths), not on worst cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import select

from jobs.ledger.models import Job
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run
from jobs.reports.planning import estimate, plan_table
from routing.allocation import allocate_budget


def _prompts(path: Path, n: int, offset: int = 0) -> Path:
    with path.open("w") as fh:
        for i in range(offset, offset + n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} " + "detail " * (i % 30)}) + "\n")
    return path


def test_plan_budget_optimum_is_the_jobs_allocation(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    run(rt, JobSpec(input_file=str(_prompts(tmp_path / "old.jsonl", 120, offset=1000)), router="length", strong_share=0.5))
    data = _prompts(tmp_path / "new.jsonl", 150)
    inp = estimate(rt.config, data, "length", "sim-strong", "sim-weak", db_url=sqlite_url)
    cap_usd = 0.3 * float(inp.strong_micro.sum()) / 1e6
    optimum = {r["policy"]: r for r in plan_table(inp, budget_usd=cap_usd)["rows"]}["budget optimum"]
    # on estimates it plans to spend the cap; sized on worst cases it would buy a few upgrades
    assert 0.95 * cap_usd <= optimum["cost_usd"] <= cap_usd
    on_worst = allocate_budget(inp.scores, inp.strong_worst_micro, inp.weak_worst_micro, cap_usd * 1e6)
    assert optimum["strong_items"] > 3 * int(on_worst.strong.sum())
    # the job on the same ledger (history of both models: no pilot) makes the same choice
    st = run(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=round(cap_usd, 6)))
    with session_scope(sqlite_url) as s:
        alloc = s.scalars(select(Job.spec).where(Job.id == st.job_id)).one()["allocation"]
    assert alloc["basis"] == "history"
    assert abs(alloc["strong"] - optimum["strong_items"]) <= 1
    assert np.isclose(alloc["planned_micro_usd"], optimum["cost_micro_usd"], rtol=0.02)
    assert st.succeeded == 150 and st.cost_usd <= round(cap_usd, 6)


def test_plan_without_history_allocates_on_worst_cases(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    """No answers in the ledger: the estimates are the worst cases, and so is the optimum
    (the job itself would answer a pilot first)."""
    from jobs.ledger.migrate import upgrade

    upgrade(sqlite_url)
    rt = runtime_factory(sqlite_url)
    data = _prompts(tmp_path / "new.jsonl", 60)
    inp = estimate(rt.config, data, "length", "sim-strong", "sim-weak", db_url=sqlite_url)
    cap_usd = 0.3 * float(inp.strong_worst_micro.sum()) / 1e6
    optimum = {r["policy"]: r for r in plan_table(inp, budget_usd=cap_usd)["rows"]}["budget optimum"]
    on_worst = allocate_budget(inp.scores, inp.strong_worst_micro, inp.weak_worst_micro, cap_usd * 1e6)
    assert optimum["strong_items"] == int(on_worst.strong.sum())
    assert optimum["worst_case_micro_usd"] <= cap_usd * 1e6
