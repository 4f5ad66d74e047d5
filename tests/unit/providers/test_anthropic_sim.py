"""The pool against the simulator's ``/v1/messages`` over real HTTP (issue 14, items 4 and 5):
answers, usage with cache reads and writes, faults, rate-limit headers, errors, pre-flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from anthropic.types import Message

from jobs.config import parse_config
from jobs.errors import ProviderError
from jobs.money.pricing import PriceVersion
from jobs.providers import CallResult, ChatRequest, ProviderPool, SimulatedServer, start_simulated_provider
from jobs.providers.preflight import preflight

KEY = "sk-ant-test-9f8e7d6c5b4a3f2e1d0c"
MSGS = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}]


def anthropic_config(sim_options: dict[str, Any] | None = None, **provider: Any):
    prov = {
        "kind": "anthropic",
        "simulated": sim_options or {"latency_ms": 0},
        "timeout_s": 5,
        "concurrency": 8,
        "retry": {"max_attempts": 4, "backoff_base_s": 0.0, "backoff_cap_s": 0.0, "jitter": False},
        **provider,
    }
    return parse_config(
        {
            "providers": {"claude": prov},
            "models": {
                "sonnet": {"provider": "claude", "name": "claude-sonnet-4-5", "input_usd_per_mtok": 3, "output_usd_per_mtok": 15},
                "haiku": {"provider": "claude", "name": "claude-haiku-4-5", "input_usd_per_mtok": 1, "output_usd_per_mtok": 5},
            },
            "defaults": {"strong": "sonnet", "weak": "haiku"},
        }
    )


@pytest.fixture
def sim() -> Iterator[SimulatedServer]:
    server = start_simulated_provider({"latency_ms": 0, "seed": 3})
    try:
        yield server
    finally:
        server.stop()


def complete(cfg, base_url: str, *reqs: ChatRequest) -> tuple[list[CallResult], list[float]]:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    async def go() -> list[CallResult]:
        pool = ProviderPool(cfg, base_urls={"claude": base_url}, sleep=sleep)
        try:
            return [await pool.complete(r) for r in reqs]
        finally:
            await pool.aclose()

    return asyncio.run(go()), waits


def test_an_answer_is_a_valid_message_with_its_usage(sim: SimulatedServer) -> None:
    cfg = anthropic_config()
    (r,), _ = complete(cfg, sim.base_url, ChatRequest("c1", "sonnet", MSGS, 32, {"temperature": 0.3, "stop": ["zzz"]}))
    assert r.ok, r.error
    msg = Message.model_validate(r.body)
    assert msg.model == "claude-sonnet-4-5" and msg.stop_reason in ("end_turn", "max_tokens")
    assert r.text == msg.content[0].text and r.text.startswith("[claude-sonnet-4-5]")
    a = r.attempts[0]
    assert a.request_id and a.request_id.startswith("req_")
    assert (a.prompt_tokens, a.completion_tokens) == (msg.usage.input_tokens, msg.usage.output_tokens)
    assert a.cached_tokens == a.cache_write_tokens == 0 and not a.usage_estimated
    # deterministic like the OpenAI endpoint: the same prompt, the same answer
    (again,), _ = complete(cfg, sim.base_url, ChatRequest("c2", "sonnet", MSGS, 32))
    assert again.text == r.text


def test_prompt_cache_writes_then_reads_and_each_is_priced(sim: SimulatedServer) -> None:
    cfg = anthropic_config()
    shared = {"type": "text", "text": "A long shared instruction. " * 30, "cache_control": {"type": "ephemeral"}}
    reqs = [
        ChatRequest(
            f"c{i}", "sonnet", [{"role": "system", "content": [shared]}, {"role": "user", "content": f"question {i}"}], 16
        )
        for i in range(3)
    ]
    results, _ = complete(cfg, sim.base_url, *reqs)
    assert all(r.ok for r in results), [r.error for r in results]
    first, second = results[0].attempts[0], results[1].attempts[0]
    assert first.cache_write_tokens > 0 and first.cached_tokens == 0
    assert second.cached_tokens == first.cache_write_tokens and second.cache_write_tokens == 0
    usage = results[1].body["usage"]
    assert second.prompt_tokens == usage["input_tokens"] + usage["cache_read_input_tokens"]

    price = PriceVersion.from_config("sonnet", cfg.model("sonnet"), "anthropic")
    assert (price.input_micro_per_mtok, price.cached_input_micro_per_mtok, price.cache_write_rate) == (
        3_000_000,
        300_000,
        3_750_000,
    )
    fresh = first.prompt_tokens - first.cache_write_tokens
    want = -(-(fresh * 3_000_000 + first.cache_write_tokens * 3_750_000 + first.completion_tokens * 15_000_000) // 1_000_000)
    assert (
        price.cost_micro_usd(first.prompt_tokens, first.completion_tokens, first.cached_tokens, first.cache_write_tokens) == want
    )
    cost_read = price.cost_micro_usd(
        second.prompt_tokens, second.completion_tokens, second.cached_tokens, second.cache_write_tokens
    )
    assert cost_read < price.cost_micro_usd(second.prompt_tokens, second.completion_tokens)  # reads are cheaper
    assert price.worst_case_micro_usd(first.prompt_tokens, 16) >= price.cost_micro_usd(
        first.prompt_tokens, 16, 0, first.prompt_tokens
    )  # a hold covers input written to the cache


@pytest.mark.parametrize(
    ("fault", "status", "etype"),
    [
        ("429", 429, "rate_limit_error"),
        ("503", 529, "overloaded_error"),
        ("529", 529, "overloaded_error"),
        ("500", 500, "api_error"),
    ],
)
def test_transient_faults_are_retried_and_429_waits_for_retry_after(fault: str, status: int, etype: str) -> None:
    with start_simulated_provider({"latency_ms": 0, "faults": {fault: 0.5}, "retry_after_s": 2.5, "seed": 1}) as server:
        cfg = anthropic_config(retry={"max_attempts": 8, "backoff_base_s": 0.0, "backoff_cap_s": 0.0, "jitter": False})
        reqs = [ChatRequest(f"c{i}", "haiku", [{"role": "user", "content": f"q {i}"}], 8) for i in range(12)]
        results, waits = complete(cfg, server.base_url, *reqs)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    failed = [a for r in results for a in r.attempts if a.status_code != 200]
    assert failed, "the fault fraction should have hit some tries"
    assert {a.status_code for a in failed} == {status}
    assert all(etype in (a.error_message or "") for a in failed)
    if status == 429:  # every retry waited retry-after; the calls behind it waited the provider's pause
        assert sum(w >= 2.5 for w in waits) == len(failed) and all(0 < w <= 2.5 for w in waits)
    else:
        assert waits == [0.0] * len(failed)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_permanent_errors_fail_at_once_with_the_provider_message(sim: SimulatedServer, status: int) -> None:
    cfg = anthropic_config()
    req = ChatRequest("c1", "haiku", [{"role": "user", "content": "q"}], 8, headers={"X-Sim-Fault": str(status)})
    (r,), waits = complete(cfg, sim.base_url, req)
    assert not r.ok and len(r.attempts) == 1 and waits == []
    assert r.status_code == status and r.error.startswith(f"HTTP {status}: ")
    assert r.body["type"] == "error" and r.body["error"]["message"] == f"simulated error {status}"


def test_a_rejected_key_is_redacted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_ANT_KEY", KEY)
    with start_simulated_provider({"latency_ms": 0, "api_key": "the-right-key"}) as server:
        cfg = anthropic_config(api_key_env="RB_ANT_KEY")
        (r,), _ = complete(cfg, server.base_url, ChatRequest("c1", "haiku", [{"role": "user", "content": "q"}], 8))
    assert not r.ok and r.status_code == 401 and r.attempts[0].error_class == "authentication"
    dumped = json.dumps([r.error, r.body, [a.error_message for a in r.attempts]])
    assert "authentication_error" in dumped  # the sim echoed the key in its message ...
    assert KEY not in dumped and KEY[8:] not in dumped  # ... which never survives


def test_an_unmappable_request_fails_without_a_call(sim: SimulatedServer) -> None:
    cfg = anthropic_config()
    before = sim.app.requests
    (r,), _ = complete(cfg, sim.base_url, ChatRequest("c1", "haiku", MSGS, 8, {"response_format": {"type": "json_object"}}))
    assert not r.ok and r.attempts == [] and sim.app.requests == before
    assert r.error == (
        "invalid_request: parameter 'response_format' is not supported by the Anthropic Messages API "
        "(provider 'claude' speaks anthropic)"
    )


def test_used_up_limits_pause_the_provider_until_reset() -> None:
    opts = {"latency_ms": 0, "rate_limit_requests": 2, "rate_limit_window_s": 30.0}
    with start_simulated_provider(opts) as server:
        cfg = anthropic_config()
        reqs = [ChatRequest(f"c{i}", "haiku", [{"role": "user", "content": f"q{i}"}], 8) for i in range(3)]
        results, waits = complete(cfg, server.base_url, *reqs)
    first, second, third = results
    assert first.ok and second.ok
    # the second answer said requests-remaining 0: the third call waited for the reset first
    assert waits and 25.0 < waits[0] <= 30.0
    # (the sleep is recorded, not taken, so the window has not reset: the sim answers 429 with retry-after)
    assert third.attempts[0].status_code == 429
    assert any(w >= 25.0 for w in waits[1:])


def test_sim_refuses_bad_shapes_with_anthropic_errors(sim: SimulatedServer) -> None:
    url = sim.base_url.removesuffix("/v1") + "/v1/messages"
    good = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    h = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
    cases = [
        (good, {"x-api-key": "k"}, "anthropic-version"),
        ({k: v for k, v in good.items() if k != "max_tokens"}, h, "max_tokens"),
        ({**good, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}, h, "Unexpected role"),
        ({**good, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, h, "consecutive"),
        ({**good, "messages": [{"role": "user", "content": ""}]}, h, "non-empty"),
        ({**good, "n": 2}, h, "Extra inputs"),
        ({**good, "temperature": 1.5}, h, "temperature"),
        ({**good, "stop": ["x"]}, h, "Extra inputs"),
    ]
    with httpx.Client() as client:
        for body, headers, reason in cases:
            resp = client.post(url, json=body, headers=headers)
            assert resp.status_code == 400, (body, resp.text)
            err = resp.json()
            assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
            assert reason in err["error"]["message"], (reason, err)
        ok = client.post(url, json=good, headers=h)
    assert ok.status_code == 200 and Message.model_validate(ok.json()).content


def test_preflight_lists_models_with_the_anthropic_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_ANT_KEY", KEY)
    with start_simulated_provider({"latency_ms": 0, "api_key": KEY}) as server:
        cfg = anthropic_config(api_key_env="RB_ANT_KEY")
        preflight(cfg, ["sonnet"], {"claude": server.base_url})  # passes: x-api-key accepted
        monkeypatch.setenv("RB_ANT_KEY", "sk-ant-wrong-0000000000000000")
        with pytest.raises(ProviderError, match=r"provider 'claude'.*refused \(HTTP 401") as info:
            preflight(cfg, ["sonnet"], {"claude": server.base_url})
    assert "sk-ant-wrong" not in str(info.value)


def test_overload_fault_only_when_named_and_rate_limit_options_are_checked() -> None:
    from jobs.providers.sim.options import FAULT_KINDS, SimOptions

    assert set(SimOptions.from_dict({"fault_rate": 0.2}).faults) == set(FAULT_KINDS)  # seeded runs draw as before
    assert SimOptions.from_dict({"faults": {"529": 0.1}}).faults == {"529": 0.1}
    for bad in ({"rate_limit_requests": 0}, {"rate_limit_tokens": "many"}, {"rate_limit_window_s": 0}):
        with pytest.raises(ValueError, match="simulated.rate_limit"):
            SimOptions.from_dict(bad)


def test_the_openai_endpoint_answers_the_overload_fault_too(sim: SimulatedServer) -> None:
    with httpx.Client() as client:
        resp = client.post(
            sim.base_url + "/chat/completions",
            headers={"X-Sim-Fault": "529"},
            json={"model": "m", "messages": [{"role": "user", "content": "q"}]},
        )
    assert resp.status_code == 529 and resp.json()["error"]["type"] == "server_error"
