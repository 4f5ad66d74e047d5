"""``plan --dispatch batch`` prices calls at the batch-API rates a batch job is charged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app


@pytest.fixture(autouse=True)
def _fresh_settings():
    """The CLI reads settings once per process (lru_cache): each test's environment is its own."""
    from jobs.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _plan(tmp_path: Path, monkeypatch, *extra: str) -> dict:
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(json.dumps({"custom_id": f"c{i}", "prompt": f"question {i} " * (1 + i % 5)}) + "\n" for i in range(40))
    )
    monkeypatch.setenv("ROUTEBATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    got = CliRunner().invoke(app, ["plan", str(data), "--router", "length", "--json", *extra])
    assert got.exit_code == 0, got.output
    return json.loads(got.stdout)


def test_batch_dispatch_halves_every_planned_cost(tmp_path: Path, monkeypatch) -> None:
    sync = _plan(tmp_path, monkeypatch)
    batch = _plan(tmp_path, monkeypatch, "--dispatch", "batch")
    assert sync["prices"] == {"sim-strong": "sync", "sim-weak": "sync"}
    assert batch["prices"] == {"sim-strong": "batch", "sim-weak": "batch"}
    for s_row, b_row in zip(sync["rows"], batch["rows"], strict=True):
        assert s_row["policy"] == b_row["policy"] and s_row["worst_case_usd"] > 0
        assert abs(b_row["worst_case_usd"] - s_row["worst_case_usd"] / 2) <= 1e-6 * 40


def test_an_unknown_dispatch_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "hi"}) + "\n")
    got = CliRunner().invoke(app, ["plan", str(data), "--dispatch", "cheap", "--json"])
    assert got.exit_code != 0 and "--dispatch must be sync, batch or auto" in got.output


def test_plan_prices_the_adapt_sample(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "big.jsonl"
    data.write_text(
        "".join(json.dumps({"custom_id": f"c{i}", "prompt": f"question {i} " * (1 + i % 5)}) + "\n" for i in range(400))
    )
    monkeypatch.setenv("ROUTEBATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    runner = CliRunner()
    llm = json.loads(runner.invoke(app, ["plan", str(data), "--router", "length", "--adapt", "0.1", "--json"]).stdout)["adapt"]
    sim = json.loads(
        runner.invoke(app, ["plan", str(data), "--router", "length", "--adapt", "0.1", "--judge", "sim", "--json"]).stdout
    )["adapt"]
    assert llm["sample"] == sim["sample"] == 100  # max(--adapt-min 100, 10% of 400)
    assert llm["twin_micro_usd"] == sim["twin_micro_usd"] > 0
    assert llm["judge_micro_usd"] > 0 == sim["judge_micro_usd"]
    assert llm["extra_micro_usd"] == llm["twin_micro_usd"] + llm["judge_micro_usd"]
    small = json.loads(
        runner.invoke(app, ["plan", str(data), "--router", "length", "--adapt", "0.1", "--adapt-min", "300", "--json"]).stdout
    )
    assert small["adapt"]["sample"] == 200 and "the sample is half the job" in small["adapt"]["note"]
    assert small["adapt"]["twin_micro_usd"] > llm["twin_micro_usd"]  # twice the sample, twice the twins
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text("".join(data.read_text().splitlines(keepends=True)[:19]))
    none = json.loads(runner.invoke(app, ["plan", str(tiny), "--router", "length", "--adapt", "0.1", "--json"]).stdout)
    assert none["adapt"]["sample"] == 0 and "too few to adapt (at least 20)" in none["adapt"]["note"]


def test_plan_prices_each_tier_and_the_allocation_across_them(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "tiers.toml"
    cfg.write_text(
        """
[providers.sim]
simulated = { latency_ms = 0 }

[models.sim-strong]
provider = "sim"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0

[models.sim-mid]
provider = "sim"
input_usd_per_mtok = 2.0
output_usd_per_mtok = 6.0

[models.sim-weak]
provider = "sim"
input_usd_per_mtok = 0.6
output_usd_per_mtok = 0.6

[defaults]
strong = "sim-strong"
weak = "sim-weak"
"""
    )
    monkeypatch.setenv("ROUTEBATCH_CONFIG", str(cfg))
    plain = _plan(tmp_path, monkeypatch, "--models", "sim-strong,sim-mid,sim-weak")
    costs = {r["policy"]: r["cost_micro_usd"] for r in plain["tiers"]["rows"]}
    assert costs["all sim-strong"] > costs["all sim-mid"] > costs["all sim-weak"] > 0
    assert "allocation" not in plain["tiers"]
    cap = (costs["all sim-mid"] + costs["all sim-weak"]) / 2 / 1e6
    planned = _plan(tmp_path, monkeypatch, "--models", "sim-strong,sim-mid,sim-weak", "--budget-usd", f"{cap:.6f}")
    alloc = planned["tiers"]["allocation"]
    assert sum(alloc["by_model"].values()) == 40 and alloc["cost_usd"] <= cap + 1e-9 and alloc["affordable"]
    assert alloc["expected_quality"] <= alloc["lp_bound"] + 1e-9


def test_the_adapt_steps_estimate_prices_a_subset_of_a_long_rest_and_scales_it() -> None:
    """``sample_extra_cost`` (what ``--adapt-max-cost`` compares): the sample priced item by item,
    the rest from a uniform subset; the judge priced only when it is a model."""
    import numpy as np

    from jobs.config import BUILTIN_CONFIG, parse_config
    from jobs.datasets import PromptRow
    from jobs.reports.planning import sample_extra_cost

    cfg = parse_config(BUILTIN_CONFIG)
    rows = [PromptRow(i + 1, f"c{i}", f"question {i} " * (1 + i % 9)) for i in range(3000)]
    sample = np.arange(0, 3000, 30)
    full = sample_extra_cost(cfg, rows, "sim-strong", "sim-weak", sample, rest_limit=10_000)
    part = sample_extra_cost(cfg, rows, "sim-strong", "sim-weak", sample, rest_limit=300)
    free = sample_extra_cost(cfg, rows, "sim-strong", "sim-weak", sample, judge="labels:x", rest_limit=300)
    assert full["twin_micro_usd"] == part["twin_micro_usd"] > 0 and full["judge_micro_usd"] == part["judge_micro_usd"] > 0
    assert abs(part["job_micro_usd"] - full["job_micro_usd"]) <= 0.05 * full["job_micro_usd"]
    assert free["judge_micro_usd"] == 0 and free["extra_micro_usd"] == free["twin_micro_usd"]
    assert 0 < free["share"] < part["share"] < 1 and not full["from_history"]
