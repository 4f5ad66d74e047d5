"""Ingestion benchmark: a 1,000,000-line JSONL into Postgres with flat memory.

Measured in one run, each into a fresh database:

- parse only: reading and validating the file, nothing written (the ceiling for a
  single-threaded reader);
- ingest: ``ingest_rows`` as ``run``/``submit`` call it (COPY straight into ``items``, the
  staging table only for batches with duplicate ``custom_id``s);
- the staging path alone (``direct_copy=False``: COPY into a temporary table, then
  ``INSERT ... SELECT ... ON CONFLICT``), the way every batch was written before;

and prints rows/s, the ratios to the 50,000 rows/s target, to the staging path and to
parse-only, and RSS at 10% of the rows and at the end (flat memory: about equal).
``--dup-every N`` makes every N-th line repeat an earlier ``custom_id`` (the fallback path).
``--sqlite`` adds the same ingest into a SQLite file (the embedded default).

    .venv/bin/python bench/ingest.py --lines 1000000 [--database-url postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

TARGET = 50_000
_JOB_SQL = (
    "INSERT INTO jobs (id, created_at, input_file, input_format, spec, router, strong_model, weak_model, state) "
    "VALUES ('bench', CURRENT_TIMESTAMP, 'x', 'jsonl', '{}', 'length', 's', 'w', 'validating')"
)


def make_file(path: Path, lines: int, bad_every: int = 10_000, dup_every: int = 0) -> None:
    with path.open("w") as fh:
        for i in range(lines):
            if bad_every and i % bad_every == bad_every - 1:
                fh.write('{"prompt": ""}\n')
                continue
            cid = f"req-{i - 1}" if dup_every and i % dup_every == dup_every - 1 else f"req-{i}"
            fh.write(json.dumps({"custom_id": cid, "prompt": f"Question {i}: explain topic {i % 997} in detail please."}) + "\n")


class RssSampler:
    """RSS when the ingest passes 10% of the rows and at its end."""

    def __init__(self, lines: int) -> None:
        self.proc = psutil.Process(os.getpid())
        self.marks = [max(1, lines // 10), lines]
        self.samples: list[tuple[int, float]] = []

    def __call__(self, valid: int, invalid: int) -> None:
        done = valid + invalid
        while self.marks and done >= self.marks[0]:
            self.marks.pop(0)
            self.samples.append((done, self.proc.memory_info().rss / 2**20))

    def finish(self, done: int) -> None:
        if self.marks:
            self.samples.append((done, self.proc.memory_info().rss / 2**20))


@dataclass
class Run:
    seconds: float
    report: Any
    client_cpu: float  # seconds of this process's CPU during the ingest
    server_cpu: float | None  # seconds of CPU of the Postgres backends of the bench database

    @property
    def rows(self) -> int:
        return self.report.valid + self.report.invalid

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    def ceiling(self) -> float | None:
        """Rows/s if the client and the server each had a core to themselves (CPU time is
        much less sensitive to other load than wall time)."""
        if self.server_cpu is None:
            return None
        return self.rows / max(self.client_cpu, self.server_cpu)

    def cpu_line(self) -> str:
        client = f"client {self.client_cpu / self.rows * 1e6:.1f} us/row"
        if self.server_cpu is None:
            return client
        return f"{client}, Postgres backend {self.server_cpu / self.rows * 1e6:.1f} us/row"


def _backend_cpu(url: str) -> float | None:
    """CPU seconds used so far by the Postgres backends connected to ``url``'s database
    (same machine only): a load-independent measure of the server's work per row."""
    if not url.startswith("postgresql"):
        return None
    probe = create_engine(url, poolclass=NullPool)  # its own backend, not the pooled one that ingested
    with probe.connect() as c:
        me = c.execute(text("SELECT pg_backend_pid()")).scalar()
        pids = c.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars().all()
    probe.dispose()
    total = 0.0
    for pid in pids:
        if pid == me:
            continue
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.Error, OSError):
            return None
        total += t.user + t.system
    return total


def ingest_once(url: str, data: Path, chunk_size: int, direct: bool, sampler: RssSampler | None = None) -> Run:
    from jobs.datasets import read_rows
    from jobs.ledger.ingest import ingest_rows
    from jobs.ledger.session import dispose_all, get_engine

    dispose_all()  # the ingest gets a fresh backend, so its CPU time is the ingest's alone
    with get_engine(url).begin() as c:
        c.execute(text(_JOB_SQL))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    report = ingest_rows(
        get_engine(url), "bench", read_rows(data), chunk_size=chunk_size, on_progress=sampler, direct_copy=direct
    )
    seconds = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    return Run(seconds, report, client_cpu, _backend_cpu(url))


def with_pg_database(admin_url: str, fn: Callable[[str], Run]) -> Run:
    from jobs.ledger.migrate import upgrade
    from jobs.ledger.session import dispose_all

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"rb_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        return fn(url)
    finally:
        dispose_all()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--dup-every", type=int, default=0, help="every N-th line repeats the previous custom_id")
    ap.add_argument("--no-baseline", action="store_true", help="skip the staging-path run")
    ap.add_argument("--sqlite", action="store_true", help="also ingest into a SQLite file")
    args = ap.parse_args()

    from jobs.datasets import read_rows
    from jobs.ledger.migrate import upgrade
    from jobs.ledger.session import dispose_all

    tmp = Path(tempfile.mkdtemp())
    data = tmp / "bench.jsonl"
    make_file(data, args.lines, dup_every=args.dup_every)
    size_mb = data.stat().st_size / 1e6
    print(f"load average before: {os.getloadavg()[0]:.1f} (2-core machine)")

    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        parsed = sum(1 for _ in read_rows(data))
        parse_rate = parsed / (time.perf_counter() - t0)
        parse_cpu = (time.process_time() - cpu0) / parsed

        sampler = RssSampler(args.lines)
        rss_before = psutil.Process(os.getpid()).memory_info().rss / 2**20
        new = with_pg_database(args.database_url, lambda u: ingest_once(u, data, args.chunk_size, True, sampler))
        sampler.finish(new.rows)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        old = None
        if not args.no_baseline:
            old = with_pg_database(args.database_url, lambda u: ingest_once(u, data, args.chunk_size, False))
            assert (old.report.valid, old.report.invalid) == (new.report.valid, new.report.invalid), "the two paths disagree"

        lite = None
        if args.sqlite:
            sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
            upgrade(sqlite_url)
            lite = ingest_once(sqlite_url, data, args.chunk_size, True)
            dispose_all()
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()

    rep = new.report
    print(f"file: {args.lines:,} lines, {size_mb:.0f} MB; valid {rep.valid:,}, invalid {rep.invalid:,}")
    print(f"parse only:               {parse_rate:>9,.0f} rows/s")
    print(
        f"ingest (COPY into items): {new.rate:>9,.0f} rows/s  ({new.seconds:.1f} s)  = {new.rate / TARGET:.2f} x target {TARGET:,}"
        f"  = {new.rate / parse_rate:.2f} x parse-only;  CPU: {new.cpu_line()}"
    )
    print(f"parse-only CPU: {parse_cpu * 1e6:.1f} us/row")
    for label, r in (("ingest", new), ("staging path", old)):
        if r is not None and r.ceiling() is not None:
            print(f"{label}: CPU-bound ceiling with a core each for client and server: {r.ceiling():,.0f} rows/s")
    if old is not None:
        print(
            f"staging path (old):       {old.rate:>9,.0f} rows/s  ({old.seconds:.1f} s)  -> new / old = {new.rate / old.rate:.2f} x;"
            f"  CPU: {old.cpu_line()}"
        )
    if lite is not None:
        print(f"SQLite ingest:            {lite.rate:>9,.0f} rows/s  ({lite.seconds:.1f} s)")
    print(f"RSS before ingest: {rss_before:.0f} MiB; peak RSS of the process: {peak:.0f} MiB")
    for done, rss in sampler.samples:
        print(f"RSS at {done:>9,} rows: {rss:.0f} MiB")
    if len(sampler.samples) >= 2:
        first, last = sampler.samples[0], sampler.samples[-1]
        print(f"RSS growth from {first[0]:,} to {last[0]:,} rows: {last[1] - first[1]:+.1f} MiB")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
