"""``status --watch`` / ``run`` progress: the phase header follows the counts, rates and ETAs
come from a sliding window, validating shows bytes read of the input's size."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from jobs.cli.watch import JobView, RateMeter, eta_seconds, fmt_eta, headline, phase_progress, state_rate_text
from tests.unit.cli.helpers import rb, write_jsonl

ZERO = {"pending": 0, "scored": 0, "routed": 0, "reserved": 0, "sent": 0, "succeeded": 0, "failed": 0}


def _st(status: str = "in_progress", phase: str = "scoring", total: int = 5000, **counts: int) -> dict:
    return {
        "job_id": "batch_x",
        "status": status,
        "phase": phase,
        "total": total,
        "counts": {**ZERO, **counts},
        "cost_usd": 0.0,
        "budgets": {},
        "error": None,
    }


def _text(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=160, markup=False, color_system=None).print(renderable)
    return out.getvalue()


def test_the_phase_follows_the_counts_not_only_the_stored_phase() -> None:
    # jobs.phase stays "scoring" until the route step; the header must still move (issue 15 item 7).
    p = phase_progress(_st(pending=3000, scored=2000))
    assert (p.phase, p.done, p.total, p.unit) == ("scoring", 2000, 5000, "scored")
    p = phase_progress(_st(scored=5000))
    assert (p.phase, p.done, p.unit) == ("routing", 0, "routed")
    p = phase_progress(_st(phase="generating", routed=1000, sent=200, succeeded=3700, failed=100))
    assert (p.phase, p.done, p.unit) == ("generating", 3800, "finished")
    p = phase_progress(_st(status="cancelling", phase="generating", sent=5, cancelled=4995))
    assert p.phase == "cancelling"
    p = phase_progress(_st(status="completed", phase="done", succeeded=5000))
    assert (p.phase, p.done) == ("done", 5000)


def test_validating_shows_bytes_read_of_the_input_size() -> None:
    st = {**_st(status="validating", total=0), "ingest_bytes": 3 << 20, "input_size": 12 << 20, "ingest_line": 9000}
    p = phase_progress(st)
    assert (p.done, p.total, p.unit) == (3 << 20, 12 << 20, "bytes read")
    rates = RateMeter()
    rates.observe({"+bytes": 0}, now=0.0)
    rates.observe({"+bytes": 3 << 20}, now=3.0)
    line = headline(st, rates).plain
    assert "validating 3.0/12.0 MiB read" in line and "1.0 MiB/s" in line and "ETA 0:09" in line
    pipe = {**st, "input_size": None}  # stdin: no size, rows read instead
    assert phase_progress(pipe).unit == "rows read" and phase_progress(pipe).total is None


def test_rate_and_eta_over_a_sliding_window() -> None:
    rates = RateMeter(window_s=10)
    assert rates.rate("+scored") is None
    rates.observe({"+scored": 0}, now=0.0)
    rates.observe({"+scored": 500}, now=1.0)  # a burst at the start...
    for t in range(2, 30):
        rates.observe({"+scored": 500 + 10 * (t - 1)}, now=float(t))
    assert abs((rates.rate("+scored") or 0) - 10.0) < 1e-9  # ...is forgotten after the window
    assert eta_seconds(100, 10.0) == 10.0 and eta_seconds(0, None) == 0.0 and eta_seconds(5, 0.0) is None
    assert fmt_eta(3725) == "ETA 1:02:05" and fmt_eta(65) == "ETA 1:05" and fmt_eta(None) == "ETA -"


def test_a_draining_state_says_when_it_empties_and_a_final_state_grows() -> None:
    rates = RateMeter()
    rates.observe({"pending": 1000, "succeeded": 0}, now=0.0)
    rates.observe({"pending": 900, "succeeded": 50}, now=2.0)
    assert state_rate_text("pending", 900, rates) == ("-50.0/s", "empty in 0:18")
    assert state_rate_text("succeeded", 50, rates) == ("+25.0/s", "")


def test_the_view_renders_the_header_and_per_state_bars_with_rates() -> None:
    clock = iter([0.0, 2.0])
    view = JobView(Console(file=io.StringIO()), RateMeter(clock=lambda: next(clock)))
    view.update(_st(pending=5000))
    text = _text(view.update(_st(pending=4000, scored=1000)))
    assert "scoring 1,000/5,000 scored  500.0/s  ETA 0:08" in text
    assert "pending" in text and "-500.0/s" in text and "empty in 0:08" in text and "scored" in text


def test_status_watch_of_a_finished_job_prints_phase_done(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"k{i}", "prompt": f"q {i}"} for i in range(4)])
    job_id = json.loads(rb(["run", str(data), "--router", "length", "--json"], tmp_path).stdout)["job_id"]
    done = rb(["status", job_id, "--watch", "--interval", "0.1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "completed  done 4/4 finished" in done.stdout and "phase=scoring" not in done.stdout
    ran = rb(["run", str(data), "--router", "length"], tmp_path)  # the progress view of run, then the summary
    assert ran.returncode == 0 and "Traceback" not in ran.stderr and "succeeded / failed" in ran.stdout
