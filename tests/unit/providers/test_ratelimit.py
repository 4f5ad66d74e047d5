"""Rate limits in process, and how the pool uses a limiter."""

from __future__ import annotations

import asyncio
import time

import httpx

from jobs.providers import ChatRequest, ProviderPool
from jobs.providers.ratelimit import BucketSpec, Buckets, LocalRateLimiter, _LocalTable, limiter_for
from tests.unit.providers.conftest import make_config
from tests.unit.providers.test_pool_basic import completion


def test_bucket_math_bounds_any_minute() -> None:
    s = BucketSpec("x", 600)
    assert s.capacity == 10 and 590 < s.capacity + 60 * s.rate < 600
    assert BucketSpec("y", 30).capacity == 1.0


def test_buckets_from_config() -> None:
    cfg = make_config(provider={"rpm": 600, "tpm": 90000}, strong={"rpm": 60})
    b = Buckets(cfg)
    keys = {s.key: cost for s, cost in b.for_call("p", "strong", 500)}
    assert keys == {"provider:p:rpm": 1.0, "provider:p:tpm": 500.0, "model:strong:rpm": 1.0}
    assert {s.key for s, _ in b.for_call("p", "weak", 5)} == {"provider:p:rpm", "provider:p:tpm"}
    assert limiter_for(make_config(), None) is None
    assert isinstance(limiter_for(cfg, None), LocalRateLimiter)


def _rate(limiter: LocalRateLimiter, n: int, model: str = "weak", tokens: int = 1) -> float:
    async def go() -> float:
        t0 = time.monotonic()
        await asyncio.gather(*(limiter.acquire("p", model, tokens) for _ in range(n)))
        return time.monotonic() - t0

    return asyncio.run(go())


def test_local_requests_per_minute() -> None:
    lim = LocalRateLimiter(make_config(provider={"rpm": 6000}), _LocalTable())  # burst 100, ~98/s
    elapsed = _rate(lim, 150)
    assert 0.4 < elapsed < 0.9


def test_local_tokens_per_minute_with_debt_for_big_requests() -> None:
    lim = LocalRateLimiter(make_config(provider={"tpm": 60000}), _LocalTable())  # burst 1000 tokens, ~983/s
    # 3 requests of 600 tokens: first two fit the burst (second goes into debt), third waits.
    elapsed = _rate(lim, 3, tokens=600)
    assert 0.2 < elapsed < 0.9


def test_penalty_pauses_everyone() -> None:
    table = _LocalTable()
    cfg = make_config(provider={"rpm": 60000})
    a, b = LocalRateLimiter(cfg, table), LocalRateLimiter(cfg, table)

    async def go() -> float:
        await a.penalize("p", "weak", 0.3)
        t0 = time.monotonic()
        await b.acquire("p", "strong", 1)  # same provider bucket, other limiter instance
        return time.monotonic() - t0

    assert 0.28 < asyncio.run(go()) < 0.6


class RecordingLimiter:
    def __init__(self) -> None:
        self.acquired: list[tuple[str, str, int]] = []
        self.penalized: list[tuple[str, str, float | None]] = []

    async def acquire(self, provider: str, model: str, tokens: int) -> None:
        self.acquired.append((provider, model, tokens))

    async def penalize(self, provider: str, model: str, retry_after_s: float | None) -> None:
        self.penalized.append((provider, model, retry_after_s))


def test_pool_acquires_worst_case_tokens_per_attempt_and_reports_429() -> None:
    steps = iter([httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}}),
                  httpx.Response(200, json=completion(usage={"prompt_tokens": 3, "completion_tokens": 1}))])
    lim = RecordingLimiter()

    async def sleep(_: float) -> None:
        pass

    pool = ProviderPool(make_config(), transport=httpx.MockTransport(lambda r: next(steps)), rate_limiter=lim, sleep=sleep)
    res = asyncio.run(pool.complete(ChatRequest("c", "weak", [{"role": "user", "content": "hello"}], 40)))
    assert res.ok and len(res.attempts) == 2
    assert len(lim.acquired) == 2 and all(t[:2] == ("p", "weak") and t[2] > 40 for t in lim.acquired)
    assert lim.penalized == [("p", "weak", 2.0)]
