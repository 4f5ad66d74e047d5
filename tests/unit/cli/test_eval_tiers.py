"""``routebatch eval-tiers``: the N-model cost-quality curve, its PNG, and clear errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.unit.cli.helpers import one_line_error, rb, write_jsonl

CONFIG = """
[providers.sim]
simulated = {latency_ms = 1}
[models.big]
provider = "sim"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0
[models.mid]
provider = "sim"
input_usd_per_mtok = 2.0
output_usd_per_mtok = 6.0
[models.small]
provider = "sim"
input_usd_per_mtok = 0.2
output_usd_per_mtok = 0.6
[defaults]
strong = "big"
weak = "small"
"""


def _labels(tmp_path: Path) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(80):
        hard = i % 2 == 0  # hard prompts: only the big model answers them
        prompt = ("Prove the following theorem about primes " if hard else "What colour is the sky ") + str(i)
        rows.append(
            {"prompt": prompt, "scores": {"big": 1.0, "mid": float(not hard or rng.random() < 0.3), "small": float(not hard)}}
        )
    return write_jsonl(tmp_path / "labels.jsonl", rows)


def test_the_curve_rises_with_spend_and_the_plot_is_a_png(tmp_path: Path) -> None:
    (tmp_path / "routebatch.toml").write_text(CONFIG)
    labels = _labels(tmp_path)
    png = tmp_path / "curve.png"
    done = rb(
        ["eval-tiers", "--labels", str(labels), "--tiers", "big,mid,small", "--points", "6", "--plot", str(png), "--json"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = report["curve"]
    assert len(curve) == 6 and report["n"] == 80
    assert all(p["spend_share"] <= p["cap_share"] + 1e-9 for p in curve)
    assert curve[0]["quality"] == 0.5 and curve[-1]["quality"] == 1.0  # all-small, then all-big
    # with spend half-way, hard prompts go up a tier: better than the all-small answer
    assert max(p["quality"] for p in curve[1:-1]) > 0.5
    assert [s["model"] for s in report["single"]] == ["big", "mid", "small"]


def test_a_missing_score_names_the_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "routebatch.toml").write_text(CONFIG)
    labels = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "scores": {"big": 1, "mid": 0}}] * 12)
    line = one_line_error(rb(["eval-tiers", "--labels", str(labels), "--tiers", "big,mid,small"], tmp_path))
    assert "bad.jsonl:1" in line and "scores.small" in line


def test_labels_with_a_task_use_the_task_aware_heads(tmp_path: Path) -> None:
    (tmp_path / "routebatch.toml").write_text(CONFIG)
    rows = [json.loads(x) for x in _labels(tmp_path).read_text().splitlines()]
    for r in rows:
        r["task"] = "proof" if r["prompt"].startswith("Prove") else "trivia"
    labels = write_jsonl(tmp_path / "tasks.jsonl", rows)
    done = rb(["eval-tiers", "--labels", str(labels), "--tiers", "big,mid,small", "--points", "6", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["heads"] == "task" and max(p["quality"] for p in report["curve"][1:-1]) > 0.5
    plain = json.loads(
        rb(["eval-tiers", "--labels", str(_labels(tmp_path)), "--tiers", "big,mid,small", "--json"], tmp_path).stdout
    )
    assert plain["heads"] == "ridge"
