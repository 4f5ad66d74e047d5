"""A planted API key must not appear in anything the pool produces: results, errors, logs."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from jobs.providers import ChatRequest, ProviderPool, start_simulated_provider
from jobs.providers.redact import redact
from tests.unit.providers.conftest import make_config

KEY = "sk-planted-7f3a9c1e5b2d4f6a8c0e"


def test_redact_masks_known_secrets_and_credential_shapes() -> None:
    assert redact(f"key {KEY} used", [KEY]) == "key *** used"
    assert "abc123secret" not in redact("Authorization: Bearer abc123secret")
    assert "sk-otherkey123456" not in redact("Incorrect API key provided: sk-otherkey123456.")
    assert "hunter22" not in redact('{"api_key": "hunter22"}')
    assert len(redact("x" * 5000)) <= 501


def test_planted_key_never_leaks(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PLANTED_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    echoes = iter([
        # Providers do echo credentials: in messages, in error bodies, in exception texts.
        httpx.Response(429, json={"error": {"message": f"Rate limit for key {KEY}"}}),
        httpx.ReadError(f"reset while sending Authorization: Bearer {KEY}"),
        httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {KEY[:10]}...{KEY[-4:]} ({KEY})"}}),
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"  # it is sent ...
        step = next(echoes)
        if isinstance(step, Exception):
            raise step
        return step

    cfg = make_config(provider={"api_key_env": "PLANTED_KEY"})
    pool = ProviderPool(cfg, transport=httpx.MockTransport(handler))
    res = asyncio.run(pool.complete(ChatRequest("c1", "weak", [{"role": "user", "content": "x"}], 5)))
    assert not res.ok and [a.status_code for a in res.attempts] == [429, None, 401]

    produced = [repr(res.attempts), str(res.error), repr(res.body), caplog.text, *capsys.readouterr()]
    for text in produced:
        assert KEY not in text  # ... and nowhere else
    assert "Incorrect API key provided" in res.error


def test_key_is_accepted_by_a_sim_that_requires_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTED_KEY", KEY)
    with start_simulated_provider({"latency_ms": 0, "api_key": KEY}) as sim:
        good = make_config(provider={"api_key_env": "PLANTED_KEY"})
        bad = make_config(provider={"api_key_env": "NOT_SET_ANYWHERE"})

        async def go(cfg):
            pool = ProviderPool(cfg, base_urls={"p": sim.base_url})
            try:
                return await pool.complete(ChatRequest("c1", "weak", [{"role": "user", "content": "x"}], 5))
            finally:
                await pool.aclose()

        assert asyncio.run(go(good)).ok
        res = asyncio.run(go(bad))
        assert not res.ok and res.status_code == 401 and len(res.attempts) == 1
