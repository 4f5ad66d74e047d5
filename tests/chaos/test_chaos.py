"""Kill things mid-job and check that the job still completes with a clean ledger.

Each test: real Redis, real Postgres, workers as subprocesses, the simulated provider
with latency. After the failure the job must complete, every item must be terminal, no
item may succeed twice, attempt costs must add up to item costs, and every call the
provider saw must be in the ledger (``check_ledger``). Recovery is by the reaper that the
workers run (leases of 15 s, stall detection after 5 s: ``harness.FAST_SETTINGS``) or by
``routebatch resume``. Run alone: ``pytest -m chaos tests/chaos``.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.chaos.harness import (
    Cluster,
    attempt_count,
    CountingSim,
    PrivatePostgres,
    check_ledger,
    job_counts,
    job_state,
    wait_for,
    write_config,
    write_prompts,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

BUDGET = ("--budget-usd", "50")  # far above the cost: reserve/settle runs around every call


def _finish(cluster: Cluster, job_id: str, timeout: float = 75) -> None:
    try:
        wait_for(lambda: job_state(cluster.db_url, job_id) == "completed", timeout, every=0.5, what="job completed")
    except TimeoutError:
        pytest.fail(f"job did not complete: {job_counts(cluster.db_url, job_id)}\n{cluster.logs()}")


def _report(name: str, report: dict, seconds: float) -> None:
    print(f"\nCHAOS {name}: {json.dumps({**report, 'seconds': round(seconds, 1)})}")


def test_sigkill_generate_worker_mid_job(tmp_path, pg_url, private_redis, sim):
    cluster = Cluster(tmp_path, pg_url, private_redis.url, write_config(tmp_path / "rb.toml", sim.base_url, chunk_size=20))
    cluster.cli("db", "upgrade")
    try:
        cluster.start_worker("score")
        # The victim is the only generate worker, so every 'sent' item is one of its calls.
        victim = cluster.start_worker("generate", "--concurrency", "1", name="victim")
        t0 = time.monotonic()
        job_id = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 400)), *BUDGET)["job_id"]
        # Kill once the provider has received calls whose answers are not recorded yet:
        # those calls are made but their outcome is lost with the worker.
        wait_for(
            lambda: (c := job_counts(cluster.db_url, job_id)).get("succeeded", 0) >= 60
            and c.get("sent", 0) > 0
            and sim.total() > c.get("succeeded", 0) + c.get("failed", 0),
            60,
            every=0.02,
            what="the victim's calls at the provider",
        )
        cluster.kill(victim, signal.SIGKILL)  # the whole process group: pool child and parent
        in_flight_at_kill = job_counts(cluster.db_url, job_id).get("sent", 0)
        unrecorded_calls = sim.total() - attempt_count(cluster.db_url, job_id)  # made, answer lost with the worker
        cluster.start_worker("generate", "--concurrency", "1", name="replacement")
        _finish(cluster, job_id)
        report = check_ledger(cluster.db_url, job_id, sim)
        _report(
            "sigkill-generate",
            {**report, "sent_at_kill": in_flight_at_kill, "unrecorded_calls": unrecorded_calls},
            time.monotonic() - t0,
        )
        assert report["succeeded"] == 400
        # Under a budget only calls that may have gone out are charged as lost (at most the
        # provider's concurrency, 16, can be in flight); the claimed items the victim had
        # not handed to a provider go back without an attempt or a charge.
        assert unrecorded_calls <= report["lost_in_flight"] <= 16 < in_flight_at_kill
        assert report["duplicate_calls"] > 0  # calls made twice, each one in the ledger (check_ledger)
    finally:
        cluster.stop_all()


def test_sigkill_score_worker_mid_chunk(tmp_path, pg_url, private_redis, sim):
    cfg = write_config(tmp_path / "rb.toml", sim.base_url, chunk_size=20, router="slow:delay=0.05")
    cluster = Cluster(tmp_path, pg_url, private_redis.url, cfg, imports=("tests.chaos.slowrouter",))
    cluster.cli("db", "upgrade")
    plugin = ("--import", "tests.chaos.slowrouter")
    try:
        victim = cluster.start_worker("score", *plugin, name="score-victim")
        cluster.start_worker("generate", "--concurrency", "1", *plugin)
        t0 = time.monotonic()
        job_id = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 200)), *BUDGET)["job_id"]
        # A chunk takes 1 s to score: kill after the first chunk is written, mid-way through another.
        wait_for(lambda: 20 <= 200 - job_counts(cluster.db_url, job_id).get("pending", 200) <= 100, 60, every=0.05, what="first chunk scored")
        time.sleep(0.5)
        cluster.kill(victim, signal.SIGKILL)
        pending_at_kill = job_counts(cluster.db_url, job_id).get("pending", 0)
        cluster.start_worker("score", *plugin, name="score-replacement")
        _finish(cluster, job_id)
        report = check_ledger(cluster.db_url, job_id, sim)
        _report("sigkill-score", {**report, "pending_at_kill": pending_at_kill}, time.monotonic() - t0)
        assert pending_at_kill > 0 and report["succeeded"] == 200 and report["duplicate_calls"] == 0
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("recovery", ["resume", "reaper"])
def test_redis_restart_mid_job(tmp_path, pg_url, private_redis, sim, recovery):
    cluster = Cluster(tmp_path, pg_url, private_redis.url, write_config(tmp_path / "rb.toml", sim.base_url, chunk_size=20))
    cluster.cli("db", "upgrade")
    try:
        cluster.start_worker("score")
        cluster.start_worker("generate", "--concurrency", "1")
        t0 = time.monotonic()
        job_id = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 400)), *BUDGET)["job_id"]
        wait_for(lambda: job_counts(cluster.db_url, job_id).get("succeeded", 0) >= 60, 60, every=0.05, what="generation under way")
        private_redis.restart(down_s=1.0)  # no persistence: every queued chunk is gone
        routed_after = job_counts(cluster.db_url, job_id).get("routed", 0)
        if recovery == "resume":
            resumed = cluster.cli_json("resume", job_id)  # re-enqueues every non-terminal item
            assert resumed["status"] == "in_progress"
        # else: the workers' reaper sees the job silent for ROUTEBATCH_STALL_S with empty
        # queues and re-enqueues its open chunks by itself.
        _finish(cluster, job_id)
        report = check_ledger(cluster.db_url, job_id, sim)
        _report(f"redis-restart+{recovery}", {**report, "routed_after_restart": routed_after}, time.monotonic() - t0)
        assert routed_after > 0 and report["succeeded"] == 400
    finally:
        cluster.stop_all()


def test_postgres_restart_mid_job(tmp_path, private_redis):
    pg = PrivatePostgres(tmp_path).init()
    sim = CountingSim(latency_ms=200)
    cluster = Cluster(tmp_path, pg.url, private_redis.url, write_config(tmp_path / "rb.toml", sim.base_url, chunk_size=20))
    try:
        cluster.cli("db", "upgrade")
        cluster.start_worker("score")
        cluster.start_worker("generate", "--concurrency", "2")
        t0 = time.monotonic()
        job_id = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 400)), *BUDGET)["job_id"]
        wait_for(lambda: job_counts(cluster.db_url, job_id).get("succeeded", 0) >= 60, 60, every=0.05, what="generation under way")
        pg.restart(down_s=2.0)  # immediate stop: every connection is cut mid-transaction
        _finish(cluster, job_id, timeout=90)
        report = check_ledger(cluster.db_url, job_id, sim)
        _report("postgres-restart", report, time.monotonic() - t0)
        assert report["succeeded"] == 400
    finally:
        cluster.stop_all()
        sim.stop()
        from jobs.ledger.session import dispose_all

        dispose_all()
        pg.destroy()
