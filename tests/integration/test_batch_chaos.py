"""Batch dispatch under real crashes (issue 14), on the real Postgres.

``tests/unit/pipeline/test_batch_dispatch.py`` stands for a crash with an exception raised
inside the process; here the runner is a ``routebatch run`` subprocess that SIGKILLs itself
at the chosen point (or is SIGKILLed from outside): no ``finally``, no ``except``, no
connection closed politely. A second subprocess, ``routebatch resume JOB`` (embedded: no
broker), must then finish the job from what the ledger says.

The simulated provider runs in this process, so its counters (``GET /_sim/stats``) see
every upload of both processes: a request uploaded twice would be paid twice.

Every test ends with the same checks: the job completed, every item succeeded with exactly
one successful call, no request was uploaded twice, and attempts = item costs = the job's
budget spent, with nothing left reserved.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from jobs.ledger.models import Attempt, BudgetWindow, Item, Job, ProviderBatch, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.providers.sim.server import SimulatedServer, start_simulated_provider
from tests.chaos.harness import REPO, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

N = 200
BUDGET_USD = "1.0"  # far above the job's worst case (~$0.15 at batch prices): nothing is downgraded

# What the subprocess runs before the CLI: the seams are module globals, looked up at each call.
KILL_AFTER_UPLOAD = """
import os, signal
from jobs.pipeline import batch_dispatch
batch_dispatch.after_upload = lambda pb_id: os.kill(os.getpid(), signal.SIGKILL)
"""
KILL_BEFORE_UPLOAD = """
import os, signal
from jobs.pipeline import batch_dispatch
batch_dispatch.client_of = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
"""
KILL_BEFORE_SYNC_RETRY = """
import os, signal
from jobs.pipeline import batch_poll
_send_again = batch_poll.send_again
def _die_before_retry(rt, queue, job_id, retry):
    if retry.rows:
        os.kill(os.getpid(), signal.SIGKILL)
    _send_again(rt, queue, job_id, retry)
batch_poll.send_again = _die_before_retry
"""
KILL_IN_FIRST_POLL = """
import os, signal
from jobs.pipeline import batch_poll
batch_poll._poll_one = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
"""


def _write_config(path: Path, base_url: str, kind: str = "openai", batch_max_requests: int = 40) -> Path:
    """The simulator at ``base_url`` as provider ``sim`` dispatching ``batch``, with polls every
    0.2-0.5 s and batches of at most 40 requests (several per model, so that a kill at the
    first upload leaves claimed items that no batch holds yet)."""
    path.write_text(
        f"""
[providers.sim]
kind = "{kind}"
base_url = "{base_url}"
dispatch = "batch"
batch_poll_s = 0.2
batch_poll_max_s = 0.5
batch_max_requests = {batch_max_requests}
concurrency = 16
timeout_s = 30

[providers.sim.retry]
max_attempts = 4
backoff_base_s = 0.0
backoff_cap_s = 0.0
jitter = false

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
router = "length"
max_tokens = 64
chunk_size = 100
"""
    )
    return path


def _write_prompts(path: Path, n: int = N) -> Path:
    # Distinct prompts: the simulator counts uploads by request body.
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i}: " + "why " * (i % 13)}) + "\n")
    return path


class Rig:
    """One test's world: a fresh Postgres database, the simulator, a config file, the CLI."""

    def __init__(
        self, tmp: Path, pg_url: str, server: SimulatedServer, kind: str = "openai", batch_max_requests: int = 40
    ) -> None:
        self.tmp = tmp
        self.db_url = pg_url
        self.server = server
        self.config = _write_config(tmp / "routebatch.toml", server.base_url, kind, batch_max_requests)
        self.data = _write_prompts(tmp / "prompts.jsonl")
        self.log = ""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEBATCH_")}  # no broker: embedded
        env.update(
            {
                "ROUTEBATCH_DATABASE_URL": self.db_url,
                "ROUTEBATCH_CONFIG": str(self.config),
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def argv(self, *args: str, boot: str = "") -> list[str]:
        return [sys.executable, "-c", boot + "\nfrom jobs.cli import main\nmain()\n", *args]

    def cli(self, *args: str, boot: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args, boot=boot), cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def run_job(self, *extra: str, boot: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
        return self.cli(
            "run",
            str(self.data),
            "--strong-share",
            "0.5",
            "--budget-usd",
            BUDGET_USD,
            "--json",
            *extra,
            boot=boot,
            timeout=timeout,
        )

    def resume(self, job_id: str) -> dict:
        out = self.cli("resume", job_id, "--json")
        assert out.returncode == 0, f"resume failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        self.log = out.stderr  # the recovery's warnings, for failure messages
        return json.loads(out.stdout.strip().splitlines()[-1])

    def stats(self) -> dict:
        return httpx.get(self.server.base_url.removesuffix("/v1") + "/_sim/stats", timeout=10).json()

    def only_job(self) -> str:
        with session_scope(self.db_url) as s:
            return s.scalars(select(Job.id)).one()

    def batches(self) -> list[Any]:
        with session_scope(self.db_url) as s:
            return list(s.execute(select(ProviderBatch.state, ProviderBatch.remote_id, ProviderBatch.request_count)).all())

    def time_passes_for_preparing(self) -> int:
        """The dead uploader's lease (`prepare_lease`) running out: moved into the past."""
        with session_scope(self.db_url) as s:
            result = s.execute(
                update(ProviderBatch)
                .where(ProviderBatch.state == "preparing")
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
            return int(result.rowcount or 0)


@pytest.fixture
def sims():
    started: list[SimulatedServer] = []

    def start(**options: Any) -> SimulatedServer:
        server = start_simulated_provider({"latency_ms": 0, "seed": 7, "batch_complete_s": 0.4, **options})
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _killed(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == -signal.SIGKILL, f"expected a SIGKILL, got {out.returncode}:\n{out.stdout}\n{out.stderr}"


def check_ledger(rig: Rig, job_id: str, *, one_call_per_item: bool = True, max_uploaded_twice: int = 0) -> dict:
    """The invariants; returns the numbers (for the report and failure messages).

    * the job completed and all N items succeeded;
    * exactly one successful attempt per item; with ``one_call_per_item``, also exactly one
      attempt per item that is not a ``LostInFlight`` marker (its batch line: nothing sent twice);
    * every unsuccessful attempt cost nothing;
    * the simulator saw no request uploaded twice (at most ``max_uploaded_twice``);
    * sum(attempt costs) = sum(item costs) = the job's own budget spent, nothing reserved,
      no reservation open.
    """
    stats = rig.stats()
    with session_scope(rig.db_url) as s:
        job = s.get_one(Job, job_id)
        states = dict(s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all())
        attempts = s.execute(
            select(
                Attempt.item_id, Attempt.status_code, Attempt.error_class, Attempt.cost_micro_usd, Attempt.provider_batch_id
            ).where(Attempt.job_id == job_id)
        ).all()
        item_cost = s.scalar(select(func.coalesce(func.sum(Item.cost_micro_usd), 0)).where(Item.job_id == job_id))
        open_holds = s.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.job_id == job_id, Reservation.state == "open")
        )
        assert job.job_budget_id is not None
        spent, reserved = s.execute(
            select(
                func.coalesce(func.sum(BudgetWindow.spent_micro_usd), 0),
                func.coalesce(func.sum(BudgetWindow.reserved_micro_usd), 0),
            ).where(BudgetWindow.budget_id == job.job_budget_id)
        ).one()
        pbs = s.execute(select(ProviderBatch.state, ProviderBatch.remote_status)).all()
    ok = [a for a in attempts if a.error_class is None and a.status_code == 200]
    ok_per_item = collections.Counter(a.item_id for a in ok)
    calls_per_item = collections.Counter(a.item_id for a in attempts if a.error_class != "LostInFlight")
    numbers = {
        "job": job.state,
        "items": states,
        "attempts": len(attempts),
        "ok_attempts": len(ok),
        "via_batch": sum(1 for a in ok if a.provider_batch_id),
        "lost_in_flight": sum(1 for a in attempts if a.error_class == "LostInFlight"),
        "errored": sum(1 for a in attempts if a not in ok and a.error_class != "LostInFlight"),
        "attempt_cost": sum(a.cost_micro_usd for a in attempts),
        "item_cost": int(item_cost),
        "budget_spent": int(spent),
        "budget_reserved": int(reserved),
        "open_holds": open_holds,
        "provider_batches": collections.Counter(f"{p.state}/{p.remote_status}" for p in pbs),
        "sim": stats,
    }
    said = f"ledger: {json.dumps(numbers, default=str)}\nlast resume's log:\n{rig.log}"
    assert job.state == "completed" and states == {"succeeded": N}, said
    assert len(ok_per_item) == N and set(ok_per_item.values()) == {1}, said
    if one_call_per_item:
        assert set(calls_per_item.values()) == {1}, said
    assert all(a.cost_micro_usd == 0 for a in attempts if a not in ok), said
    assert stats["requests_uploaded_twice"] <= max_uploaded_twice, said
    assert numbers["attempt_cost"] == numbers["item_cost"] == numbers["budget_spent"] > 0, said
    assert reserved == 0 and open_holds == 0, said
    return numbers


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_killed_right_after_the_first_upload(tmp_path: Path, pg_url: str, sims, kind: str) -> None:
    """SIGKILL between "the provider accepted the batch" and "recorded submitted": resume finds
    it at the provider (by our metadata for OpenAI, by size and time for Anthropic) and does
    not upload it again; the claimed items no batch held yet are sent once."""
    rig = Rig(tmp_path, pg_url, sims(), kind)
    _killed(rig.run_job(boot=KILL_AFTER_UPLOAD))
    job_id = rig.only_job()
    (pb,) = rig.batches()
    assert pb.state == "preparing" and pb.remote_id is None
    assert rig.stats()["batch_requests_uploaded"] == pb.request_count > 0  # it did reach the provider
    assert rig.time_passes_for_preparing() == 1
    st = rig.resume(job_id)
    assert st["status"] == "completed", st
    numbers = check_ledger(rig, job_id)
    assert numbers["via_batch"] == N and numbers["sim"]["distinct_requests_uploaded"] == N, numbers


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_crashed_upload_is_found_behind_a_page_of_other_batches(tmp_path: Path, pg_url: str, sims, kind: str) -> None:
    """SIGKILL right after the upload; then the account creates 150 other batches before the
    resume. The reconcile read only the provider's 100 most recent batches, did not find
    ours among them and uploaded it again: every request of it billed twice."""
    from jobs.providers.batch_api import BatchRequest, client_for

    rig = Rig(tmp_path, pg_url, sims(), kind)
    _killed(rig.run_job(boot=KILL_AFTER_UPLOAD))
    job_id = rig.only_job()
    (pb,) = rig.batches()
    assert pb.state == "preparing" and pb.remote_id is None
    other = client_for(kind, rig.server.base_url, None)
    try:
        for i in range(150):  # another team's jobs on the same account
            body = {"model": "sim-weak", "messages": [{"role": "user", "content": f"other {i}"}], "max_tokens": 4}
            other.submit([BatchRequest(f"other-{i}", body)], {})
    finally:
        other.close()
    assert rig.time_passes_for_preparing() == 1
    st = rig.resume(job_id)
    assert st["status"] == "completed", st
    numbers = check_ledger(rig, job_id)
    assert numbers["via_batch"] == N and numbers["sim"]["distinct_requests_uploaded"] == N + 150, numbers


def test_killed_at_the_first_poll(tmp_path: Path, pg_url: str, sims) -> None:
    """SIGKILL as the first poll starts: the batches are submitted, nothing retrieved; resume
    polls and settles them."""
    rig = Rig(tmp_path, pg_url, sims())
    _killed(rig.run_job(boot=KILL_IN_FIRST_POLL))
    job_id = rig.only_job()
    assert {b.state for b in rig.batches()} == {"submitted"}
    uploaded = rig.stats()["batch_requests_uploaded"]
    assert 0 < uploaded <= N
    assert rig.time_passes_for_preparing() == 0  # every upload was recorded before the poll
    st = rig.resume(job_id)
    assert st["status"] == "completed", st
    numbers = check_ledger(rig, job_id)
    assert numbers["via_batch"] == N and numbers["sim"]["distinct_requests_uploaded"] == N, numbers


def test_killed_from_outside_while_polling(tmp_path: Path, pg_url: str, sims) -> None:
    """A SIGKILL from another process once a submitted batch has been polled at least once
    (its interval doubled) and is still running at the provider."""
    rig = Rig(tmp_path, pg_url, sims(batch_complete_s=2.0))
    proc = subprocess.Popen(
        rig.argv("run", str(rig.data), "--strong-share", "0.5", "--budget-usd", BUDGET_USD, "--json"),
        cwd=tmp_path,
        env=rig.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def polled() -> bool:
            with session_scope(rig.db_url) as s:
                return bool(
                    s.scalar(
                        select(func.count())
                        .select_from(ProviderBatch)
                        .where(ProviderBatch.state == "submitted", ProviderBatch.poll_interval_s > 0.2)
                    )
                )

        wait_for(polled, 30, every=0.05, what="a submitted provider batch polled once")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    job_id = rig.only_job()
    rig.time_passes_for_preparing()  # a kill during a later chunk's upload may leave one
    st = rig.resume(job_id)
    assert st["status"] == "completed", st
    numbers = check_ledger(rig, job_id)
    assert numbers["via_batch"] == N and numbers["sim"]["distinct_requests_uploaded"] == N, numbers


def test_a_batch_that_expires_half_done_is_finished_within_the_budget(tmp_path: Path, pg_url: str, sims) -> None:
    """Every provider batch expires part-way: the answered lines are charged at batch prices,
    the rest are sent synchronously (``batch_retry = sync``), once each."""
    rig = Rig(tmp_path, pg_url, sims(batch_complete_s=2.0, batch_expire_s=0.5))
    out = rig.run_job()
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    st = json.loads(out.stdout.strip().splitlines()[-1])
    numbers = check_ledger(rig, st["job_id"])
    assert set(numbers["provider_batches"]) == {"settled/expired"}, numbers
    assert 0 < numbers["via_batch"] < N, numbers  # half done: some of each


def test_errored_lines_are_answered_again_within_the_budget(tmp_path: Path, pg_url: str, sims) -> None:
    """About 10% of the lines come back as 500s (and 10% of the synchronous retries too):
    each recorded at no cost, each item answered once in the end."""
    rig = Rig(tmp_path, pg_url, sims(faults={"500": 0.1}))
    out = rig.run_job()
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    st = json.loads(out.stdout.strip().splitlines()[-1])
    numbers = check_ledger(rig, st["job_id"], one_call_per_item=False)
    assert N * 0.03 <= numbers["errored"] <= N * 0.3, numbers
    assert numbers["via_batch"] + numbers["errored"] >= N, numbers


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_killed_after_the_intent_before_the_upload(tmp_path: Path, pg_url: str, sims, kind: str) -> None:
    """SIGKILL after the ``preparing`` row is committed, before the upload: the provider has no
    such batch, so resume uploads it (once) instead of waiting for results that never come."""
    rig = Rig(tmp_path, pg_url, sims(), kind)
    _killed(rig.run_job(boot=KILL_BEFORE_UPLOAD))
    job_id = rig.only_job()
    (pb,) = rig.batches()
    assert pb.state == "preparing" and rig.stats()["batch_requests_uploaded"] == 0
    assert rig.time_passes_for_preparing() == 1
    st = rig.resume(job_id)
    assert st["status"] == "completed", st
    numbers = check_ledger(rig, job_id)
    assert numbers["via_batch"] == N and numbers["sim"]["distinct_requests_uploaded"] == N, numbers


def test_killed_after_settling_an_expired_batch_before_its_sync_retry(tmp_path: Path, pg_url: str, sims) -> None:
    """SIGKILL after an expired batch was settled (its unanswered items' holds released in the
    same commit) and before they were sent synchronously: resume sends them once.

    They may go out in a new provider batch (the provider's ``dispatch`` is ``batch``), so the
    simulator may see their requests a second time; only requests whose first batch expired
    without answering them may be uploaded twice (an unanswered line is not billed)."""
    rig = Rig(tmp_path, pg_url, sims(batch_complete_s=2.0, batch_expire_s=0.5))
    _killed(rig.run_job(boot=KILL_BEFORE_SYNC_RETRY))
    job_id = rig.only_job()
    with session_scope(rig.db_url) as s:
        answered = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id == job_id))
        settled = s.scalar(select(func.count()).select_from(ProviderBatch).where(ProviderBatch.state == "settled"))
    assert settled >= 1 and answered < N
    rig.time_passes_for_preparing()
    st = rig.resume(job_id)
    assert st["status"] == "completed", st
    numbers = check_ledger(rig, job_id, max_uploaded_twice=N - answered)
    assert 0 < numbers["via_batch"] < N, numbers


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_two_crashes_leave_two_preparing_batches_of_the_same_size(tmp_path: Path, pg_url: str, sims, kind: str) -> None:
    """A: the run dies after recording batch A, before uploading it. B: the resume that follows
    (within A's lease) dies right after uploading batch B, of the same size. The next resume
    reconciles both: A is not at the provider (upload it), B is (adopt it)."""
    rig = Rig(tmp_path, pg_url, sims(), kind, batch_max_requests=10)
    _killed(rig.run_job(boot=KILL_BEFORE_UPLOAD))
    job_id = rig.only_job()
    _killed(rig.cli("resume", job_id, "--json", boot=KILL_AFTER_UPLOAD))
    with session_scope(rig.db_url) as s:
        pbs = s.execute(
            select(ProviderBatch.id, ProviderBatch.state, ProviderBatch.request_count).order_by(ProviderBatch.created_at)
        ).all()
    assert [p.state for p in pbs] == ["preparing", "preparing"] and pbs[0].request_count == pbs[1].request_count == 10, pbs
    assert rig.stats()["batch_requests_uploaded"] == 10  # B only
    assert rig.time_passes_for_preparing() == 2
    st = rig.resume(job_id)
    assert st["status"] == "completed", st
    numbers = check_ledger(rig, job_id)
    assert numbers["via_batch"] == N and numbers["sim"]["distinct_requests_uploaded"] == N, numbers


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_job_cancelled_before_its_batch_was_uploaded_uploads_nothing(tmp_path: Path, pg_url: str, sims, kind: str) -> None:
    """SIGKILL after the ``preparing`` row, before the upload; then the job is cancelled and
    resumed. Resuming a ``cancelling`` job polled no batch, so the batch's items stayed
    ``sent`` with their holds open and the job stayed ``cancelling``; and the poll's
    reconcile, had it run, would have uploaded the batch of a cancelled job."""
    rig = Rig(tmp_path, pg_url, sims(), kind)
    _killed(rig.run_job(boot=KILL_BEFORE_UPLOAD))
    job_id = rig.only_job()
    cancel = rig.cli("cancel", job_id, "--json")
    assert cancel.returncode == 0, cancel.stderr
    assert rig.time_passes_for_preparing() == 1
    out = rig.cli("resume", job_id, "--json")
    st = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 1 and st["status"] == "cancelled", (st["status"], out.stderr)  # a cancelled job exits 1
    assert rig.stats()["batch_requests_uploaded"] == 0, "nothing goes out after the cancel"
    with session_scope(rig.db_url) as s:
        states = dict(s.execute(select(Item.state, func.count()).group_by(Item.state)).all())
        open_holds = s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open"))
        reserved = s.scalar(select(func.coalesce(func.sum(BudgetWindow.reserved_micro_usd), 0)))
        batch_states = {b.state for b in rig.batches()}
    assert "sent" not in states and states.get("cancelled", 0) > 0, states
    assert open_holds == 0 and reserved == 0
    assert "preparing" not in batch_states, batch_states
