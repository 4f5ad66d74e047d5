"""``eval`` says when the strong-weak gap is too small for APGR to mean anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from jobs.cli.app import app
from routing.evaluation import bootstrap_apgr, check_gap

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "routellm_sample"
runner = CliRunner()


def test_check_gap_warns_within_noise_and_not_on_a_clear_gap() -> None:
    rng = np.random.default_rng(0)
    weak = rng.integers(0, 2, 168).astype(float)
    noisy = check_gap(np.where(rng.random(168) < 0.05, 1.0, weak), weak)
    assert noisy.warning is not None and "within noise" in noisy.warning
    strong = np.maximum(weak, (rng.random(2000) < 0.5)[:2000][:168])
    clear = check_gap(np.concatenate([strong] * 20), np.concatenate([weak] * 20))
    assert clear.z > 2 and clear.warning is None
    assert "not better" in (check_gap(weak, weak).warning or "")


def test_check_gap_warns_on_a_wide_interval() -> None:
    rng = np.random.default_rng(1)
    strong = (rng.random(60) < 0.9).astype(float)
    weak = (rng.random(60) < 0.5).astype(float)
    spread = bootstrap_apgr(rng.random(60), strong, weak, draws=50)
    wide = check_gap(strong, weak, spread, max_width=0.01)
    assert wide.warning is not None and "interval" in wide.warning


def test_eval_on_the_fixture_warns_and_always_reports_the_interval(tmp_path: Path) -> None:
    conv = runner.invoke(app, ["convert-routellm", str(SAMPLE), "--out", str(tmp_path), "--json"])
    assert conv.exit_code == 0, conv.output
    labels = tmp_path / "mmlu_labels.jsonl"
    res = runner.invoke(app, ["eval", "--router", "length", "--labels", str(labels), "--boot", "0", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["apgr_boot"]["draws"] >= 20  # --boot 0 still gives the interval
    assert out["warnings"] and "not meaningful" in out["warnings"][0]
    assert out["gap"]["z"] < 2
    table = runner.invoke(app, ["eval", "--router", "length", "--labels", str(labels)])
    assert "warning:" in table.output and "±" in table.output
