"""The simulated provider over real HTTP: protocol shape, determinism, usage, auth."""

from __future__ import annotations

import asyncio

import httpx

from jobs.config import parse_config
from jobs.providers import ChatRequest, ProviderPool, SimulatedServer, start_simulated_provider
from jobs.providers.sim.server import sim_prompt_tokens


def post(base: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/chat/completions", json=body, headers=headers, timeout=5)


def test_completion_shape_usage_and_determinism(sim: SimulatedServer) -> None:
    msgs = [{"role": "user", "content": "What is 2 + 2?"}]
    r1 = post(sim.base_url, {"model": "sim-strong", "messages": msgs, "max_tokens": 500})
    r2 = post(sim.base_url, {"model": "sim-strong", "messages": msgs, "max_tokens": 500})
    r3 = post(sim.base_url, {"model": "sim-weak", "messages": msgs, "max_tokens": 500})
    assert r1.status_code == 200
    b1, b2, b3 = r1.json(), r2.json(), r3.json()
    text = b1["choices"][0]["message"]["content"]
    assert text == b2["choices"][0]["message"]["content"]  # same (seed, model, prompt)
    assert text != b3["choices"][0]["message"]["content"]  # another model answers differently
    assert b1["id"] != b2["id"] and r1.headers["x-request-id"] == b1["id"]
    u = b1["usage"]
    assert u["prompt_tokens"] == sim_prompt_tokens(msgs)
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0


def test_seed_changes_answers() -> None:
    msgs = [{"role": "user", "content": "hello"}]
    texts = []
    for seed in (1, 2):
        with start_simulated_provider({"latency_ms": 0, "seed": seed}) as s:
            texts.append(post(s.base_url, {"model": "m", "messages": msgs}).json()["choices"][0]["message"]["content"])
    assert texts[0] != texts[1]


def test_max_tokens_truncates_with_finish_reason_length(sim: SimulatedServer) -> None:
    body = post(sim.base_url, {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}).json()
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"


def test_models_endpoint_and_unknown_route(sim: SimulatedServer) -> None:
    r = httpx.get(f"{sim.base_url}/models")
    assert r.status_code == 200 and {m["id"] for m in r.json()["data"]} >= {"sim-strong", "sim-weak"}
    assert httpx.get(f"{sim.base_url}/nope").status_code == 404


def test_bad_body_is_400(sim: SimulatedServer) -> None:
    r = httpx.post(f"{sim.base_url}/chat/completions", content=b"{not json", timeout=5)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_api_key_is_checked_when_configured() -> None:
    with start_simulated_provider({"latency_ms": 0, "api_key": "sk-sim-secret"}) as s:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        assert post(s.base_url, body).status_code == 401
        assert post(s.base_url, body, authorization="Bearer sk-sim-secret").status_code == 200


def test_fixed_latency_is_applied() -> None:
    with start_simulated_provider({"latency_ms": 150}) as s:
        r = post(s.base_url, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert r.elapsed.total_seconds() >= 0.14


def test_pool_against_sim_many_requests(sim: SimulatedServer) -> None:
    cfg = parse_config({
        "providers": {"sim": {"simulated": {}, "concurrency": 16}},
        "models": {"sim-strong": {"provider": "sim", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                   "sim-weak": {"provider": "sim", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}},
        "defaults": {"strong": "sim-strong", "weak": "sim-weak"},
    })

    async def go():
        pool = ProviderPool(cfg, base_urls={"sim": sim.base_url})
        try:
            return await asyncio.gather(*(
                pool.complete(ChatRequest(str(i), "sim-weak", [{"role": "user", "content": f"q{i}"}], 20))
                for i in range(200)
            ))
        finally:
            await pool.aclose()

    results = asyncio.run(go())
    assert all(r.ok for r in results)
    assert all(r.attempts[0].completion_tokens <= 20 and r.attempts[0].prompt_tokens > 0 for r in results)
    assert len({r.text for r in results}) == 200


def test_pool_keeps_connections_alive(sim: SimulatedServer) -> None:
    cfg = parse_config({
        "providers": {"sim": {"simulated": {}, "concurrency": 4}},
        "models": {"a": {"provider": "sim", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}},
        "defaults": {"strong": "a", "weak": "a"},
    })

    async def go() -> int:
        pool = ProviderPool(cfg, base_urls={"sim": sim.base_url})
        try:
            for i in range(30):
                assert (await pool.complete(ChatRequest(str(i), "a", [{"role": "user", "content": "x"}], 5))).ok
            return len(sim._conns)
        finally:
            await pool.aclose()

    assert asyncio.run(go()) == 1  # 30 sequential calls, one TCP connection


def test_start_simulated_providers_from_config() -> None:
    from jobs.config import load_config
    from jobs.providers import start_simulated_providers

    cfg = load_config(None)  # the built-in config: one simulated provider "sim"
    servers = start_simulated_providers(cfg)
    try:
        assert set(servers) == {"sim"}

        async def go():
            pool = ProviderPool(cfg, base_urls={k: s.base_url for k, s in servers.items()})
            try:
                return await pool.complete(ChatRequest("a", "sim-strong", [{"role": "user", "content": "hi"}], 8))
            finally:
                await pool.aclose()

        assert asyncio.run(go()).ok
    finally:
        for s in servers.values():
            s.stop()
