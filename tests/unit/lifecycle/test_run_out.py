"""``run --out``: the results file is written when the job ends, also after a kill and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion
from sqlalchemy import create_engine, text

from jobs.errors import ExportRefused
from jobs.lifecycle.service import JobSpec, run

CONFIG = """
[providers.sim]
concurrency = 4
[providers.sim.simulated]
latency_ms = 40
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
router = "length"
chunk_size = 50
"""


def _data(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"custom_id": f"k{i}", "prompt": f"question {i}"}) + "\n" for i in range(n)))
    return path


def test_run_writes_the_outputs_when_the_job_ends(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    out, errs = tmp_path / "r.jsonl", tmp_path / "e.jsonl"
    st = run(rt, JobSpec(input_file=str(_data(tmp_path / "in.jsonl", 40)), router="length", out=str(out), errors_out=str(errs)))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == st.succeeded == 40 and errs.read_text() == ""
    for line in lines:
        ChatCompletion.model_validate(line["response"]["body"])
    parquet = tmp_path / "r.parquet"
    run(rt, JobSpec(input_file=str(tmp_path / "in.jsonl"), router="length", out=str(parquet)))
    import pyarrow.parquet as pq

    assert pq.read_table(parquet).num_rows == 40


def test_an_existing_output_or_the_input_is_refused_before_any_work(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    data = _data(tmp_path / "in.jsonl", 5)
    (tmp_path / "r.jsonl").write_text("keep me\n")
    with pytest.raises(ExportRefused, match="already exists"):
        run(rt, JobSpec(input_file=str(data), router="length", out=str(tmp_path / "r.jsonl")))
    with pytest.raises(ExportRefused, match="input"):
        run(rt, JobSpec(input_file=str(data), router="length", out=str(data), force=True))
    assert (tmp_path / "r.jsonl").read_text() == "keep me\n"
    st = run(rt, JobSpec(input_file=str(data), router="length", out=str(tmp_path / "r.jsonl"), force=True))
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == st.succeeded == 5


def test_killed_then_resumed_run_leaves_a_complete_results_file(tmp_path: Path) -> None:
    n = 200
    (tmp_path / "rb.toml").write_text(CONFIG)
    db = tmp_path / "rb.db"
    env = {**os.environ, "ROUTEBATCH_DATABASE_URL": f"sqlite:///{db}", "ROUTEBATCH_CONFIG": str(tmp_path / "rb.toml")}
    env.pop("ROUTEBATCH_BROKER_URL", None)
    cmd = [sys.executable, "-m", "jobs.cli"]
    data = _data(tmp_path / "in.jsonl", n)
    proc = subprocess.Popen([*cmd, "run", str(data), "--out", "r.jsonl", "--json"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    engine = create_engine(f"sqlite:///{db}")
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 20:
        time.sleep(0.1)
        try:
            with engine.connect() as conn:
                done = conn.execute(text("SELECT count(*) FROM items WHERE state = 'succeeded'")).scalar() or 0
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            done = 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    engine.dispose()
    assert 20 <= done < n, "the kill should land mid-generation"
    assert not (tmp_path / "r.jsonl").exists()
    with create_engine(f"sqlite:///{db}").connect() as conn:
        job_id = conn.execute(text("SELECT id FROM jobs")).scalar()
    resumed = subprocess.run([*cmd, "resume", job_id, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"k{i}" for i in range(n))
    for line in lines:
        ChatCompletion.model_validate(line["response"]["body"])


def test_status_has_openai_request_counts_and_timestamps(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url, {"providers.sim.simulated.faults": {"500": 0.3}, "providers.sim.retry.max_attempts": 1})
    st = run(rt, JobSpec(input_file=str(_data(tmp_path / "in.jsonl", 60)), router="length"))
    counts = st.to_json()["request_counts"]
    assert counts == {"total": 60, "completed": st.succeeded, "failed": st.failed} and 0 < st.failed < 60
    ts = st.to_json()["openai_timestamps"]
    assert ts["created_at"] <= ts["in_progress_at"] <= ts["completed_at"] and ts["cancelled_at"] is None
    assert st.to_json()["object"] == "batch"
