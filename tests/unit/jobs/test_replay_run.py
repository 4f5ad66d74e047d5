"""A whole job over recorded GSM8K answers: realised accuracy next to cost (`run --grade`)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from jobs.config import load_config
from jobs.reports.job_grading import grade_job
from jobs.runtime import Runtime
from jobs.lifecycle.service import JobSpec, run
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "tests" / "fixtures" / "routellm_sample" / "gsm8k" / "gsm8k_responses.csv"
FULL = Path(os.environ.get("ROUTEBATCH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "routellm" / "gsm8k" / "gsm8k_responses.csv"


def _job(tmp_path: Path, labels: Path, share: float) -> dict:
    rows = list(csv.DictReader(labels.open(newline="", encoding="utf-8")))
    data = tmp_path / "prompts.jsonl"
    with data.open("w") as fh:
        for i, r in enumerate(rows):
            fh.write(json.dumps({"custom_id": f"g{i}", "prompt": r["prompt"]}) + "\n")
    cfg_text = (ROOT / "examples" / "replay-gsm8k.toml").read_text().replace(
        'replay_file = "tests/fixtures/routellm_sample/gsm8k/gsm8k_responses.csv"', f'replay_file = "{labels}"'
    )
    cfg_path = tmp_path / "replay.toml"
    cfg_path.write_text(cfg_text)
    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'l.db'}", broker_url=None), load_config(cfg_path))
    try:
        st = run(rt, JobSpec(input_file=str(data), router="random:seed=0", strong_share=share))
        st.grade = grade_job(rt, st.job_id, labels)
    finally:
        rt.close()
    return st


def _check(st: dict, n: int) -> None:
    g = st.grade
    assert st.status == "completed" and st.succeeded == n
    assert g["graded"] == n and g["all_exact"], "every answer is exactly the recorded one"
    strong, weak = g["reference"]["gpt-4"], g["reference"]["mixtral"]
    assert weak < g["accuracy"] < strong


def test_replayed_sample_job_is_graded(tmp_path: Path) -> None:
    st = _job(tmp_path, SAMPLE, 0.5)
    _check(st, 60)
    assert st.strong_calls == 30


@pytest.mark.skipif(not FULL.exists(), reason="full GSM8K labels (../shared) not present")
def test_replayed_full_gsm8k_random_half(tmp_path: Path) -> None:
    st = _job(tmp_path, FULL, 0.5)
    _check(st, 1319)
    g = st.grade
    assert abs(g["reference"]["gpt-4"] - 0.857) < 0.01 and abs(g["reference"]["mixtral"] - 0.638) < 0.01
