"""``routebatch status JOB --watch`` (and ``run``'s progress): a header with the phase and
its progress, rate and ETA, and one bar per item state with its rate.

Polls ``jobs.lifecycle.service.status`` (one cheap GROUP BY) rather than listening to workers, so it
works from any machine that can reach the database, for a job started anywhere.

The phase in the header is read from the counts, not only from ``jobs.phase`` (which moves
once per phase): ``scoring`` while items are pending, ``routing`` while scored items wait
for the route step, ``generating`` after, each with the progress of that phase (items
scored, items finished), and ``validating`` with the bytes of the input read so far. Rates
are measured over the last ``RATE_WINDOW_S`` seconds of samples, so a burst at the start
does not make the ETA lie for the rest of the job.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from jobs.cli.output import console, json_line
from jobs.lifecycle.states import ITEM_TERMINAL, ItemState, JobState

# In the order an item moves through them; terminal states last.
STATE_ORDER = [st.value for st in ItemState]
DONE = {st.value for st in ITEM_TERMINAL}
RATE_WINDOW_S = 30.0


def is_terminal(st: dict) -> bool:
    try:
        return JobState(st["status"]).terminal
    except ValueError:
        return False


class RateMeter:
    """Per-key rates (units per second) over a sliding window of ``(time, value)`` samples."""

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, values: dict[str, float], now: float | None = None) -> None:
        at = self._clock() if now is None else now
        for key, value in values.items():
            samples = self._samples.setdefault(key, deque())
            if samples and value < samples[-1][1] and key.startswith("+"):
                samples.clear()  # a monotone counter went back (a resume reopened items): start again
            samples.append((at, float(value)))
            while len(samples) > 2 and at - samples[1][0] >= self._window_s:
                samples.popleft()

    def rate(self, key: str) -> float | None:
        """Change per second over the window; None until two samples are apart in time."""
        samples = self._samples.get(key)
        if not samples or len(samples) < 2:
            return None
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else None


def eta_seconds(remaining: float, rate: float | None) -> float | None:
    """Seconds until ``remaining`` units are done at ``rate`` per second (None: unknown)."""
    if remaining <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return remaining / rate


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"ETA {h}:{m:02d}:{sec:02d}" if h else f"ETA {m}:{sec:02d}"


def fmt_rate(rate: float | None, unit: str = "/s") -> str:
    if rate is None:
        return "-"
    if unit == "B/s":
        for scale, name in ((1 << 30, "GiB/s"), (1 << 20, "MiB/s"), (1 << 10, "KiB/s")):
            if abs(rate) >= scale:
                return f"{rate / scale:.1f} {name}"
        return f"{rate:.0f} B/s"
    return f"{rate:,.1f}{unit}"


@dataclass(frozen=True)
class PhaseProgress:
    """Where the job is and how far that phase got: ``done`` of ``total`` ``unit``."""

    phase: str
    done: int
    total: int | None
    unit: str  # "bytes read", "rows read", "scored", "routed", "finished"
    key: str  # the RateMeter key of ``done``


def phase_progress(st: dict) -> PhaseProgress:
    """The phase from the counts (``jobs.phase`` moves once per phase; the counts every item)."""
    counts = st.get("counts") or {}
    total = int(st.get("total") or 0)
    finished = sum(int(counts.get(k, 0)) for k in DONE)
    status = str(st.get("status"))
    if status == JobState.VALIDATING:
        if st.get("ingest_bytes") is not None and st.get("input_size"):
            return PhaseProgress("validating", int(st["ingest_bytes"]), int(st["input_size"]), "bytes read", "+bytes")
        return PhaseProgress("validating", int(st.get("ingest_line") or 0), None, "rows read", "+rows")
    if is_terminal(st):
        return PhaseProgress("done", finished, total, "finished", "+finished")
    pending, scored = int(counts.get("pending", 0)), int(counts.get("scored", 0))
    if status == JobState.IN_PROGRESS and pending:
        return PhaseProgress("scoring", total - pending, total, "scored", "+scored")
    if status == JobState.IN_PROGRESS and scored:
        return PhaseProgress("routing", total - pending - scored, total, "routed", "+routed")
    phase = "generating" if status == JobState.IN_PROGRESS else status  # cancelling, finalizing
    return PhaseProgress(phase, finished, total, "finished", "+finished")


def _meter_values(st: dict) -> dict[str, float]:
    counts = st.get("counts") or {}
    total = int(st.get("total") or 0)
    pending, scored = int(counts.get("pending", 0)), int(counts.get("scored", 0))
    values: dict[str, float] = {name: float(counts.get(name, 0)) for name in STATE_ORDER}
    values["+finished"] = float(sum(int(counts.get(k, 0)) for k in DONE))
    values["+scored"] = float(total - pending)
    values["+routed"] = float(total - pending - scored)
    if st.get("ingest_bytes") is not None:
        values["+bytes"] = float(st["ingest_bytes"])
    values["+rows"] = float(st.get("ingest_line") or 0)
    return values


def headline(st: dict, rates: RateMeter | None = None) -> Text:
    """``job ID  STATE  PHASE done/total unit  rate  ETA  spent $  budget ...``."""
    prog = phase_progress(st)
    rate = rates.rate(prog.key) if rates else None
    if prog.unit == "bytes read":
        amount = f"{prog.done / (1 << 20):,.1f}/{(prog.total or 0) / (1 << 20):,.1f} MiB read"
        speed = fmt_rate(rate, "B/s")
    else:
        amount = f"{prog.done:,}/{prog.total:,} {prog.unit}" if prog.total is not None else f"{prog.done:,} {prog.unit}"
        speed = fmt_rate(rate)
    line = Text.assemble(("job ", "bold"), str(st.get("job_id") or ""), "  ", (str(st.get("status")), "bold cyan"))
    line.append(f"  {prog.phase} {amount}")
    if prog.phase != "done":
        remaining = (prog.total - prog.done) if prog.total is not None else None
        line.append(f"  {speed}  {fmt_eta(eta_seconds(remaining, rate)) if remaining is not None else 'ETA -'}")
    line.append(f"  spent ${float(st.get('cost_usd') or 0):.6f}")
    budgets = st.get("budgets") or {}
    for role, b in budgets.items() if isinstance(budgets, dict) else enumerate(budgets):
        if isinstance(b, dict) and "cap_usd" in b:
            line.append(
                f"  budget[{role}] ${b.get('spent_usd', 0):.4f} spent + ${b.get('reserved_usd', 0):.4f} held of ${b['cap_usd']:.4f}"
            )
    if st.get("error"):
        line.append(f"  ({st['error']})", style="red")
    return line


def state_rate_text(name: str, count: int, rates: RateMeter) -> tuple[str, str]:
    """A state's rate (signed: a queue that drains goes negative) and, for a draining
    state, when it will be empty; terminal states only grow, so they get no ETA."""
    rate = rates.rate(name)
    if rate is None:
        return "-", ""
    text = f"{rate:+,.1f}/s"
    if name not in DONE and rate < 0 and count > 0:
        return text, fmt_eta(count / -rate).replace("ETA", "empty in")
    return text, ""


class JobView:
    """The header and the per-state bars of one job, updated from status dicts."""

    def __init__(self, con: Console, rates: RateMeter | None = None) -> None:
        self.rates = rates or RateMeter()
        self.bars = Progress(
            TextColumn("{task.description:>15}", markup=False),
            BarColumn(bar_width=40),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10}", markup=False),
            TextColumn("{task.fields[eta]}", markup=False),
            TimeElapsedColumn(),
            expand=False,
            console=con,
        )
        self._tasks: dict[str, TaskID] = {}
        self._ingest: TaskID | None = None

    def update(self, st: dict) -> Group:
        self.rates.observe(_meter_values(st))
        total = max(int(st.get("total") or 0), 1)
        prog = phase_progress(st)
        if prog.phase == "validating":
            if self._ingest is None:
                self._ingest = self.bars.add_task("validating", total=None, rate="-", eta="")
            speed = self.rates.rate(prog.key)
            unit = "B/s" if prog.unit == "bytes read" else "/s"
            remaining = (prog.total - prog.done) if prog.total is not None else None
            self.bars.update(
                self._ingest,
                completed=prog.done,
                total=prog.total,
                rate=fmt_rate(speed, unit),
                eta=fmt_eta(eta_seconds(remaining, speed)) if remaining is not None else "",
            )
        elif self._ingest is not None:
            self.bars.update(self._ingest, visible=False)
        counts = st.get("counts") or {}
        for name in STATE_ORDER:
            count = int(counts.get(name, 0))
            if name not in self._tasks:
                self._tasks[name] = self.bars.add_task(name, total=total, rate="-", eta="")
            rate, eta = state_rate_text(name, count, self.rates)
            visible = prog.phase != "validating" and (bool(count) or name in (ItemState.SUCCEEDED, ItemState.FAILED))
            self.bars.update(self._tasks[name], completed=count, total=total, visible=visible, rate=rate, eta=eta)
        return Group(headline(st, self.rates), self.bars)


def watch(fetch: Callable[[], dict], interval: float = 1.0, as_json: bool = False, timeout: float | None = None) -> dict:
    """Refresh until the job is terminal (or ``timeout``); returns the last status.

    With ``as_json``: one JSON line per change of the counts or state (a stream for scripts).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    st = fetch()
    if as_json:
        last = None
        while True:
            key = (st["status"], tuple(sorted(st["counts"].items())), st["cost_micro_usd"], st.get("ingest_bytes"))
            if key != last:
                sys.stdout.write(json_line(st) + "\n")
                sys.stdout.flush()
                last = key
            if is_terminal(st) or (deadline and time.monotonic() > deadline):
                return st
            time.sleep(interval)
            st = fetch()

    con = console()  # no markup: the headline carries a job id and an error message from the ledger
    view = JobView(con)
    with Live(view.update(st), refresh_per_second=4, transient=False, console=con) as live:
        while not (is_terminal(st) or (deadline and time.monotonic() > deadline)):
            time.sleep(interval)
            st = fetch()
            live.update(view.update(st))
    if not con.is_terminal:
        con.line()  # a pipe gets the last frame without its line end
    return st
