"""Issue 12 item 3, distributed: with ``--threshold`` a generate worker calls the provider
while the score worker is still scoring the job's other chunks (real Redis, Postgres and
Celery workers; a slow test router keeps scoring busy for a few seconds)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

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

N, CHUNK = 200, 20  # 10 chunks; the slow router takes 0.02 s a prompt: 0.4 s a chunk, 4 s in all


@pytest.fixture
def cluster(tmp_path, pg_url, private_redis, sim):  # noqa: F811 - fixtures
    cfg = write_config(tmp_path / "routebatch.toml", sim.base_url, chunk_size=CHUNK, router="slow:delay=0.02")
    c = Cluster(tmp_path, pg_url, private_redis.url, cfg)
    c.imports = ("tests.chaos.slowrouter",)
    c.cli("db", "upgrade")
    yield c
    c.stop_all()


def test_a_threshold_job_is_generated_while_it_is_still_being_scored(cluster, sim, tmp_path) -> None:  # noqa: F811
    cluster.start_worker("score", "--import", "tests.chaos.slowrouter")
    cluster.start_worker("generate", "--concurrency", "1")
    st = cluster.cli_json("submit", str(write_prompts(tmp_path / "p.jsonl", N)), "--threshold", "0.3")
    job_id = st["job_id"]
    # Answers arrive while items are still pending scoring: generation did not wait for the job.
    seen: dict[str, int] = {}

    def answered_while_scoring() -> bool:
        seen.update(job_counts(cluster.db_url, job_id))
        return seen.get("succeeded", 0) > 0 and seen.get("pending", 0) > 0

    try:
        wait_for(answered_while_scoring, 60, every=0.1, what="an answer while chunks are still pending")
    except Exception:
        pytest.fail(f"{seen}\n{cluster.logs()}")
    wait_for(lambda: job_state(cluster.db_url, job_id) == "completed", 90, what="job completed")
    report = check_ledger(cluster.db_url, job_id, sim)
    assert report["succeeded"] == N and report["duplicate_calls"] == 0
    engine = create_engine(cluster.db_url)
    try:
        with engine.connect() as c:
            notes = c.execute(text("SELECT message FROM ledger_events WHERE job_id = :j AND kind = 'job_note'"), {"j": job_id})
            assert [r[0] for r in notes] == ["streaming: fixed threshold 0.3, chunks are generated as they are scored"]
            thresholds = c.execute(text("SELECT DISTINCT threshold FROM items WHERE job_id = :j"), {"j": job_id}).all()
            assert [r[0] for r in thresholds] == [0.3]
    finally:
        engine.dispose()
