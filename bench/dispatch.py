"""Provider dispatch benchmark: requests/s against a 200 ms simulated provider.

For each concurrency C the ceiling is C / latency (e.g. 64 / 0.2 s = 320 requests/s); the
script prints what was achieved, the ratio to that ceiling, and CPU-ms per request of the
client and of the simulated provider (a separate process on the same machine).

Two modes:
  pool      ProviderPool.complete() alone, C workers pulling from one counter.
  generate  the real generate path: a job submitted and run inline (routing, budget
            admission, provider calls, attempts + items recorded) with the ledger on
            Postgres; the rate is attempts / (last finish - first start) from the ledger.

    .venv/bin/python bench/dispatch.py [--mode pool|generate|both] [--levels 64,256,1024]
        [--latency-ms 200] [--requests N] [--database-url postgresql+psycopg://...]

Target (issue 3): >= 80% of the ceiling up to at least 1,000 requests/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


class SimProcess:
    """``routebatch sim-provider`` in its own process; CPU time read with psutil."""

    def __init__(self, latency_ms: float) -> None:
        cmd = [sys.executable, "-m", "jobs.cli", "sim-provider", "--port", "0", "--latency-ms", str(latency_ms), "--json"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.base_url = json.loads(line)["base_url"]
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def sim_config(concurrency: int, base_url: str, chunk_size: int = 500):
    from jobs.config import parse_config

    return parse_config({
        "providers": {"sim": {"base_url": base_url, "concurrency": concurrency, "timeout_s": 30}},
        "models": {
            "sim-strong": {"provider": "sim", "input_usd_per_mtok": 10, "output_usd_per_mtok": 30},
            "sim-weak": {"provider": "sim", "input_usd_per_mtok": 0.6, "output_usd_per_mtok": 0.6},
        },
        "defaults": {"strong": "sim-strong", "weak": "sim-weak", "router": "random", "max_tokens": 64,
                     "chunk_size": chunk_size},
    })


def bench_pool(c: int, n: int, sim: SimProcess, loop: str = "asyncio") -> dict:
    from jobs.providers import ChatRequest, ProviderPool

    cfg = sim_config(c, sim.base_url)
    latencies: list[int] = []

    async def go() -> tuple[float, int]:
        pool = ProviderPool(cfg)
        counter = iter(range(n))
        ok = 0
        # warm the connections so the measured part is steady state
        await asyncio.gather(*(pool.complete(ChatRequest("w", "sim-weak", [{"role": "user", "content": "w"}], 8))
                               for _ in range(c)))

        async def worker() -> None:
            nonlocal ok
            for i in counter:
                r = await pool.complete(ChatRequest(str(i), "sim-weak" if i % 2 else "sim-strong",
                                                    [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}], 64))
                ok += r.ok
                latencies.append(r.attempts[-1].latency_ms)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        dt = time.perf_counter() - t0
        await pool.aclose()
        return dt, ok

    s0, c0 = sim.cpu_s(), time.process_time()
    if loop == "uvloop":
        import uvloop

        dt, ok = uvloop.run(go())
    else:
        dt, ok = asyncio.run(go())
    client_cpu, server_cpu = time.process_time() - c0, sim.cpu_s() - s0
    latencies.sort()
    return {"mode": f"pool/{loop}", "C": c, "requests": n, "ok": ok, "seconds": dt, "rps": n / dt,
            "client_cpu_ms": 1000 * client_cpu / n, "server_cpu_ms": 1000 * server_cpu / n,
            "p50_ms": latencies[len(latencies) // 2], "p99_ms": latencies[int(len(latencies) * 0.99)]}


def bench_generate(c: int, n: int, sim: SimProcess, database_url: str) -> dict:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from jobs.lifecycle import service
    from jobs.ledger.migrate import upgrade
    from jobs.ledger.session import dispose_all
    from jobs.runtime import Runtime
    from jobs.settings import Settings

    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    name = f"rb_dispatch_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "prompts.jsonl"
    with data.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"r{i}", "prompt": f"Question {i}: what is {i} + {i}?"}) + "\n")
    try:
        upgrade(url)
        # one chunk holds several rounds of C requests, so chunk boundaries do not idle the pool
        rt = Runtime(Settings(database_url=url, broker_url=None), sim_config(c, sim.base_url, chunk_size=max(4 * c, 2000)))
        s0, c0 = sim.cpu_s(), time.process_time()
        t0 = time.perf_counter()
        st = service.run(rt, service.JobSpec(input_file=str(data), router="random", strong_share=0.5))
        wall = time.perf_counter() - t0
        client_cpu, server_cpu = time.process_time() - c0, sim.cpu_s() - s0
        eng = create_engine(url)
        with eng.connect() as conn:
            cnt, first, last = conn.execute(text("SELECT count(*), min(started_at), max(finished_at) FROM attempts")).one()
        eng.dispose()
        rt.close()
        dispose_all()
        span = (last - first).total_seconds()
        return {"mode": "generate", "C": c, "requests": cnt, "ok": st.succeeded, "seconds": span,
                "rps": cnt / span, "wall_s": wall, "client_cpu_ms": 1000 * client_cpu / cnt,
                "server_cpu_ms": 1000 * server_cpu / cnt}
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["pool", "generate", "both"], default="both")
    ap.add_argument("--levels", default="64,256,1024")
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--requests", type=int, default=0, help="per level; default max(25 x C, 3000): enough rounds that the last, partly filled one does not matter")
    ap.add_argument("--database-url", default=os.environ.get("ROUTEBATCH_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="client event loop (pool mode)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    modes = ["pool", "generate"] if args.mode == "both" else [args.mode]
    sim = SimProcess(args.latency_ms)
    rows = []
    try:
        for mode in modes:
            for c in (int(x) for x in args.levels.split(",")):
                n = args.requests or max(25 * c, 3000)
                r = bench_pool(c, n, sim, args.loop) if mode == "pool" else bench_generate(c, n, sim, args.database_url)
                r["limit_rps"] = c / (args.latency_ms / 1000)
                r["ratio"] = r["rps"] / r["limit_rps"]
                rows.append(r)
                if args.json:
                    print(json.dumps(r), flush=True)
                else:
                    print(f"{r['mode']:13s} C={c:5d}  {r['rps']:7.0f} req/s of {r['limit_rps']:6.0f} ({100 * r['ratio']:5.1f}%)"
                          f"  cpu-ms/req client {r['client_cpu_ms']:.3f} server {r['server_cpu_ms']:.3f}"
                          f"  n={r['requests']} ok={r['ok']}  load={os.getloadavg()[0]:.1f}", flush=True)
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
