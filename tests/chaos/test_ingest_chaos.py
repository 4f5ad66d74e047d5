"""Issue 10 item 2: SIGKILL `routebatch run` during ingest of a 300,000-line file (early, middle,
in the last batch); after `resume` every line is an item or an invalid row, exactly once.

On SQLite and on Postgres, where ingest COPYs each batch straight into ``items`` while
reading it: the COPY open at the kill must leave nothing behind."""

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

pytestmark = pytest.mark.chaos

LINES = 300_000


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ingest") / "big.jsonl"
    with path.open("w") as fh:
        for i in range(1, LINES + 1):
            if i % 997 == 0:
                fh.write("{broken\n")
            elif i % 5 == 0:
                fh.write(json.dumps({"prompt": f"no id {i}"}) + "\n")  # generated id: line-<n>
            elif i % 1009 == 0:
                fh.write(json.dumps({"custom_id": "dup", "prompt": f"dup {i}"}) + "\n")
            else:
                fh.write(json.dumps({"custom_id": f"c{i}", "prompt": f"question {i}"}) + "\n")
    return path


def _ingest_line(engine) -> tuple[str | None, int, str | None]:
    try:
        with engine.connect() as c:
            row = c.execute(text("SELECT id, ingest_line, state FROM jobs")).first()
    except Exception:  # schema not there yet, or the database is locked for a moment
        return None, 0, None
    return (row[0], row[1], row[2]) if row else (None, 0, None)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rb.db'}"
    return request.getfixturevalue("pg_url")


@pytest.mark.parametrize("kill_at", [5_000, 150_000, 295_000], ids=["early", "middle", "last-batch"])
def test_sigkill_during_ingest_then_resume_reads_every_line_once(tmp_path: Path, big_file: Path, url: str, kill_at: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTEBATCH_BROKER_URL", "ROUTEBATCH_CONFIG")}
    env["ROUTEBATCH_DATABASE_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli.__main__", "run", str(big_file), "--router", "length", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = create_engine(url)
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
        with engine.connect() as c:  # on Postgres the batch being COPYed at the kill was rolled back
            last_item_line = c.execute(text("SELECT coalesce(max(line_no), 0) FROM items")).scalar()
            committed = c.execute(text("SELECT ingest_line FROM jobs")).scalar()
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
    assert job_id is not None and line >= kill_at
    assert last_item_line <= committed
    if kill_at < LINES - 5_000:
        assert state == "validating" and line < LINES  # killed mid-ingest: nothing moved on

    from jobs.ledger.session import dispose_all
    from jobs.lifecycle import service
    from jobs.pipeline.tasks import InlineQueue
    from tests.conftest import make_runtime

    rt = make_runtime(url)
    try:
        service.resume(rt, job_id, InlineQueue())  # the SIGKILLed holder is dead: no wait for its lease
        service.resume(rt, job_id, InlineQueue())  # twice: reads nothing again
        st = service.status(rt, job_id)
    finally:
        rt.close()
        dispose_all()
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            items = [r[0] for r in c.execute(text("SELECT line_no FROM items WHERE job_id = :j"), {"j": job_id})]
            bad = [r[0] for r in c.execute(text("SELECT line_no FROM invalid_rows WHERE job_id = :j"), {"j": job_id})]
            ids = c.execute(text("SELECT count(DISTINCT custom_id), count(*) FROM items WHERE job_id = :j"), {"j": job_id}).one()
    finally:
        engine.dispose()
    assert len(items) + len(bad) == LINES
    assert sorted(items + bad) == list(range(1, LINES + 1))  # every line exactly once
    assert ids[0] == ids[1]
    assert st.ingest_complete and st.status in ("in_progress", "completed")
    assert st.total == len(items) and st.invalid == len(bad)
    assert len(bad) == LINES // 997 + (sum(1 for i in range(1, LINES + 1) if i % 1009 == 0 and i % 997 and i % 5) - 1)
