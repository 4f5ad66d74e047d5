"""The console script as a user runs it: JSON output, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUMMARY_KEYS = {
    "job_id", "status", "total", "succeeded", "failed", "invalid", "strong_calls", "weak_calls",
    "cost_usd", "all_strong_cost_usd", "savings_pct",
}


def rb(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "ROUTEBATCH_DATABASE_URL": f"sqlite:///{cwd / 'rb.db'}", **env}
    full_env.pop("ROUTEBATCH_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli.__main__", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"custom_id": f"p{i}", "prompt": f"prompt number {i} " + "x " * i}) for i in range(30)]
    path.write_text("\n".join(lines[:15] + ["{bad"] + lines[15:]) + "\n")
    return path


def test_run_status_list_export_json(tmp_path: Path, dataset: Path) -> None:
    done = rb(["run", str(dataset), "--router", "length", "--strong-share", "0.2", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["status"] == "completed" and summary["succeeded"] == 30 and summary["invalid"] == 1
    assert summary["invalid_rows"][0]["line"] == 16

    st = json.loads(rb(["status", summary["job_id"], "--json"], tmp_path).stdout)
    assert st["job_id"] == summary["job_id"] and st["cost_usd"] == summary["cost_usd"]
    listed = json.loads(rb(["list", "--json"], tmp_path).stdout)
    assert [j["job_id"] for j in listed] == [summary["job_id"]]
    out = tmp_path / "results.jsonl"
    exported = json.loads(rb(["export", summary["job_id"], "--out", str(out), "--errors", str(tmp_path / "e.jsonl"), "--json"], tmp_path).stdout)
    assert exported["results"] == 30 and exported["errors"] == 1
    human = rb(["status", summary["job_id"]], tmp_path)
    assert "completed" in human.stdout and "savings" in human.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "does-not-exist.jsonl"], "does-not-exist.jsonl: no such file"),
        (["status", "batch_nope"], "no job 'batch_nope'"),
        (["run", "x.jsonl", "--threshold", "0.5", "--strong-share", "0.5"], "either threshold or strong_share"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    done = rb(args, tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_bad_config_file_is_named(tmp_path: Path, dataset: Path) -> None:
    cfg = tmp_path / "routebatch.toml"
    cfg.write_text("[defaults]\nstrong = 'a'\n")
    done = rb(["run", str(dataset)], tmp_path, ROUTEBATCH_CONFIG=str(cfg))
    assert done.returncode != 0
    assert f"{cfg}: providers: Field required" in done.stderr
    assert "Traceback" not in done.stderr


def test_json_error_output(tmp_path: Path) -> None:
    done = rb(["run", "missing.csv", "--json"], tmp_path)
    assert done.returncode != 0
    assert "no such file" in json.loads(done.stdout)["error"]


def test_router_problems_are_one_line_errors(tmp_path: Path, dataset: Path) -> None:
    unknown = rb(["run", str(dataset), "--router", "nope"], tmp_path)
    assert unknown.returncode != 0 and "unknown router 'nope'" in unknown.stderr
    missing = rb(["run", str(dataset), "--router", "mf:/no/such/dir"], tmp_path)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    broken = rb(["run", str(dataset), "--router", "length:scale=abc", "--json"], tmp_path)
    assert broken.returncode != 0
    message = json.loads(broken.stdout)["error"]
    assert "failed" in message and "resume" in message
    job_id = message.split()[1]
    st = json.loads(rb(["status", job_id, "--json"], tmp_path).stdout)
    assert st["status"] == "failed" and "could not convert" in st["error"]
    for done in (unknown, missing, broken):
        assert "Traceback" not in done.stderr + done.stdout


def test_submit_without_a_broker_then_resume_runs_it_here(tmp_path: Path, dataset: Path) -> None:
    submitted = json.loads(rb(["submit", str(dataset), "--router", "length", "--json"], tmp_path).stdout)
    assert submitted["status"] == "in_progress" and submitted["counts"]["pending"] == 30
    resumed = json.loads(rb(["resume", submitted["job_id"], "--json"], tmp_path).stdout)
    assert resumed["status"] == "completed" and resumed["succeeded"] == 30
