"""Issue 10 item 2 on Postgres, where ingest COPYs each batch straight into ``items`` while
reading it: SIGKILL ``routebatch run`` during ingest of a 300,000-line file (early, middle,
in the last batch); the COPY open at the kill leaves nothing, and after ``resume`` every line
is an item or an invalid row, exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.chaos.test_ingest_chaos import LINES, _ingest_line

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same file as the SQLite chaos test: invalid lines, generated ids and duplicates."""
    path = tmp_path_factory.mktemp("ingest") / "big.jsonl"
    with path.open("w") as fh:
        for i in range(1, LINES + 1):
            if i % 997 == 0:
                fh.write("{broken\n")
            elif i % 5 == 0:
                fh.write(json.dumps({"prompt": f"no id {i}"}) + "\n")
            elif i % 1009 == 0:
                fh.write(json.dumps({"custom_id": "dup", "prompt": f"dup {i}"}) + "\n")
            else:
                fh.write(json.dumps({"custom_id": f"c{i}", "prompt": f"question {i}"}) + "\n")
    return path


@pytest.mark.parametrize("kill_at", [5_000, 150_000, 295_000], ids=["early", "middle", "last-batch"])
def test_sigkill_during_postgres_ingest_then_resume_reads_every_line_once(
    tmp_path: Path, big_file: Path, pg_url: str, kill_at: int
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTEBATCH_BROKER_URL", "ROUTEBATCH_CONFIG")}
    env["ROUTEBATCH_DATABASE_URL"] = pg_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli.__main__", "run", str(big_file), "--router", "length", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = create_engine(pg_url)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job_id, line, _state = _ingest_line(engine)
            if line >= kill_at:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        job_id, line, state = _ingest_line(engine)
        with engine.connect() as c:  # the batch being COPYed at the kill was rolled back by the server
            in_items = c.execute(text("SELECT count(*), coalesce(max(line_no), 0) FROM items")).one()
            committed = c.execute(text("SELECT ingest_line FROM jobs")).scalar()
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
    assert job_id is not None and line >= kill_at
    assert in_items[1] <= committed
    if kill_at < LINES - 5_000:
        assert state == "validating" and line < LINES

    from jobs.ledger.session import dispose_all
    from jobs.lifecycle import service
    from jobs.pipeline.tasks import InlineQueue
    from tests.conftest import make_runtime

    rt = make_runtime(pg_url)
    try:
        service.resume(rt, job_id, InlineQueue())
        service.resume(rt, job_id, InlineQueue())  # twice: reads nothing again
        st = service.status(rt, job_id)
    finally:
        rt.close()
        dispose_all()
    engine = create_engine(pg_url)
    try:
        with engine.connect() as c:
            items = [r[0] for r in c.execute(text("SELECT line_no FROM items WHERE job_id = :j"), {"j": job_id})]
            bad = [r[0] for r in c.execute(text("SELECT line_no FROM invalid_rows WHERE job_id = :j"), {"j": job_id})]
            ids = c.execute(text("SELECT count(DISTINCT custom_id), count(*) FROM items WHERE job_id = :j"), {"j": job_id}).one()
    finally:
        engine.dispose()
    assert sorted(items + bad) == list(range(1, LINES + 1))  # every line exactly once
    assert ids[0] == ids[1]
    assert st.ingest_complete and st.status in ("in_progress", "completed")
    assert st.total == len(items) and st.invalid == len(bad)
    dups = sum(1 for i in range(1, LINES + 1) if i % 1009 == 0 and i % 997 and i % 5) - 1
    assert len(bad) == LINES // 997 + dups  # the duplicate "dup" lines took the fallback path
