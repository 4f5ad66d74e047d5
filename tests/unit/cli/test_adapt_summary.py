"""Issue 11's last line: ``routebatch run examples/prompts.jsonl --adapt 0.1`` in embedded mode,
with the simulated providers judging, ends with the quality estimate in its summary."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.cli.helpers import rb

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "prompts.jsonl"


def test_the_readme_adapt_command_shows_the_estimate_next_to_the_cost(tmp_path: Path) -> None:
    done = rb(["run", str(EXAMPLE), "--adapt", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for row in ("adapted scorer", "quality vs strong", "90% interval", "adapting cost", "savings"):
        assert row in out, out
    st = json.loads(rb(["list", "--json"], tmp_path).stdout)[0]
    full = json.loads(rb(["status", st["job_id"], "--json"], tmp_path).stdout)
    q = full["quality_vs_strong"]
    assert 0.0 <= q["low"] <= q["estimate"] <= q["high"]
    assert f"{q['estimate']:.3f}" in out and full["adaptation"]["judged"] == 25


def test_a_job_too_small_to_adapt_says_so_in_its_summary(tmp_path: Path) -> None:
    data = tmp_path / "few.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(8)))
    done = rb(["run", str(data), "--adapt", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "not adapted: 8 items: too few to adapt; routed as usual" in " ".join(done.stdout.split()), done.stdout
    assert "quality vs strong" not in done.stdout
