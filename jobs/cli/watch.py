"""``routebatch status JOB --watch``: live bars per item state and the spend so far.

Polls ``jobs.lifecycle.service.status`` (one cheap GROUP BY) rather than listening to workers, so it
works from any machine that can reach the database, for a job started anywhere.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from jobs.cli.output import console
from jobs.lifecycle.states import ItemState, JobState

# In the order an item moves through them; terminal states last.
STATE_ORDER = [st.value for st in ItemState]
DONE = {ItemState.SUCCEEDED.value, ItemState.FAILED.value, ItemState.SKIPPED_BUDGET.value, ItemState.CANCELLED.value}


def is_terminal(st: dict) -> bool:
    try:
        return JobState(st["status"]).terminal
    except ValueError:
        return False


def _headline(st: dict) -> Text:
    done = sum(st["counts"].get(k, 0) for k in DONE)
    line = Text.assemble(
        ("job ", "bold"),
        st["job_id"],
        "  ",
        (st["status"], "bold cyan"),
        f"  phase={st.get('phase')}",
        f"  {done}/{st['total']} done",
        f"  spent ${st['cost_usd']:.6f}",
    )
    budgets = st.get("budgets") or {}
    for role, b in budgets.items() if isinstance(budgets, dict) else enumerate(budgets):
        if isinstance(b, dict) and "cap_usd" in b:
            line.append(
                f"  budget[{role}] ${b.get('spent_usd', 0):.4f} spent + ${b.get('reserved_usd', 0):.4f} held of ${b['cap_usd']:.4f}"
            )
    if st.get("error"):
        line.append(f"  ({st['error']})", style="red")
    return line


def watch(fetch: Callable[[], dict], interval: float = 1.0, as_json: bool = False, timeout: float | None = None) -> dict:
    """Refresh until the job is terminal (or ``timeout``); returns the last status.

    With ``as_json``: one JSON line per change of the counts or state (a stream for scripts).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    st = fetch()
    if as_json:
        last = None
        while True:
            key = (st["status"], tuple(sorted(st["counts"].items())), st["cost_micro_usd"])
            if key != last:
                sys.stdout.write(json.dumps(st, default=str) + "\n")
                sys.stdout.flush()
                last = key
            if is_terminal(st) or (deadline and time.monotonic() > deadline):
                return st
            time.sleep(interval)
            st = fetch()

    con = console()  # no markup: the headline carries a job id and an error message from the ledger
    bars = Progress(
        TextColumn("{task.description:>15}", markup=False),
        BarColumn(bar_width=40),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        expand=False,
        console=con,
    )
    tasks: dict[str, TaskID] = {name: bars.add_task(name, total=max(st["total"], 1)) for name in STATE_ORDER}
    with Live(Group(_headline(st), bars), refresh_per_second=4, transient=False, console=con) as live:
        while True:
            total = max(st["total"], 1)
            for name, task in tasks.items():
                bars.update(
                    task,
                    completed=st["counts"].get(name, 0),
                    total=total,
                    visible=bool(st["counts"].get(name, 0)) or name in DONE,
                )
            live.update(Group(_headline(st), bars))
            if is_terminal(st) or (deadline and time.monotonic() > deadline):
                return st
            time.sleep(interval)
            st = fetch()
