"""A whole run with a provider rpm limit, buckets in the real Redis (broker URL set)."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run
from tests.conftest import make_runtime

pytestmark = pytest.mark.integration


def test_run_respects_provider_rpm_through_redis(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    from jobs.settings import Settings

    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(200)))
    rt = make_runtime(pg_url, {"providers.sim.rpm": 3000, "providers.sim.concurrency": 64})
    rt.settings = Settings(database_url=pg_url, broker_url=redis_url)  # buckets in Redis
    try:
        st = run(rt, JobSpec(input_file=str(data), router="random", strong_share=0.5))
    finally:
        rt.close()
    assert st.succeeded == 200
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.exists("routebatch:rl:provider:sim:rpm")  # the shared bucket, not a local one
    client.close()
    with session_scope(pg_url) as s:
        starts = sorted(t.timestamp() for (t,) in s.execute(text("SELECT started_at FROM attempts")))
    # 3000/min = a burst of 50, then ~49.6/s: 200 calls need about 3 s, and no second holds more
    # than burst + one second's refill.
    assert starts[-1] - starts[0] > 2.6
    worst = max(bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts))
    assert worst <= 50 + 50 + 5, worst
