"""Real-process test harness: workers as subprocesses, a counting simulated provider,
private Redis and Postgres servers, and the ledger invariants every chaos test checks.

Used by ``tests/chaos`` and ``tests/integration/test_worker_*.py``. Nothing here touches
the shared Redis on 6379 or restarts the shared Postgres: servers a test restarts are its
own, on free ports, in a temp directory.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Short leases and timers so that recovery takes seconds, not the production minutes.
FAST_SETTINGS = {
    "ROUTEBATCH_SEND_LEASE_S": "15",
    "ROUTEBATCH_GENERATE_TIME_LIMIT_S": "12",
    "ROUTEBATCH_SCORE_TIME_LIMIT_S": "30",
    "ROUTEBATCH_REAPER_INTERVAL_S": "1",
    "ROUTEBATCH_STALL_S": "5",
    "ROUTEBATCH_CANCEL_POLL_S": "0.5",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, every: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` (exceptions count as "not yet") until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - servers may be restarting
            last_exc = exc
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


# ---------------------------------------------------------------- simulated provider


class CountingSim:
    """The simulated provider in a thread of the test process, counting calls per prompt."""

    def __init__(self, latency_ms: float = 100.0, **options) -> None:
        from jobs.providers.sim.options import SimOptions
        from jobs.providers.sim.server import SimulatedServer

        self.server = SimulatedServer(SimOptions.from_dict({"latency_ms": latency_ms, **options})).start()
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        inner = self.server.app.handle

        def handle(method, path, headers, body):
            if path.rstrip("/").endswith("/chat/completions"):
                try:
                    prompt = json.loads(body)["messages"][-1]["content"]
                except Exception:  # noqa: BLE001
                    prompt = "<unparsable>"
                with self._lock:
                    self.calls[prompt] += 1
            return inner(method, path, headers, body)

        self.server.app.handle = handle

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def stop(self) -> None:
        self.server.stop()


def write_config(path: Path, base_url: str, *, chunk_size: int = 20, concurrency: int = 16, router: str = "length") -> Path:
    path.write_text(
        f"""
[providers.sim]
base_url = "{base_url}"
concurrency = {concurrency}
timeout_s = 30

[providers.sim.retry]
max_attempts = 3
backoff_base_s = 0.1
backoff_cap_s = 1.0

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
router = "{router}"
max_tokens = 64
chunk_size = {chunk_size}
"""
    )
    return path


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            words = " ".join(f"w{j}" for j in range(i % 37))
            f.write(json.dumps({"custom_id": f"item-{i}", "prompt": f"question {i}: {words}"}) + "\n")
    return path


# ---------------------------------------------------------------- processes


@dataclass
class Cluster:
    """Workers and CLI commands as subprocesses sharing one environment."""

    tmp: Path
    db_url: str
    broker_url: str
    config: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEBATCH_")}
        env.update(FAST_SETTINGS)
        env.update(
            {
                "ROUTEBATCH_DATABASE_URL": self.db_url,
                "ROUTEBATCH_BROKER_URL": self.broker_url,
                "ROUTEBATCH_CONFIG": str(self.config),
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    imports: tuple[str, ...] = ()  # modules the CLI imports first (e.g. a test router)

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        boot = "".join(f"import {m};" for m in self.imports) + "from jobs.cli import main; main()"
        out = subprocess.run(
            [sys.executable, "-c", boot, *args], cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            raise AssertionError(f"routebatch {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def cli_json(self, *args: str, timeout: float = 120) -> dict:
        return json.loads(self.cli(*args, "--json", timeout=timeout).stdout.strip().splitlines()[-1])

    def start_worker(self, queue: str, *extra: str, name: str | None = None) -> subprocess.Popen:
        """A worker in its own process group, so that a kill takes its pool children too."""
        name = name or f"{queue}{len(self.procs)}"
        log = open(self.tmp / f"worker-{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "worker", "--queue", queue, "--hostname", f"{name}@chaos", "--loglevel", "INFO", *extra],
            cwd=self.tmp,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = self.tmp / f"worker-{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            proc.wait(10)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(p, signal.SIGKILL)

    @staticmethod
    def busy_with(proc: subprocess.Popen, task: str) -> int:
        """How many ``task`` tasks the worker has received and not yet finished (from its log)."""
        text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        received = sum(1 for line in text.splitlines() if f"routebatch.{task}[" in line and line.rstrip().endswith("received"))
        done = sum(1 for line in text.splitlines() if f"routebatch.{task}[" in line and not line.rstrip().endswith("received"))
        return received - done

    def logs(self) -> str:
        parts = []
        for p in self.procs:
            path = getattr(p, "log_path", None)
            if path and path.exists():
                parts.append(f"==== {path.name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


# ---------------------------------------------------------------- private servers


class PrivateRedis:
    """A throwaway redis-server on its own port, without persistence (a restart loses all)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            import pytest

            pytest.skip("redis-server not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        wait_for(lambda: redis.Redis(port=self.port).ping(), 10, what="private redis")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, down_s: float = 1.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()


class PrivatePostgres:
    """A Postgres cluster of its own (initdb in a temp dir, another port), as the postgres user.

    The machine's Postgres is shared by everyone's tests, so only this one is restarted.
    """

    def __init__(self, tmp: Path) -> None:
        import tempfile

        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and initdb runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="rb-chaos-pg-"))
        self.root.chmod(0o755)
        self.dir = self.root / "pgdata"
        self.sock = self.root / "pgsock"
        self.bin = self._find_bin()

    @staticmethod
    def _find_bin() -> Path:
        import glob

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            import pytest

            pytest.skip("no pg_ctl under /usr/lib/postgresql")
        return Path(found[-1]).parent

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str, timeout: float = 60) -> None:
        full = [str(c) for c in cmd]
        if os.geteuid() == 0:
            full = ["runuser", "-u", "postgres", "--", *full]
        out = subprocess.run(full, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise subprocess.CalledProcessError(out.returncode, full, stderr=out.stderr)

    def init(self) -> PrivatePostgres:
        self.sock.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(self.bin / "initdb", "-D", self.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self.start()

    def start(self) -> PrivatePostgres:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        self._run(self.bin / "pg_ctl", "-D", self.dir, "-o", opts, "-w", "-t", "30", "-l", self.dir.parent / "pg.log", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        try:
            self._run(self.bin / "pg_ctl", "-D", self.dir, "-m", mode, "-w", "stop")
        except subprocess.CalledProcessError:
            pass

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, down_s: float = 1.0) -> None:
        self.stop("immediate")
        time.sleep(down_s)
        self.start()


# ---------------------------------------------------------------- ledger checks


def job_counts(db_url: str, job_id: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from jobs.ledger.models import Item
    from jobs.ledger.session import session_scope

    with session_scope(db_url) as s:
        return dict(s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all())


def attempt_count(db_url: str, job_id: str) -> int:
    from sqlalchemy import func, select

    from jobs.ledger.models import Attempt
    from jobs.ledger.session import session_scope

    with session_scope(db_url) as s:
        return int(s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id == job_id)) or 0)


def job_state(db_url: str, job_id: str) -> str:
    from sqlalchemy import select

    from jobs.ledger.models import Job
    from jobs.ledger.session import session_scope

    with session_scope(db_url) as s:
        return s.scalar(select(Job.state).where(Job.id == job_id)) or ""


def check_ledger(db_url: str, job_id: str, sim: CountingSim | None = None, *, expect_state: str = "completed") -> dict:
    """The invariants of every chaos test; returns the numbers for the report.

    * the job is in ``expect_state`` and every item is terminal;
    * no item succeeded twice (at most one successful attempt per item);
    * sum(attempt costs) == sum(item costs) (== budget spent, once budgets exist);
    * every provider call the simulator saw is in the ledger: for each item, calls seen
      <= attempts recorded, counting ``LostInFlight`` rows for calls whose answer was lost.
    """
    from sqlalchemy import func, select

    from jobs.ledger.models import Attempt, Item, Job
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.states import ITEM_TERMINAL

    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        items = s.execute(select(Item.id, Item.prompt, Item.state, Item.cost_micro_usd).where(Item.job_id == job_id)).all()
        attempts = s.execute(
            select(Attempt.item_id, Attempt.status_code, Attempt.error_class, Attempt.cost_micro_usd).where(Attempt.job_id == job_id)
        ).all()
        spent = s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)).where(Attempt.job_id == job_id))
        item_cost = s.scalar(select(func.coalesce(func.sum(Item.cost_micro_usd), 0)).where(Item.job_id == job_id))
        budget_spent = _budget_spent(s, job_id)
    assert job.state == expect_state, f"job {job_id} is {job.state}, expected {expect_state}"
    open_items = [i for i in items if i.state not in {st.value for st in ITEM_TERMINAL}]
    assert not open_items, f"{len(open_items)} items not terminal, e.g. {open_items[:3]}"
    ok_per_item = collections.Counter(a.item_id for a in attempts if a.error_class is None and a.status_code == 200)
    twice = {k: n for k, n in ok_per_item.items() if n > 1}
    assert not twice, f"items succeeded more than once: {list(twice.items())[:5]}"
    assert spent == item_cost, f"sum(attempt costs)={spent} != sum(item costs)={item_cost}"
    if budget_spent is not None:
        assert budget_spent == spent, f"budget spent {budget_spent} != sum(attempt costs) {spent}"
    lost = sum(1 for a in attempts if a.error_class == "LostInFlight")
    unrecorded = []
    if sim is not None:
        recorded = collections.Counter(a.item_id for a in attempts)
        for item in items:
            seen = sim.calls.get(item.prompt, 0)
            if seen > recorded.get(item.id, 0):
                unrecorded.append((item.id, seen, recorded.get(item.id, 0)))
        assert not unrecorded, f"provider calls missing from the ledger (item, calls, attempts): {unrecorded[:5]}"
    return {
        "items": len(items),
        "succeeded": sum(1 for i in items if i.state == "succeeded"),
        "attempts": len(attempts),
        "lost_in_flight": lost,
        "provider_calls": sim.total() if sim is not None else None,
        "duplicate_calls": (sim.total() - len(items)) if sim is not None else None,
        "spent_micro_usd": int(spent),
        "budget_spent_micro_usd": budget_spent,
    }


def _budget_spent(s, job_id: str) -> int | None:
    """What the job's own budget (``--budget-usd``) says was spent; None without one.

    Also checks that nothing is left reserved once the job is over.
    """
    from sqlalchemy import func, select

    from jobs.ledger.models import BudgetWindow, Job

    budget_id = s.scalar(select(Job.job_budget_id).where(Job.id == job_id))
    if budget_id is None:
        return None
    spent, reserved = s.execute(
        select(func.coalesce(func.sum(BudgetWindow.spent_micro_usd), 0), func.coalesce(func.sum(BudgetWindow.reserved_micro_usd), 0))
        .where(BudgetWindow.budget_id == budget_id)
    ).one()
    assert reserved == 0, f"{reserved} micro-USD still reserved after the job ended"
    return int(spent)


# ---------------------------------------------------------------- fixtures (import them into a test module)

import pytest  # noqa: E402


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def sim():
    server = CountingSim(latency_ms=200)
    yield server
    server.stop()
