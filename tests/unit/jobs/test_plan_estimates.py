"""`plan` estimates from the ledger's answer lengths (or a pilot), with an interval, and
counts exactly the rows `submit` accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.ledger.models import Job
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run, status, submit
from jobs.pipeline.tasks import InlineQueue
from jobs.reports.planning import accepted_rows, estimate, plan_table
from tests.unit.cli.helpers import rb


def _prompts(path: Path, n: int, offset: int = 0) -> Path:
    with path.open("w") as fh:
        for i in range(offset, offset + n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} " + "detail " * (i % 30)}) + "\n")
    return path


def test_plan_counts_exactly_what_submit_accepts(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    """A repeated custom_id was counted valid by plan and rejected by submit (5,001 vs 5,000)."""
    data = tmp_path / "in.jsonl"
    lines = [{"custom_id": f"c{i}", "prompt": f"p {i}"} for i in range(20)]
    lines += [{"custom_id": "c3", "prompt": "again"}, {"prompt": "no id"}, {"prompt": "no id either"}]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{broken\n")
    rt = runtime_factory(sqlite_url)
    rows, invalid = accepted_rows(rt.config, data, "sim-strong", "sim-weak")
    st = status(rt, submit(rt, JobSpec(input_file=str(data), router="length"), InlineQueue()))
    assert (len(rows), invalid) == (st.total, st.invalid) == (22, 2)
    table = plan_table(estimate(rt.config, data, "length", "sim-strong", "sim-weak", rows=(rows, invalid)))
    assert table["items"] == 22 and table["invalid"] == 2


def test_history_estimate_matches_the_bill_within_25_percent(tmp_path: Path, runtime_factory) -> None:
    """Answers recorded by an earlier job (other prompts) price a new file: every row within
    25% of what the job really costs at that share, and inside the printed interval; the
    max_tokens worst case was several times too high."""
    history_db = f"sqlite:///{tmp_path / 'history.db'}"
    rt = runtime_factory(history_db)
    run(rt, JobSpec(input_file=str(_prompts(tmp_path / "old.jsonl", 120, offset=1000)), router="length", strong_share=0.5))
    data = _prompts(tmp_path / "new.jsonl", 150)
    inp = estimate(rt.config, data, "length", "sim-strong", "sim-weak", db_url=history_db)
    assert "ledger: 60 recent answers of sim-strong" in inp.basis["strong"]
    table = {r["policy"]: r for r in plan_table(inp)["rows"]}
    for policy, share in (("all weak", 0.0), ("routed 30%", 0.3), ("routed 70%", 0.7), ("all strong", 1.0)):
        fresh = runtime_factory(f"sqlite:///{tmp_path / f'run{share}.db'}")
        realised = run(fresh, JobSpec(input_file=str(data), router="length", strong_share=share)).cost_usd
        row = table[policy]
        assert abs(row["cost_usd"] / realised - 1) <= 0.25, (policy, row, realised)
        assert row["cost_low_usd"] <= realised <= row["cost_high_usd"], (policy, row, realised)
        assert row["worst_case_usd"] > 2.5 * realised, "max_tokens stays the (much higher) reservation bound"


def test_without_history_the_plan_says_it_priced_max_tokens(tmp_path: Path, runtime_factory) -> None:
    rt = runtime_factory(f"sqlite:///{tmp_path / 'empty.db'}")
    from jobs.ledger.migrate import upgrade

    upgrade(rt.db_url)
    inp = estimate(rt.config, _prompts(tmp_path / "in.jsonl", 10), "length", "sim-strong", "sim-weak", db_url=rt.db_url)
    assert "max_tokens (the worst case)" in inp.basis["strong"]
    assert (inp.strong_micro == inp.strong_worst_micro).all()


def test_scoring_reports_progress(tmp_path: Path, runtime_factory) -> None:
    rt = runtime_factory(f"sqlite:///{tmp_path / 'l.db'}")
    seen: list[tuple[int, int]] = []
    estimate(
        rt.config,
        _prompts(tmp_path / "in.jsonl", 600),
        "length",
        "sim-strong",
        "sim-weak",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[0] == (0, 600) and seen[-1] == (600, 600) and len(seen) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.timeout(180)
def test_pilot_is_recorded_and_becomes_the_basis(tmp_path: Path) -> None:
    data = _prompts(tmp_path / "in.jsonl", 60)
    done = rb(["plan", str(data), "--router", "length", "--pilot", "12", "--budget-usd", "0.05", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # nothing but JSON on stdout: no progress bar there
    assert result["pilot"]["items"] == 12 and len(result["pilot"]["job_ids"]) == 2 and result["pilot"]["cost_usd"] > 0
    assert "12 recent answers of sim-strong from 1 job(s), 1 of them pilot jobs" in result["basis"]["strong"]
    assert result["floor"]["covered"] is (result["floor"]["weak_worst_case_usd"] <= 0.05)
    for r in result["rows"]:
        assert r["cost_low_usd"] <= r["cost_usd"] <= r["cost_high_usd"] <= r["worst_case_usd"]
    with session_scope(f"sqlite:///{tmp_path / 'rb.db'}") as s:
        specs = s.scalars(select(Job.spec).where(Job.id.in_(result["pilot"]["job_ids"]))).all()
    assert {sp["metadata"]["routebatch"] for sp in specs} == {"pilot"}
    again = rb(["plan", str(data), "--router", "length"], tmp_path)  # the table, from the recorded pilot
    assert again.returncode == 0, again.stderr
    assert "p10-p90" in again.stdout and "pilot jobs" in again.stdout


def test_a_cap_below_the_floor_is_a_warning_in_the_plan(tmp_path: Path, runtime_factory) -> None:
    rt = runtime_factory(f"sqlite:///{tmp_path / 'l.db'}")
    inp = estimate(rt.config, _prompts(tmp_path / "in.jsonl", 50), "length", "sim-strong", "sim-weak")
    floor = float(inp.weak_worst_micro.sum()) / 1e6
    low = plan_table(inp, budget_usd=floor / 2)
    assert low["floor"]["covered"] is False and "cannot cover the weak answer" in low["warning"]
    assert plan_table(inp, budget_usd=floor * 2)["floor"]["covered"] is True
