"""``--allocate budget`` spends the cap it is given (issue 13): sized on estimated costs,
not on worst cases. Public API only, so that it runs (and fails) on the old code too: sized
on worst cases, the 200-prompt case below answered every item with about 18% of the cap."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from jobs.ledger.models import Item, Job
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} " + "detail " * (i % 30)}) + "\n")
    return path


def _cap(tmp_path: Path, runtime_factory, data: Path, share: float = 0.3) -> float:
    rt = runtime_factory(f"sqlite:///{tmp_path / 'all_strong.db'}")
    return round(share * run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0)).cost_usd, 6)


def _reasons(url: str, job_id: str) -> dict[str, int]:
    with session_scope(url) as s:
        return dict(
            s.execute(select(Item.route_reason, func.count()).where(Item.job_id == job_id).group_by(Item.route_reason)).all()
        )


def test_allocation_on_estimates_uses_the_cap(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    """The issue's done-when at 200 prompts: every item answered, spend <= cap, >= 85% of it
    used. On the old code (sized on worst cases) the spend was about 18% of the cap."""
    data = write_prompts(tmp_path / "in.jsonl", 200)
    cap = _cap(tmp_path, runtime_factory, data)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", allocate="budget", budget_usd=cap))
    assert st.status == "completed"
    assert st.succeeded == 200 and st.skipped_budget == 0
    assert st.cost_usd <= cap
    assert st.cost_usd >= 0.85 * cap, f"spent {st.cost_usd / cap:.1%} of the cap"
    assert st.budgets["job"]["reserved_usd"] == 0
    with session_scope(sqlite_url) as s:
        job = s.get_one(Job, st.job_id)
        alloc = job.spec["allocation"]
        strong_scores = s.scalars(
            select(Item.score).where(Item.route_reason == "budget_allocation", Item.route == "strong")
        ).all()
        weak_scores = s.scalars(select(Item.score).where(Item.route_reason == "budget_allocation", Item.route == "weak")).all()
    # on an empty ledger: a pilot, then the rest allocated on the pilot's answers
    assert alloc["stage"] == "allocated" and alloc["basis"] == "pilot"
    assert alloc["pilot"] == {"sim-strong": 10, "sim-weak": 10}
    assert {m["basis"] for m in alloc["models"].values()} == {"pilot"}
    # the plan on estimates is far below its worst case, and within the room it was given
    assert alloc["planned_micro_usd"] <= alloc["cap_micro_usd"]
    assert alloc["planned_worst_case_micro_usd"] > 2 * alloc["planned_micro_usd"]
    assert sum(strong_scores) / len(strong_scores) > sum(weak_scores) / len(weak_scores)
    reasons = _reasons(sqlite_url, st.job_id)
    assert reasons["budget_pilot"] == 20
    assert reasons["budget_allocation"] + reasons.get("budget_downgrade", 0) == 180
