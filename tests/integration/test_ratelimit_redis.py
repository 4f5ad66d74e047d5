"""Rate limits shared through the real Redis: atomic buckets across processes."""

from __future__ import annotations

import asyncio
import bisect
import multiprocessing as mp
import time
import uuid

import pytest

from jobs.providers.ratelimit import RedisRateLimiter
from tests.unit.providers.conftest import make_config

pytestmark = pytest.mark.integration


def _limiter(url: str, prefix: str, **provider) -> RedisRateLimiter:
    return RedisRateLimiter(make_config(provider=provider), url, prefix=prefix)


def test_redis_bucket_burst_then_refill(redis_url: str) -> None:
    lim = _limiter(redis_url, f"test:{uuid.uuid4().hex}:", rpm=6000)  # burst 100, ~98/s

    async def go() -> tuple[float, list[float]]:
        t0 = time.monotonic()
        grants = await asyncio.gather(*(lim.acquire("p", "weak", 1) for _ in range(150)))
        elapsed = time.monotonic() - t0
        await lim.aclose()
        return elapsed, sorted(grants)

    elapsed, grants = asyncio.run(go())
    assert 0.4 < elapsed < 1.2
    assert grants[99] - grants[0] < 0.3  # the burst is immediate


def test_redis_penalty_pauses_other_workers(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    a, b = _limiter(redis_url, prefix, rpm=60000), _limiter(redis_url, prefix, rpm=60000)

    async def go() -> float:
        await a.acquire("p", "weak", 1)
        await a.penalize("p", "weak", 0.5)
        t0 = time.monotonic()
        await b.acquire("p", "strong", 1)
        waited = time.monotonic() - t0
        await a.aclose()
        await b.aclose()
        return waited

    assert 0.45 < asyncio.run(go()) < 1.0


def _worker(url: str, prefix: str, duration: float, out: mp.Queue) -> None:
    lim = _limiter(url, prefix, rpm=600)

    async def go() -> list[float]:
        grants: list[float] = []
        stop = time.monotonic() + duration

        async def one() -> None:
            while time.monotonic() < stop:
                grants.append(await lim.acquire("p", "weak", 1))

        await asyncio.gather(*(one() for _ in range(20)))
        await lim.aclose()
        return grants

    out.put(asyncio.run(go()))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_processes_never_exceed_600_per_minute_together(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    duration = 63.0
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(redis_url, prefix, duration, q)) for _ in range(2)]
    for p in procs:
        p.start()
    per_proc = [q.get(timeout=duration + 40) for _ in procs]
    for p in procs:
        p.join(10)
    grants = sorted(g for gs in per_proc for g in gs)  # Redis clock: one clock for both

    worst = max(bisect.bisect_left(grants, t + 60.0) - i for i, t in enumerate(grants))
    assert worst <= 600, f"{worst} grants in one 60 s window"
    assert worst >= 585, f"only {worst} in the busiest window"  # the limit is used, not undershot
    shares = [len(gs) for gs in per_proc]
    assert all(s > 0.3 * len(grants) for s in shares), f"unfair shares {shares}"  # both processes got some
