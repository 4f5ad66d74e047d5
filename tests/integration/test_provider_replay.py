"""A replayed GSM8K job on Postgres: recorded answers served, realised accuracy graded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.providers.sim.replay import load_replay_table
from jobs.reports.job_grading import grade_job
from jobs.lifecycle.service import JobSpec, run

pytestmark = pytest.mark.integration

GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "routellm" / "gsm8k" / "gsm8k_responses.csv"
if not GSM8K.exists():
    GSM8K = Path("/work/shared/data/routellm/gsm8k/gsm8k_responses.csv")


@pytest.mark.skipif(not GSM8K.exists(), reason="shared GSM8K labels not present")
def test_replayed_gsm8k_random_half_strong(tmp_path: Path, pg_url: str, runtime_factory) -> None:
    table = load_replay_table(str(GSM8K))
    data = tmp_path / "gsm8k.jsonl"
    with data.open("w") as fh:
        for i, prompt in enumerate(table.rows):
            fh.write(json.dumps({"custom_id": f"g{i}", "prompt": prompt}) + "\n")
    rt = runtime_factory(pg_url, {
        "providers.sim.simulated": {
            "latency_ms": 1,
            "replay_file": str(GSM8K),
            "replay_models": {"sim-strong": "gpt-4-1106-preview", "sim-weak": "mistralai/Mixtral-8x7B-Instruct-v0.1"},
        },
        "providers.sim.concurrency": 64,
    })
    st = run(rt, JobSpec(input_file=str(data), router="random", strong_share=0.5, max_tokens=1024, chunk_size=500))
    assert st.status == "completed" and st.succeeded == len(table.rows) == 1319
    g = grade_job(rt, st.job_id, GSM8K)
    assert g["graded"] == 1319 and g["all_exact"], g["mismatched_examples"]
    weak, strong = g["reference"]["sim-weak"], g["reference"]["sim-strong"]
    assert weak == pytest.approx(0.638, abs=0.002) and strong == pytest.approx(0.857, abs=0.002)
    assert weak < g["accuracy"] < strong
    assert 0.4 < st.strong_calls / 1319 < 0.6
