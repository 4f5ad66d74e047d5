"""Fault injection and latency distributions of the simulated provider, seen by the pool."""

from __future__ import annotations

import asyncio
import random
import statistics

import pytest

from jobs.providers import CallResult, ChatRequest, ProviderPool, start_simulated_provider
from jobs.providers.sim.options import SimOptions
from tests.unit.providers.conftest import make_config

FAST_RETRY = {"max_attempts": 2, "backoff_base_s": 0, "backoff_cap_s": 0, "jitter": False}


def run_many(base_url: str, n: int, headers: dict | None = None, **cfg_kw) -> list[CallResult]:
    cfg = make_config(**cfg_kw)

    async def go() -> list[CallResult]:
        pool = ProviderPool(cfg, base_urls={"p": base_url})
        try:
            return await asyncio.gather(*(
                pool.complete(ChatRequest(str(i), "weak", [{"role": "user", "content": f"question {i}"}], 16,
                                          headers=headers or {}))
                for i in range(n)
            ))
        finally:
            await pool.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "fault, status, error_class",
    [
        ("429", 429, "rate_limited"),
        ("500", 500, "server_error"),
        ("503", 503, "server_error"),
        ("drop", None, "connection_dropped"),
        ("malformed", 200, "malformed_response"),
        ("hang", None, "read_timeout"),
    ],
)
def test_each_fault_kind_by_header(fault: str, status: int | None, error_class: str) -> None:
    with start_simulated_provider({"latency_ms": 0, "hang_s": 5, "retry_after_s": 0}) as sim:
        (res,) = run_many(sim.base_url, 1, {"X-Sim-Fault": fault},
                          provider={"retry": FAST_RETRY, "timeout_s": 1.0})  # > a busy CI's connect time
    assert not res.ok and len(res.attempts) == 2  # transient: retried up to max_attempts
    assert {(a.status_code, a.error_class) for a in res.attempts} == {(status, error_class)}


def test_429_carries_retry_after() -> None:
    with start_simulated_provider({"latency_ms": 0, "retry_after_s": 0.2}) as sim:
        (res,) = run_many(sim.base_url, 1, {"X-Sim-Fault": "429"}, provider={"retry": FAST_RETRY})
    a1, a2 = res.attempts
    assert (a2.started_at - a1.finished_at).total_seconds() >= 0.19


def test_no_usage_fault_is_counted_locally() -> None:
    with start_simulated_provider({"latency_ms": 0}) as sim:
        (res,) = run_many(sim.base_url, 1, {"X-Sim-Fault": "no_usage"})
    assert res.ok and res.attempts[0].usage_estimated and res.attempts[0].completion_tokens > 0


def test_http_status_fault_401_is_not_retried() -> None:
    with start_simulated_provider({"latency_ms": 0}) as sim:
        (res,) = run_many(sim.base_url, 1, {"X-Sim-Fault": "401"})
    assert not res.ok and len(res.attempts) == 1 and res.status_code == 401


def test_fault_fractions_all_recover_with_retries() -> None:
    """30% faults of every kind: every item ends succeeded, each retry is an attempt."""
    opts = {"latency_ms": 1, "seed": 3, "fault_rate": 0.3, "hang_s": 5, "retry_after_s": 0.01}
    retry = {"max_attempts": 12, "backoff_base_s": 0.001, "backoff_cap_s": 0.01, "jitter": True}
    with start_simulated_provider(opts) as sim:
        results = run_many(sim.base_url, 300, provider={"retry": retry, "timeout_s": 0.5, "concurrency": 64})
    assert all(r.ok for r in results)
    attempts = [a for r in results for a in r.attempts]
    classes = {a.error_class for a in attempts if a.error_class}
    assert classes >= {"rate_limited", "server_error", "connection_dropped", "malformed_response", "read_timeout"}
    assert 1.2 * 300 < len(attempts) < 2.0 * 300
    assert any(a.usage_estimated for a in attempts)
    for r in results:  # exactly one success per item, and it is the last attempt
        assert [a.ok for a in r.attempts].count(True) == 1 and r.attempts[-1].ok


def test_fault_sequence_is_deterministic_per_seed() -> None:
    def classes() -> list[list[str | None]]:
        opts = {"latency_ms": 0, "seed": 11, "fault_rate": 0.4, "fault_kinds": ["429", "500"], "retry_after_s": 0}
        with start_simulated_provider(opts) as sim:
            res = run_many(sim.base_url, 40, provider={"retry": {**FAST_RETRY, "max_attempts": 8}})
        return [[a.error_class for a in r.attempts] for r in res]

    assert classes() == classes()


def test_latency_distributions() -> None:
    rng = random.Random(0)
    fixed = SimOptions.from_dict({"latency_ms": 200})
    assert fixed.draw_latency_s(rng) == 0.2
    uni = SimOptions.from_dict({"latency": "uniform", "latency_min_ms": 100, "latency_max_ms": 300})
    xs = [uni.draw_latency_s(rng) for _ in range(2000)]
    assert 0.1 <= min(xs) and max(xs) <= 0.3 and abs(statistics.mean(xs) - 0.2) < 0.01
    logn = SimOptions.from_dict({"latency": "lognormal", "latency_ms": 200, "latency_sigma": 0.5})
    ys = [logn.draw_latency_s(rng) for _ in range(4000)]
    assert abs(statistics.median(ys) - 0.2) < 0.015 and max(ys) > 0.5  # heavy right tail


def test_unknown_options_are_named() -> None:
    with pytest.raises(ValueError, match="latncy_ms"):
        SimOptions.from_dict({"latncy_ms": 5})
    with pytest.raises(ValueError, match="'504'"):
        SimOptions.from_dict({"faults": {"504": 0.1}})
    with pytest.raises(ValueError, match="more than 1"):
        SimOptions.from_dict({"fault_429": 0.7, "fault_500": 0.7})
