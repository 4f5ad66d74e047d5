"""Distributed throughput: items/s end to end with 1 and 2 generate workers, and the
enqueue rate of ``submit`` for a million items.

Real processes throughout: a private redis-server, a fresh database on the local Postgres,
``routebatch sim-provider`` as its own process (fixed latency), and ``routebatch worker``
subprocesses (one score worker; N generate workers of one pool process each). Workers are
started and ready before the clock starts, so the numbers are the steady pipeline:
submit -> score -> route -> generate -> finalize.

    .venv/bin/python bench/scale.py                       # both parts
    .venv/bin/python bench/scale.py --submit-lines 0      # throughput only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.chaos.harness import Cluster, PrivateRedis, free_port, wait_for, write_config, write_prompts  # noqa: E402

PG_ADMIN = os.environ.get("ROUTEBATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def create_db() -> tuple[str, str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"rb_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_db(name: str) -> None:
    from sqlalchemy import create_engine, text

    from jobs.ledger.session import dispose_all

    dispose_all()
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def wait_ready(proc) -> None:
    wait_for(lambda: " ready." in Path(proc.log_path).read_text(errors="replace"), 60, what="worker ready")


def generation_window(db_url: str, job_id: str) -> tuple[float, float]:
    """Seconds from the first provider call to the job's completion, and the whole job."""
    from sqlalchemy import func, select

    from jobs.ledger.models import Attempt, Job
    from jobs.ledger.session import session_scope

    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        first = s.scalar(select(func.min(Attempt.started_at)).where(Attempt.job_id == job_id))
        return (job.completed_at - first).total_seconds(), (job.completed_at - job.in_progress_at).total_seconds()


def throughput(tmp: Path, db_url: str, redis_url: str, sim_url: str, workers: int, args) -> dict:
    cfg = write_config(tmp / "rb.toml", sim_url, chunk_size=args.chunk_size, concurrency=args.concurrency)
    cluster = Cluster(tmp, db_url, redis_url, cfg, extra_env={"ROUTEBATCH_STALL_S": "600", "ROUTEBATCH_REAPER_INTERVAL_S": "30"})
    data = write_prompts(tmp / f"items-{workers}.jsonl", args.items)
    try:
        procs = [cluster.start_worker("score", name=f"score-{workers}")]
        procs += [cluster.start_worker("generate", "--concurrency", "1", name=f"gen{i}-{workers}") for i in range(workers)]
        for p in procs:
            wait_ready(p)
        t0 = time.perf_counter()
        job_id = cluster.cli_json("submit", str(data))["job_id"]
        t_submit = time.perf_counter() - t0
        from tests.chaos.harness import job_state

        wait_for(lambda: job_state(db_url, job_id) == "completed", 600, every=0.1, what="job completed")
        wall = time.perf_counter() - t0
        gen_s, job_s = generation_window(db_url, job_id)
    finally:
        cluster.stop_all()
    return {
        "generate_workers": workers,
        "items": args.items,
        "submit_s": round(t_submit, 2),
        "wall_s": round(wall, 2),
        "items_per_s_end_to_end": round(args.items / wall, 1),
        "items_per_s_generation": round(args.items / gen_s, 1),
        "job_in_progress_s": round(job_s, 2),
    }


class TimedQueue:
    """Wraps the Celery queue to time the enqueue part of submit on its own."""

    def __init__(self, inner) -> None:
        self.inner, self.n, self.seconds = inner, 0, 0.0

    def enqueue(self, task, job_id, chunk=None) -> None:
        t = time.perf_counter()
        self.inner.enqueue(task, job_id, chunk)
        self.seconds += time.perf_counter() - t
        self.n += 1


def submit_million(tmp: Path, db_url: str, redis_url: str, lines: int, chunk_size: int) -> dict:
    from jobs.config import BUILTIN_CONFIG, parse_config
    from jobs.runtime import Runtime
    from jobs.lifecycle.service import JobSpec, submit
    from jobs.settings import Settings
    from worker.queue import CeleryQueue

    path = Path(tempfile.gettempdir()) / f"rb-bench-{lines}.jsonl"
    if not path.exists():
        write_prompts(path, lines)
    settings = Settings(database_url=db_url, broker_url=redis_url)
    rt = Runtime(settings, parse_config(BUILTIN_CONFIG))
    queue = TimedQueue(CeleryQueue(settings))
    queue.inner.enqueue("finalize", "warm-up")  # connect before the clock starts
    t0 = time.perf_counter()
    submit(rt, JobSpec(input_file=str(path), chunk_size=chunk_size), queue)
    total = time.perf_counter() - t0
    import redis

    waiting = redis.Redis.from_url(redis_url).llen("score")
    return {
        "lines": lines,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "chunk_size": chunk_size,
        "messages": queue.n,
        "messages_in_redis": waiting,
        "submit_s": round(total, 2),
        "items_per_s_submit": round(lines / total),
        "enqueue_s": round(queue.seconds, 3),
        "messages_per_s_enqueue": round(queue.n / queue.seconds) if queue.seconds else None,
        "items_per_s_enqueue": round(lines / queue.seconds) if queue.seconds else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--chunk-size", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=32, help="provider concurrency per worker process")
    ap.add_argument("--submit-lines", type=int, default=1_000_000)
    ap.add_argument("--submit-chunk-size", type=int, default=500)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rb-scale-"))
    redis_srv = PrivateRedis(tmp).start()
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "sim-provider", "--port", str(port), "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    sim_url = f"http://127.0.0.1:{port}/v1"
    import httpx

    wait_for(lambda: httpx.get(sim_url + "/models").status_code == 200, 30, what="sim-provider")
    name, db_url = create_db()
    results: dict = {"machine": f"{os.cpu_count()} CPUs", "latency_ms": args.latency_ms, "concurrency": args.concurrency}
    try:
        Cluster(tmp, db_url, redis_srv.url, write_config(tmp / "rb.toml", sim_url)).cli("db", "upgrade")
        runs = [throughput(tmp, db_url, redis_srv.url, sim_url, n, args) for n in (1, 2)]
        results["throughput"] = runs
        results["ratio_2_vs_1_generation"] = round(runs[1]["items_per_s_generation"] / runs[0]["items_per_s_generation"], 2)
        results["ratio_2_vs_1_end_to_end"] = round(runs[1]["items_per_s_end_to_end"] / runs[0]["items_per_s_end_to_end"], 2)
        latency_bound = args.concurrency / (args.latency_ms / 1000.0)
        results["latency_bound_items_per_s_per_worker"] = latency_bound
        if args.submit_lines:
            results["submit"] = submit_million(tmp, db_url, redis_srv.url, args.submit_lines, args.submit_chunk_size)
    finally:
        sim.terminate()
        sim.wait(10)
        redis_srv.kill()
        drop_db(name)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
