"""Streaming pipeline (issue 12 item 3): end-to-end rate of `routebatch run`, and how soon the
first provider call starts when the routing rule lets chunks be generated as they are scored.

Two parts, each measured in one run of this script:

  throughput   `routebatch run` of N prompts (default 20,000, MMLU-style text from the test
               fixtures) in the embedded default (SQLite, built-in simulated provider at
               20 ms): the default router and the `length` router (no model), each with the
               default rule (exact strong share 0.5: all scored first) and with
               `--share-from-sample 2000` (streaming, the same share). Prints items/s end
               to end and the ratio of the model's run to `length` under the same rule.
               Targets: >= 1,000 items/s, ratio >= 0.7.
  first-call   a 100,000-item job with `--threshold T`: seconds from jobs.created_at to
               min(attempts.started_at), read from the ledger; embedded (`routebatch run`)
               and distributed (private Redis, a fresh Postgres database, one score and one
               generate worker, `routebatch sim-provider` at 20 ms). The job is killed or
               cancelled once its first call is recorded. Target: < 5 s.

    .venv/bin/python bench/streaming.py [--part throughput|first-call|all] [--items 20000]
        [--first-call-items 100000] [--router blend] [--threshold 0.5] [--no-distributed]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.chaos.harness import Cluster, PrivateRedis, free_port, wait_for, write_config  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "routellm_sample" / "mmlu"


def write_mmlu_like(path: Path, n: int) -> Path:
    """n distinct prompts: the fixture's MMLU questions, numbered so no two are equal."""
    prompts: list[str] = []
    for f in sorted(FIXTURES.glob("*.csv")):
        with f.open(newline="") as fh:
            prompts += [row["prompt"] for row in csv.DictReader(fh)]
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"c{i}", "prompt": f"{prompts[i % len(prompts)]} (#{i})"}) + "\n")
    return path


def embedded_env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEBATCH_")}
    env.update({"ROUTEBATCH_DATABASE_URL": f"sqlite:///{db}", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    return env


def ledger_first_call(db_url: str, job_id: str | None = None) -> dict:
    """Seconds from the job's creation to its first provider call (ledger timestamps)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            job = c.execute(
                text("SELECT id, created_at, in_progress_at, total FROM jobs" + (" WHERE id = :j" if job_id else "")),
                {"j": job_id} if job_id else {},
            ).first()
            first = c.execute(text("SELECT min(started_at) FROM attempts WHERE job_id = :j"), {"j": job[0]}).scalar()
    finally:
        engine.dispose()

    def ts(v):
        from datetime import datetime

        return datetime.fromisoformat(v) if isinstance(v, str) else v

    created, in_progress, first = ts(job[1]), ts(job[2]), ts(first)
    return {
        "job_id": job[0],
        "items": job[3],
        "created_to_in_progress_s": round((in_progress - created).total_seconds(), 2) if in_progress else None,
        "created_to_first_call_s": round((first - created).total_seconds(), 2) if first else None,
    }


def attempts_count(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM attempts")).scalar() or 0)
    except Exception:  # the schema is not there yet, or SQLite is busy for a moment
        return 0
    finally:
        engine.dispose()


# ---------------------------------------------------------------- throughput


def run_job(tmp: Path, data: Path, label: str, *args: str) -> dict:
    work = tmp / label
    work.mkdir()
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", str(data), "--json", *args],
        cwd=work,
        env=embedded_env(work / "routebatch.db"),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{label}: routebatch run failed:\n{out.stderr[-3000:]}")
    st = json.loads(out.stdout.strip().splitlines()[-1])
    n = st["total"]
    first = ledger_first_call(f"sqlite:///{work / 'routebatch.db'}", st["job_id"])
    return {
        "rule": label,
        "args": " ".join(args),
        "items": n,
        "status": st["status"],
        "wall_s": round(wall, 2),
        "items_per_s": round(n / wall, 1),
        "first_call_s": first["created_to_first_call_s"],
        "notes": st.get("notes"),
    }


def throughput(tmp: Path, items: int, router: str | None) -> dict:
    data = write_mmlu_like(tmp / f"p{items}.jsonl", items)
    own = ("--router", router) if router else ()
    warm = write_mmlu_like(tmp / "warm.jsonl", 50)  # load/build the embedder once, outside the clock
    run_job(tmp, warm, "warm-up", *own)
    # Each rule with both routers, so a ratio compares the same strong share and only the router differs.
    runs = []
    for label, rule in (("exact share", ()), ("share-from-sample", ("--share-from-sample", "2000"))):
        pair = [
            run_job(tmp, data, f"length, {label}", "--router", "length", *rule),
            run_job(tmp, data, f"model, {label}", *own, *rule),
        ]
        pair[0]["ratio_to_length"] = 1.0
        pair[1]["ratio_to_length"] = round(pair[1]["items_per_s"] / pair[0]["items_per_s"], 2)
        runs += pair
    return {"items": items, "router": router or "default (config)", "runs": runs}


# ---------------------------------------------------------------- first call


def first_call_embedded(tmp: Path, data: Path, router: str | None, threshold: float) -> dict:
    work = tmp / "first-embedded"
    work.mkdir()
    db = work / "routebatch.db"
    own = ["--router", router] if router else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "run", str(data), "--json", "--threshold", str(threshold), *own],
        cwd=work,
        env=embedded_env(db),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: attempts_count(f"sqlite:///{db}") > 0, 300, every=0.2, what="first attempt")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return {"mode": "embedded (SQLite)", **ledger_first_call(f"sqlite:///{db}")}


def first_call_distributed(tmp: Path, data: Path, router: str | None, threshold: float, latency_ms: float) -> dict:
    from bench.scale import create_db, drop_db, wait_ready

    redis_srv = PrivateRedis(tmp).start()
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "sim-provider", "--port", str(port), "--latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sim_url = f"http://127.0.0.1:{port}/v1"
    import httpx

    name, db_url = create_db()
    cluster = None
    try:
        wait_for(lambda: httpx.get(sim_url + "/models").status_code == 200, 30, what="sim-provider")
        cfg = write_config(tmp / "rb.toml", sim_url, chunk_size=500, concurrency=64, router=router or "blend")
        cluster = Cluster(tmp, db_url, redis_srv.url, cfg, extra_env={"ROUTEBATCH_PREFLIGHT": "0"})
        cluster.cli("db", "upgrade")
        procs = [cluster.start_worker("score"), cluster.start_worker("generate", "--concurrency", "1")]
        for p in procs:
            wait_ready(p)
        job_id = cluster.cli_json("submit", str(data), "--threshold", str(threshold), timeout=300)["job_id"]
        wait_for(lambda: attempts_count(db_url) > 0, 300, every=0.2, what="first attempt")
        result = {"mode": "distributed (Postgres + Redis + Celery workers)", **ledger_first_call(db_url, job_id)}
        cluster.cli("cancel", job_id, check=False)
        return result
    finally:
        if cluster is not None:
            cluster.stop_all()
        sim.terminate()
        sim.wait(10)
        redis_srv.kill()
        drop_db(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["throughput", "first-call", "all"], default="all")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--first-call-items", type=int, default=100_000)
    ap.add_argument("--router", default=None, help="router for the model runs (default: the config's, i.e. blend)")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="distributed part's sim-provider latency")
    ap.add_argument("--no-distributed", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rb-streaming-"))
    results: dict = {"machine": f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d")}
    if args.part in ("throughput", "all"):
        results["throughput"] = throughput(tmp, args.items, args.router)
        print(json.dumps(results["throughput"], indent=2), flush=True)
    if args.part in ("first-call", "all"):
        data = write_mmlu_like(tmp / f"p{args.first_call_items}.jsonl", args.first_call_items)
        first = [first_call_embedded(tmp, data, args.router, args.threshold)]
        print(json.dumps(first[-1], indent=2), flush=True)
        if not args.no_distributed:
            first.append(first_call_distributed(tmp, data, args.router, args.threshold, args.latency_ms))
            print(json.dumps(first[-1], indent=2), flush=True)
        results["first_call"] = {"target_s": 5.0, "runs": first}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
