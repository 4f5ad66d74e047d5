"""ProviderPool basics: what is sent, and what comes back, through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from jobs.providers import CallResult, ChatRequest, ProviderPool
from tests.unit.providers.conftest import make_config


def completion(text: str = "hi", usage: dict | None = None, **extra) -> dict:
    body = {"id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    if usage is not None:
        body["usage"] = usage
    body.update(extra)
    return body


def run(pool: ProviderPool, req: ChatRequest) -> CallResult:
    async def go() -> CallResult:
        try:
            return await pool.complete(req)
        finally:
            await pool.aclose()

    return asyncio.run(go())


def test_request_carries_key_model_name_and_max_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PROVIDER_KEY", "sk-test-abcdef123456")
    cfg = make_config(provider={"api_key_env": "TEST_PROVIDER_KEY"})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion(usage={"prompt_tokens": 11, "completion_tokens": 3}),
                              headers={"x-request-id": "req-42"})

    pool = ProviderPool(cfg, transport=httpx.MockTransport(handler))
    msgs = [{"role": "user", "content": "2+2?"}]
    res = run(pool, ChatRequest("c1", "strong", msgs, 0, params={"temperature": 0.2}))

    (req,) = seen
    assert str(req.url) == "http://provider.test/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test-abcdef123456"
    body = json.loads(req.content)
    assert body == {"temperature": 0.2, "model": "big-model", "messages": msgs, "max_tokens": 256}
    assert res.ok and res.model == "strong" and res.status_code == 200 and res.error is None
    assert res.text == "hi"
    (a,) = res.attempts
    assert (a.attempt_no, a.status_code, a.error_class, a.request_id) == (1, 200, None, "req-42")
    assert (a.prompt_tokens, a.completion_tokens, a.usage_estimated) == (11, 3, False)
    assert len(a.attempt_id) == 32 and req.headers["idempotency-key"] == a.attempt_id
    assert a.provider == "p" and a.started_at <= a.finished_at and a.latency_ms >= 0


def test_max_tokens_falls_back_to_model_default_then_request() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=completion(usage={"prompt_tokens": 1, "completion_tokens": 1}))

    cfg = make_config()
    pool = ProviderPool(cfg, transport=httpx.MockTransport(handler))

    async def go() -> None:
        await pool.complete(ChatRequest("a", "weak", [{"role": "user", "content": "x"}], 0))
        await pool.complete(ChatRequest("b", "weak", [{"role": "user", "content": "x"}], 5))
        await pool.aclose()

    asyncio.run(go())
    assert [b["max_tokens"] for b in bodies] == [77, 5]
    assert bodies[0]["model"] == "weak"  # no `name`: the table key is the API model id


def test_no_authorization_header_without_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion(usage={"prompt_tokens": 1, "completion_tokens": 1}))

    run(ProviderPool(make_config(), transport=httpx.MockTransport(handler)),
        ChatRequest("a", "weak", [{"role": "user", "content": "x"}], 3))
    assert "authorization" not in seen[0].headers


def test_concurrency_is_bounded_per_provider() -> None:
    cfg = make_config(provider={"concurrency": 3})
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=completion(usage={"prompt_tokens": 1, "completion_tokens": 1}))

    pool = ProviderPool(cfg, transport=httpx.MockTransport(handler))

    async def go() -> list[CallResult]:
        reqs = [ChatRequest(str(i), "weak", [{"role": "user", "content": "x"}], 3) for i in range(20)]
        out = await asyncio.gather(*(pool.complete(r) for r in reqs))
        await pool.aclose()
        return out

    results = asyncio.run(go())
    assert all(r.ok for r in results)
    assert peak == 3


def test_client_is_created_lazily_and_per_event_loop() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json=completion(usage={"prompt_tokens": 1, "completion_tokens": 1}))

    pool = ProviderPool(make_config(), transport=httpx.MockTransport(handler))
    assert len(pool._states) == 0  # nothing opened at construction
    req = ChatRequest("a", "weak", [{"role": "user", "content": "x"}], 3)
    # asyncio.run twice: the second loop must get its own client, not a dead one.
    assert asyncio.run(pool.complete(req)).ok
    assert asyncio.run(pool.complete(req)).ok
    assert calls == 2


def test_proxy_in_environment_uses_httpx_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.providers.transport import FastTransport

    async def state_kinds() -> tuple[bool, bool]:
        pool = ProviderPool(make_config())
        st = pool._loop_state()
        kinds = (st.client is not None, isinstance(st.transport, FastTransport))
        await pool.aclose()
        return kinds

    assert asyncio.run(state_kinds()) == (False, True)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert asyncio.run(state_kinds())[0] is True  # only httpx's client reads proxy settings
