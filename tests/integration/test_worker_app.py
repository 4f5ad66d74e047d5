"""The Celery app, the queue routing and the worker launcher, without running a worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.settings import Settings
from tests.chaos.harness import private_redis  # noqa: F401 - fixture


def _settings(**kw) -> Settings:
    return Settings(database_url="sqlite://", broker_url="redis://127.0.0.1:1/0", **kw)


def test_app_is_configured_for_at_least_once_delivery():
    from worker.app import make_app, time_limits

    s = _settings(generate_time_limit_s=840, score_time_limit_s=600, send_lease_s=900)
    app = make_app(s)
    c = app.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.worker_prefetch_multiplier == 1
    assert c.result_backend is None and c.task_ignore_result
    assert {q.name for q in c.task_queues} == {"score", "generate"}
    assert c.task_routes["routebatch.score"] == {"queue": "score"}
    assert c.task_routes["routebatch.adapt"] == {"queue": "score"}  # it embeds: not on a lean generate worker
    assert c.task_routes["routebatch.judge"] == {"queue": "generate"}  # provider calls: not on a GPU worker
    assert all(c.task_routes[f"routebatch.{t}"] == {"queue": "generate"} for t in ("generate", "route", "finalize"))
    hard_limits = [time_limits(s, t)[1] for t in ("score", "generate", "route", "finalize")]
    assert c.broker_transport_options["visibility_timeout"] > max(hard_limits)
    gen = app.tasks["routebatch.generate"]
    assert gen.time_limit == 840 and gen.soft_time_limit < gen.time_limit < s.send_lease_s
    assert gen.acks_late and gen.reject_on_worker_lost and gen.autoretry_for


def test_worker_modules_do_not_import_torch():
    """No CUDA before fork: the worker side imports neither torch nor a router model."""
    code = (
        "import sys, worker.app, worker.tasks, worker.queue, worker.launch, worker.reaper_step, jobs.cli;"
        "from worker.app import make_app; from jobs.settings import Settings;"
        "make_app(Settings(broker_url='redis://127.0.0.1:1/0'));"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_score_uses_solo_and_generate_prefork():
    from worker.launch import worker_argv

    score = worker_argv("score", None, "INFO", "s@h")
    assert score[score.index("-P") + 1] == "solo" and score[score.index("-c") + 1] == "1"
    gen = worker_argv("generate", 3, "INFO", "g@h")
    assert gen[gen.index("-P") + 1] == "prefork" and gen[gen.index("-c") + 1] == "3"
    assert gen[gen.index("-Q") + 1] == "generate" and "-E" in gen
    with pytest.raises(ValueError):
        worker_argv("other", None, "INFO", None)


def test_one_score_process_per_gpu_each_seeing_only_its_device(monkeypatch):
    from worker import launch

    started = []

    class FakeChild:
        def __init__(self, cmd, env):
            started.append((cmd, env["CUDA_VISIBLE_DEVICES"]))

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(launch.subprocess, "Popen", FakeChild)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert launch.gpu_list("all") == ["2", "3"]
    assert launch.gpu_list("0, 1") == ["0", "1"]
    assert launch.run_per_gpu(["2", "3"], ["--loglevel", "INFO"]) == 0
    assert [gpu for _, gpu in started] == ["2", "3"]
    assert all(cmd[cmd.index("--queue") + 1] == "score" for cmd, _ in started)


def test_worker_without_broker_is_a_one_line_error(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ROUTEBATCH_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"}
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "worker", "--queue", "generate"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "ROUTEBATCH_BROKER_URL" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.integration
def test_celery_queue_routes_each_step_to_its_queue(private_redis):  # noqa: F811
    import redis

    from worker.queue import CeleryQueue

    q = CeleryQueue(Settings(database_url="sqlite://", broker_url=private_redis.url))
    assert q.backlog("score") == 0 and q.backlog("generate") == 0  # never declared yet: nothing waits
    for task in ("score", "score", "generate", "route", "finalize"):
        q.enqueue(task, "batch_x", 0 if task in ("score", "generate") else None)
    r = redis.Redis.from_url(private_redis.url)
    assert r.llen("score") == 2 and r.llen("generate") == 3
    assert q.backlog("score") == 2 and q.backlog("generate") == 3


def test_reaper_once_without_a_broker_repairs_and_runs_the_work_here(tmp_path):
    """`routebatch reaper --once` in embedded mode: re-sends lost items in this process."""
    import json

    from sqlalchemy import update

    from jobs.ledger.models import Item
    from jobs.ledger.session import session_scope
    from jobs.ledger.types import utcnow
    from tests.chaos.harness import write_prompts

    db = f"sqlite:///{tmp_path / 'l.db'}"
    env = {"PATH": "/usr/bin:/bin", "ROUTEBATCH_DATABASE_URL": db, "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "jobs.cli", *a], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)  # noqa: E731
    st = json.loads(run("run", str(write_prompts(tmp_path / "p.jsonl", 30)), "--json").stdout)
    with session_scope(db) as s:  # as if a worker died with 5 items on the wire
        s.execute(
            update(Item)
            .where(Item.job_id == st["job_id"], Item.id <= 5)
            .values(state="sent", lease_until=utcnow().replace(year=2000))
        )
        from jobs.ledger.models import Job

        # A job the workers ran (enqueued): the reaper only repairs those, never an embedded run's.
        s.execute(update(Job).where(Job.id == st["job_id"]).values(state="in_progress", phase="generating", enqueued=True))
    out = run("reaper", "--once", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["lost_in_flight"] == 5 and report["enqueued"] == 1
    final = json.loads(run("status", st["job_id"], "--json").stdout)
    assert final["status"] == "completed" and final["succeeded"] == 30
