"""An Anthropic provider's requests carry exactly the headers the project sets (issue 14, item 4).

The raw-socket fake of ``test_header_injection`` reads the bytes itself: each request must go
to ``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version`` and nothing else that
the project did not set (never ``Authorization``), whatever the dataset's params try.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from jobs.config import parse_config
from jobs.providers import ChatRequest, ProviderPool
from jobs.providers.pool import WIRE_PARAMS
from jobs.providers.preflight import preflight
from tests.unit.providers.test_header_injection import INJECTIONS, SMUGGLE, RawProvider

KEY = "sk-ant-api03-operator-7c1d2e3f4a5b6c7d8e9f"
ANTHROPIC_HEADERS = {
    "host",
    "content-type",
    "idempotency-key",
    "x-api-key",
    "anthropic-version",
    "accept-encoding",
    "content-length",
}
MESSAGE = {
    "id": "msg_raw",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
}


def config(base_url: str):
    return parse_config(
        {
            "providers": {
                "claude": {"kind": "anthropic", "base_url": base_url, "api_key_env": "RB_ANT_KEY", "retry": {"max_attempts": 1}}
            },
            "models": {
                "sonnet": {"provider": "claude", "name": "claude-sonnet-4-5", "input_usd_per_mtok": 3, "output_usd_per_mtok": 15},
                "haiku": {"provider": "claude", "name": "claude-haiku-4-5", "input_usd_per_mtok": 1, "output_usd_per_mtok": 5},
            },
            "defaults": {"strong": "sonnet", "weak": "haiku"},
        }
    )


@pytest.mark.parametrize("v1", [True, False], ids=["base_url ending in /v1", "https://api.anthropic.com form"])
def test_messages_requests_carry_only_the_project_headers(v1: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_ANT_KEY", KEY)
    # header-injection attempts the pool drops (WIRE_PARAMS, _-keys) or maps (user -> metadata),
    # plus one it must refuse: an unknown param never reaches the wire, in the body or a header
    rows = [{**p, "temperature": 0.5} for p in INJECTIONS if all(k.startswith("_") or k in WIRE_PARAMS or k == "user" for k in p)]
    rows.append({f"temperature{SMUGGLE}": 0.5})
    with RawProvider(reply=MESSAGE) as provider:
        base = provider.base_url if v1 else provider.base_url.removesuffix("/v1")
        cfg = config(base)

        async def go() -> list:
            pool = ProviderPool(cfg)
            try:
                return await asyncio.gather(
                    *(
                        pool.complete(
                            ChatRequest(
                                f"c{i}",
                                "haiku",
                                [{"role": "system", "content": "S"}, {"role": "user", "content": SMUGGLE}],
                                8,
                                params,
                            )
                        )
                        for i, params in enumerate(rows)
                    )
                )
            finally:
                await pool.aclose()

        results = asyncio.run(go())
    *sent_ok, refused = results
    assert all(r.ok for r in sent_ok), [r.error for r in sent_ok if not r.ok]
    assert all(r.text == "ok" for r in sent_ok)
    assert not refused.ok and refused.attempts == [] and "is not supported by the Anthropic Messages API" in refused.error
    rows = rows[:-1]
    assert provider.parse_errors == [] and len(provider.requests) == len(rows)
    for method, target, headers, body in provider.requests:
        assert (method, target) == ("POST", "/v1/messages")
        names = [n.lower() for n, _ in headers]
        assert sorted(names) == sorted(ANTHROPIC_HEADERS), headers  # each exactly once, nothing else
        values = {n.lower(): v for n, v in headers}
        assert values["x-api-key"] == KEY and values["anthropic-version"] == "2023-06-01"
        assert values["content-type"] == "application/json" and int(values["content-length"]) == len(body)
        sent = json.loads(body)
        assert set(sent) <= {"model", "max_tokens", "messages", "system", "temperature", "metadata"}
        assert sent["system"] == "S" and sent["messages"] == [{"role": "user", "content": SMUGGLE}]
    assert b"authorization" not in bytes(provider.raw).lower()
    assert bytes(provider.raw).count(KEY.encode()) == len(rows)


def test_preflight_sends_the_anthropic_headers_to_v1_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_ANT_KEY", KEY)
    with RawProvider(reply={"data": [], "has_more": False}) as provider:
        preflight(config(provider.base_url.removesuffix("/v1")), ["sonnet"], {})
    [(method, target, headers, _)] = provider.requests
    assert (method, target) == ("GET", "/v1/models")
    values = {n.lower(): v for n, v in headers}
    assert values["x-api-key"] == KEY and values["anthropic-version"] == "2023-06-01"
    assert "authorization" not in values
