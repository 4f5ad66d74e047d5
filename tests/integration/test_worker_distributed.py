"""Distributed execution with real processes: Celery workers as subprocesses, a private
Redis, the shared Postgres (own database), and the simulated provider in a thread."""

from __future__ import annotations

import json
import time

import pytest

from tests.chaos.harness import (  # noqa: F401 - fixtures
    Cluster,
    check_ledger,
    job_counts,
    job_state,
    private_redis,
    sim,
    wait_for,
    write_config,
    write_prompts,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


@pytest.fixture
def cluster(tmp_path, pg_url, private_redis, sim):
    c = Cluster(tmp_path, pg_url, private_redis.url, write_config(tmp_path / "routebatch.toml", sim.base_url))
    c.cli("db", "upgrade")
    yield c
    c.stop_all()


def test_submit_then_workers_complete_the_job(cluster, sim, tmp_path):
    cluster.start_worker("score")
    cluster.start_worker("generate", "--concurrency", "2")
    st = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 200)))
    assert st["status"] == "in_progress" and st["total"] == 200
    # `status --watch --json` streams one line per change and returns when the job ends.
    out = cluster.cli("status", st["job_id"], "--watch", "--json", "--interval", "0.3", timeout=90, check=False)
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    if not lines or lines[-1]["status"] != "completed":
        pytest.fail(f"{job_counts(cluster.db_url, st['job_id'])}\n{out.stderr}\n{cluster.logs()}")
    assert len(lines) >= 2 and lines[-1]["succeeded"] == 200
    report = check_ledger(cluster.db_url, st["job_id"], sim)
    assert report["succeeded"] == 200 and report["duplicate_calls"] == 0
    final = cluster.cli_json("status", st["job_id"])
    assert final["strong_calls"] + final["weak_calls"] == 200


def test_cancel_stops_provider_calls_across_workers_within_seconds(cluster, sim, tmp_path):
    for _ in range(2):
        cluster.start_worker("generate", "--concurrency", "1")
    cluster.start_worker("score")
    st = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 1500)))
    job_id = st["job_id"]
    wait_for(lambda: job_counts(cluster.db_url, job_id).get("succeeded", 0) >= 60, 60, what="first answers")
    cancelled = cluster.cli_json("cancel", job_id)
    t_cancel = time.monotonic()
    assert cancelled["status"] in ("cancelling", "cancelled")
    # In-flight calls finish (200 ms latency); after the poll interval no new call starts.
    time.sleep(2.5)
    calls_after = sim.total()
    time.sleep(2.0)
    assert sim.total() == calls_after, "provider calls kept starting more than 2.5 s after cancel"
    wait_for(lambda: job_state(cluster.db_url, job_id) == "cancelled", 30, what="job cancelled")
    report = check_ledger(cluster.db_url, job_id, sim, expect_state="cancelled")
    counts = job_counts(cluster.db_url, job_id)
    assert counts.get("cancelled", 0) > 0 and report["succeeded"] < 1500
    assert time.monotonic() - t_cancel < 60


def test_a_workers_metrics_port_shows_the_counters_moving_during_the_job(cluster, sim, tmp_path):
    """Issue 15: ``curl localhost:PORT/metrics`` during a distributed job shows the counters move."""
    import socket

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def attempts() -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        return sum(
            sample.value
            for fam in text_string_to_metric_families(text)
            for sample in fam.samples
            if sample.name == "routebatch_attempts_total"
        )

    cluster.start_worker("score")
    cluster.start_worker("generate", "--concurrency", "1", "--metrics-port", str(port))
    wait_for(lambda: attempts() is not None, 60, every=0.2, what="the worker's /metrics")
    job_id = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 300)))["job_id"]
    seen: list[float] = []
    deadline = time.monotonic() + 90
    while job_state(cluster.db_url, job_id) != "completed" and time.monotonic() < deadline:
        got = attempts()
        if got is not None and (not seen or got != seen[-1]):
            seen.append(got)
        time.sleep(0.1)
    assert job_state(cluster.db_url, job_id) == "completed", cluster.logs()
    assert len(seen) >= 3 and seen == sorted(seen), f"attempt counter while the job ran: {seen}"
    assert 0 < seen[1] < 300, "a scrape in the middle of the job saw part of it"
    assert attempts() == 300


def test_a_batch_dispatched_job_is_polled_and_settled_by_the_workers(cluster, sim, tmp_path):
    """Issue 14 in distributed mode: the generate worker uploads provider batches, the ``poll``
    step comes back through Celery's countdown until they end, and settles them."""
    from sqlalchemy import func, select

    from jobs.ledger.models import Attempt, ProviderBatch
    from jobs.ledger.session import session_scope

    text = cluster.config.read_text()
    cluster.config.write_text(
        text.replace("timeout_s = 30\n", 'timeout_s = 30\ndispatch = "batch"\nbatch_poll_s = 0.3\nbatch_poll_max_s = 1.0\n', 1)
    )
    cluster.start_worker("score")
    cluster.start_worker("generate", "--concurrency", "1")
    job_id = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", 200)))["job_id"]
    wait_for(lambda: job_state(cluster.db_url, job_id) == "completed", 90, what="the batch job completed")
    with session_scope(cluster.db_url) as s:
        states = set(s.scalars(select(ProviderBatch.state).where(ProviderBatch.job_id == job_id)))
        via_batch = s.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.job_id == job_id, Attempt.provider_batch_id.is_not(None))
        )
    assert states == {"settled"} and via_batch == 200
    final = cluster.cli_json("status", job_id)
    assert final["succeeded"] == 200 and {pb["state"] for pb in final["provider_batches"]} == {"settled"}
