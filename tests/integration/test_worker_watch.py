"""``routebatch status --watch``: refreshes until the job is terminal, as bars or a JSON stream."""

from __future__ import annotations

import io
import json

from rich.console import Console

from jobs.cli import watch as watch_mod


def _status(state: str, succeeded: int, total: int = 10, cost: int = 0) -> dict:
    counts = {"pending": 0, "scored": 0, "routed": total - succeeded, "reserved": 0, "sent": 0, "succeeded": succeeded,
              "failed": 0, "skipped_budget": 0, "cancelled": 0}
    return {"job_id": "batch_x", "status": state, "phase": "generating", "total": total, "counts": counts,
            "cost_usd": cost / 1e6, "cost_micro_usd": cost, "error": None,
            "budgets": {"job": {"name": "job:batch_x", "cap_usd": 1.0, "spent_usd": cost / 1e6, "reserved_usd": 0.0}}}


def _feed(seq):
    it = iter(seq)
    last = {}

    def fetch():
        nonlocal last
        last = next(it, last)
        return last

    return fetch


def test_watch_json_streams_each_change_until_terminal(capsys):
    seq = [_status("in_progress", 0), _status("in_progress", 0), _status("in_progress", 5, cost=50), _status("completed", 10, cost=90)]
    final = watch_mod.watch(_feed(seq), interval=0.01, as_json=True)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert final["status"] == "completed"
    assert [x["counts"]["succeeded"] for x in lines] == [0, 5, 10]  # the unchanged poll is not repeated


def test_watch_bars_render_spend_and_stop_at_terminal(monkeypatch):
    buf = io.StringIO()
    console = Console(file=buf, width=140, force_terminal=False)
    monkeypatch.setattr(watch_mod, "console", lambda *a, **k: console)
    seq = [_status("in_progress", 2, cost=20), _status("cancelled", 4, cost=40)]
    final = watch_mod.watch(_feed(seq), interval=0.01)
    out = buf.getvalue()
    assert final["status"] == "cancelled"
    assert "succeeded" in out and "spent $0.000040" in out and "budget[job]" in out


def test_watch_gives_up_after_timeout():
    st = watch_mod.watch(_feed([_status("in_progress", 1)]), interval=0.01, as_json=True, timeout=0.05)
    assert st["status"] == "in_progress"
