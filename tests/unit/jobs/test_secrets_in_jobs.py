"""A planted API key never reaches the ledger, the logs, the CLI output or the exports;
a provider that answers 401 fails its items at once and the job still ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

KEY = "sk-planted-5e1d9b7c3a2f4e6d8b0a"


def _config(path: Path, sim_key: str) -> Path:
    path.write_text(
        f"""
[providers.sim]
api_key_env = "RB_TEST_PLANTED_KEY"
concurrency = 8
timeout_s = 60
[providers.sim.simulated]
latency_ms = 1
api_key = "{sim_key}"
[providers.sim.retry]
backoff_base_s = 0.01
backoff_cap_s = 0.02

[models.sim-strong]
provider = "sim"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0

[models.sim-weak]
provider = "sim"
input_usd_per_mtok = 0.6
output_usd_per_mtok = 0.6

[defaults]
strong = "sim-strong"
weak = "sim-weak"
"""
    )
    return path


def _rb(args: list[str], cwd: Path, config: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {
        **extra_env,
        **os.environ,
        "ROUTEBATCH_DATABASE_URL": f"sqlite:///{cwd / 'rb.db'}",
        "ROUTEBATCH_CONFIG": str(config),
        "RB_TEST_PLANTED_KEY": KEY,
        "ROUTEBATCH_LOG_LEVEL": "DEBUG",
    }
    env.pop("ROUTEBATCH_BROKER_URL", None)
    return subprocess.run([sys.executable, "-m", "jobs.cli.__main__", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _dataset(tmp_path: Path) -> Path:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"question {i}"}) + "\n" for i in range(20)))
    return data


def test_planted_key_is_nowhere(tmp_path: Path) -> None:
    config = _config(tmp_path / "rb.toml", sim_key=KEY)
    done = _rb(["run", str(_dataset(tmp_path)), "--json"], tmp_path, config)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["succeeded"] == 20, "the key was sent and accepted"
    out, errs = tmp_path / "r.jsonl", tmp_path / "e.jsonl"
    _rb(["export", st["job_id"], "--out", str(out), "--errors", str(errs)], tmp_path, config)
    pq = _rb(["export", st["job_id"], "--out", str(tmp_path / "r.parquet"), "--format", "parquet"], tmp_path, config)
    ledger = _rb(["ledger", "--json"], tmp_path, config)
    status = _rb(["status", st["job_id"], "--json"], tmp_path, config)
    haystacks = {
        "run output": done.stdout + done.stderr,
        "export": out.read_text() + errs.read_text() + pq.stdout + pq.stderr,
        "parquet": (tmp_path / "r.parquet").read_bytes().decode("latin-1"),
        "ledger/status": ledger.stdout + status.stdout,
    }
    for f in tmp_path.glob("rb.db*"):
        haystacks[f.name] = f.read_bytes().decode("latin-1")
    leaks = [name for name, text in haystacks.items() if KEY in text or KEY[3:] in text]
    assert leaks == []


def test_a_401_fails_items_at_once_and_the_job_ends(tmp_path: Path) -> None:
    config = _config(tmp_path / "rb.toml", sim_key="sk-the-right-key-is-another-one")
    stopped = _rb(["run", str(_dataset(tmp_path)), "--json"], tmp_path, config)
    assert stopped.returncode == 1 and "401" in json.loads(stopped.stdout)["error"]  # the pre-flight, before any ingest
    assert KEY not in stopped.stdout + stopped.stderr
    # Without the pre-flight (a key revoked mid-job), a 401 fails each item at once.
    done = _rb(["run", str(_dataset(tmp_path)), "--json"], tmp_path, config, ROUTEBATCH_PREFLIGHT="0")
    st = json.loads(done.stdout)
    assert st["status"] == "completed"
    assert st["failed"] == 20 and st["succeeded"] == 0
    assert st["attempts"] == 20, "401 is not retried"
    assert KEY not in done.stdout + done.stderr
    errs = tmp_path / "e.jsonl"
    _rb(["export", st["job_id"], "--out", str(tmp_path / "r.jsonl"), "--errors", str(errs)], tmp_path, config)
    lines = [json.loads(x) for x in errs.read_text().splitlines()]
    assert len(lines) == 20
    assert all(x["response"]["status_code"] == 401 for x in lines)
    assert all(x["error"]["message"] for x in lines)
    assert not any(KEY in json.dumps(x) for x in lines)
