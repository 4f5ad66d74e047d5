"""Ingestion benchmark: a 1,000,000-line JSONL into Postgres (COPY) with flat memory.

Prints rows/s, the parse-only rate of the same file (the ceiling for a single-threaded
reader), their ratio, and RSS sampled along the way (flat memory = RSS at 1M rows about
the RSS at 100k rows).

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
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def make_file(path: Path, lines: int, bad_every: int = 10_000) -> None:
    with path.open("w") as fh:
        for i in range(lines):
            if bad_every and i % bad_every == bad_every - 1:
                fh.write('{"prompt": ""}\n')
            else:
                fh.write(json.dumps({"custom_id": f"req-{i}", "prompt": f"Question {i}: explain topic {i % 997} in detail please."}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--chunk-size", type=int, default=500)
    args = ap.parse_args()

    from jobs.datasets import read_rows
    from jobs.ledger.migrate import upgrade
    from jobs.ledger.session import dispose_all, get_engine, session_scope
    from jobs.ledger.ingest import ingest_rows

    tmp = Path(tempfile.mkdtemp())
    data = tmp / "bench.jsonl"
    make_file(data, args.lines)
    size_mb = data.stat().st_size / 1e6

    t0 = time.perf_counter()
    parsed = sum(1 for _ in read_rows(data))
    parse_s = time.perf_counter() - t0

    admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
    name = f"rb_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        with session_scope(url) as s:
            s.execute(text(
                "INSERT INTO jobs (id, created_at, input_file, input_format, spec, router, strong_model, weak_model, state) "
                "VALUES ('bench', now(), 'x', 'jsonl', '{}', 'length', 's', 'w', 'validating')"
            ))
        proc = psutil.Process(os.getpid())
        samples: list[tuple[int, float]] = []
        marks = {args.lines // 10, args.lines // 2, args.lines}

        def progress(valid: int, invalid: int) -> None:
            done = valid + invalid
            if any(done >= m for m in marks):
                for m in sorted(marks):
                    if done >= m:
                        marks.discard(m)
                        samples.append((done, proc.memory_info().rss / 2**20))

        rss_before = proc.memory_info().rss / 2**20
        t0 = time.perf_counter()
        report = ingest_rows(get_engine(url), "bench", read_rows(data), chunk_size=args.chunk_size, on_progress=progress)
        ingest_s = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        dispose_all()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        data.unlink()

    rate = (report.valid + report.invalid) / ingest_s
    parse_rate = parsed / parse_s
    print(f"file: {args.lines:,} lines, {size_mb:.0f} MB; valid {report.valid:,}, invalid {report.invalid:,}")
    print(f"parse only:        {parse_rate:,.0f} rows/s")
    print(f"ingest (COPY):     {rate:,.0f} rows/s  ({ingest_s:.1f} s)  = {rate / parse_rate:.2f} x parse-only")
    print(f"RSS before ingest: {rss_before:.0f} MiB; peak RSS of the process: {peak:.0f} MiB")
    for done, rss in samples:
        print(f"RSS at {done:>9,} rows: {rss:.0f} MiB")
    if len(samples) >= 2:
        print(f"RSS growth from {samples[0][0]:,} to {samples[-1][0]:,} rows: {samples[-1][1] - samples[0][1]:+.1f} MiB")


if __name__ == "__main__":
    main()
