"""Generate workers installed without the ``[score]`` extra (the Dockerfile's lean image,
``EXTRAS=``), on real Redis, Postgres and Celery workers: every step that rides the generate
queue (routing, a pilot's end, generation, finalizing) must run without torch, transformers,
model2vec or scipy. Issue 11: an ``--adapt`` job's ``adapt`` step rides the score queue, so
the sample is chosen, judged and fitted there; before, the job hung on the generate worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from jobs.ledger.models import Attempt, Item, Judgement
from tests.chaos.harness import (  # noqa: F401 - fixtures
    Cluster,
    check_ledger,
    job_state,
    private_redis,
    sim,
    wait_for,
    write_config,
    write_prompts,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

N = 200


def _data(tmp: Path) -> tuple[Path, Path]:
    data, labels = tmp / "in.jsonl", tmp / "labels.jsonl"
    with data.open("w") as fh, labels.open("w") as lb:
        for i in range(N):
            hard = i % 3 == 0
            prompt = f"prove theorem {i} rigorously" if hard else f"say hello to person {i}"
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": prompt}) + "\n")
            lb.write(json.dumps({"prompt": prompt, "strong": 1.0, "weak": 0.0 if hard else 1.0}) + "\n")
    return data, labels


@pytest.fixture
def cluster(tmp_path, pg_url, private_redis, sim):  # noqa: F811 - fixtures
    cfg = write_config(tmp_path / "routebatch.toml", sim.base_url, chunk_size=20, router="random:seed=3")
    c = Cluster(tmp_path, pg_url, private_redis.url, cfg)
    c.cli("db", "upgrade")
    yield c
    c.stop_all()


def test_an_adapting_job_completes_with_lean_generate_workers(cluster, sim, tmp_path) -> None:  # noqa: F811
    cluster.start_worker("score")
    cluster.start_worker("generate", "--concurrency", "2", "--import", "tests.chaos.lean_worker")
    data, labels = _data(tmp_path)
    st = cluster.cli_json(
        "submit", str(data), "--strong-share", "0.4", "--adapt", "0.15", "--adapt-min", "20", "--judge", f"labels:{labels}"
    )
    job_id = st["job_id"]
    try:
        wait_for(lambda: job_state(cluster.db_url, job_id) in ("completed", "failed"), 90, what="job ended")
    except Exception:
        pytest.fail(cluster.logs())
    assert job_state(cluster.db_url, job_id) == "completed", cluster.logs()
    status = cluster.cli_json("status", job_id)
    assert status["succeeded"] == N and status["adaptation"]["stage"] == "adapted"
    assert status["quality_vs_strong"] is not None
    engine = create_engine(cluster.db_url)
    try:
        with Session(engine) as s:
            judged = set(s.scalars(select(Judgement.item_id).where(Judgement.job_id == job_id)))
            answered = s.execute(
                select(Attempt.item_id, Attempt.model, func.count())
                .where(Attempt.job_id == job_id, Attempt.status_code == 200, Attempt.error_class.is_(None))
                .group_by(Attempt.item_id, Attempt.model)
            ).all()
            prompts = dict(s.execute(select(Item.id, Item.prompt).where(Item.job_id == job_id)).all())
    finally:
        engine.dispose()
    assert len(judged) == round(0.15 * N)
    # One answer per item and model: the sample has its strong answer and its weak twin, the
    # rest one answer; the provider was called exactly that often (nothing sent twice).
    assert all(n == 1 for *_, n in answered)
    models = {i: {m for j, m, _ in answered if j == i} for i in prompts}
    assert all(models[i] == {"sim-strong", "sim-weak"} for i in judged)
    assert all(len(models[i]) == 1 for i in prompts if i not in judged)
    assert all(sim.calls[p] == len(models[i]) for i, p in prompts.items())
    logs = cluster.logs()
    assert "ModuleNotFoundError" not in logs and "routebatch.adapt[" in logs


def test_a_budget_allocated_job_completes_with_lean_generate_workers(cluster, sim, tmp_path) -> None:  # noqa: F811
    """``--allocate budget``: its pilot ends on a generate worker, which then routes the rest."""
    cluster.start_worker("score")
    cluster.start_worker("generate", "--concurrency", "2", "--import", "tests.chaos.lean_worker")
    data = write_prompts(tmp_path / "p.jsonl", N)
    st = cluster.cli_json("submit", str(data), "--allocate", "budget", "--budget-usd", "0.05")
    job_id = st["job_id"]
    try:
        wait_for(lambda: job_state(cluster.db_url, job_id) in ("completed", "failed"), 90, what="job ended")
    except Exception:
        pytest.fail(cluster.logs())
    report = check_ledger(cluster.db_url, job_id, sim)
    assert report["succeeded"] == N and report["duplicate_calls"] == 0
    status = cluster.cli_json("status", job_id)
    assert status["strong_calls"] > 0 and status["cost_usd"] <= 0.05
    assert any("a pilot of" in n for n in status["notes"])  # the rest was routed where the pilot ended
    assert "ModuleNotFoundError" not in cluster.logs()
