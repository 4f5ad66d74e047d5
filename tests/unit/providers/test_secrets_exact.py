"""Secrets by their exact value, in every spelling (issue 10, item 14), and no credentials in
a base_url."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from jobs.config import BUILTIN_CONFIG, parse_config
from jobs.errors import ConfigError
from jobs.providers import ChatRequest, ProviderPool
from jobs.providers.redact import redact, redact_json
from tests.unit.providers.conftest import make_config
from tests.unit.providers.test_header_injection import RawProvider

KEY = "sk-exact-9c8b7a6f5e4d3c2b1a0f"
ODD_KEY = "AIzaSyD+4xQ/77s=kp0q1r2s3t"  # not sk-shaped, with characters that URL-encode


def json_escaped(secret: str, every: int = 1) -> str:
    """``secret`` with every ``every``-th character as a JSON \\u escape (what a provider may echo)."""
    return "".join(f"\\u{ord(c):04x}" if i % every == 0 else c for i, c in enumerate(secret))


SPELLINGS = [
    lambda k: k,
    lambda k: json_escaped(k),
    lambda k: json_escaped(k, 2),
    lambda k: json_escaped(k, 3),
    lambda k: json_escaped(k).upper().replace("\\U", "\\u"),
    lambda k: quote(k, safe=""),
    lambda k: "".join(f"%{b:02X}" for b in k.encode()),
]


@pytest.mark.parametrize("secret", [KEY, ODD_KEY])
@pytest.mark.parametrize("spell", SPELLINGS)
def test_every_spelling_of_the_exact_key_is_masked(secret: str, spell) -> None:
    text = f"provider said: {spell(secret)} (end)"
    out = redact(text, [secret], patterns=False)
    assert out == "provider said: *** (end)"
    assert redact_json({"m": [text], spell(secret): 1}, [secret], patterns=False) == {"m": ["provider said: *** (end)"], "***": 1}


def _call(response: httpx.Response, key: str, caplog: pytest.LogCaptureFixture):
    def handler(request: httpx.Request) -> httpx.Response:
        return response

    cfg = make_config(provider={"api_key_env": "RB_EXACT_KEY", "retry": {"max_attempts": 1}})
    pool = ProviderPool(cfg, transport=httpx.MockTransport(handler))
    caplog.set_level(logging.DEBUG)
    return asyncio.run(pool.complete(ChatRequest("c1", "weak", [{"role": "user", "content": "x"}], 5)))


def _leaks(text: str, key: str) -> bool:
    t = text.lower()
    return any(spell(key).lower() in t for spell in SPELLINGS) or key in json.loads(json.dumps(text))


@pytest.mark.parametrize("key", [KEY, ODD_KEY])
def test_a_2xx_body_echoing_the_key_json_escaped_is_stored_redacted(key: str, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RB_EXACT_KEY", key)
    raw = ('{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", '
           f'"content": "your key is {json_escaped(key)}; api_key = demo"}}, "finish_reason": "stop"}}]}}').encode()
    res = _call(httpx.Response(200, content=raw, headers={"content-type": "application/json"}), key, caplog)
    assert res.ok
    assert key not in json.dumps(res.body, ensure_ascii=False) and key not in res.text
    assert res.text == "your key is ***; api_key = demo"  # an answer keeps its text, only the key goes


@pytest.mark.parametrize("key", [KEY, ODD_KEY])
@pytest.mark.parametrize(
    "body",
    [
        lambda k: json.dumps({"error": {"message": f"bad key {k}"}}),  # raw
        lambda k: '{"error": {"message": "bad key ' + json_escaped(k) + '"}}',  # escaped, parsed
        lambda k: '{"error": {"message": "bad key ' + json_escaped(k, 2) + '"',  # escaped, not parseable
        lambda k: f"<html>bad key {quote(k, safe='')}</html>",  # URL-encoded
    ],
)
def test_error_bodies_and_messages_lose_the_key(key: str, body, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RB_EXACT_KEY", key)
    res = _call(httpx.Response(401, content=body(key).encode()), key, caplog)
    assert not res.ok and res.status_code == 401
    for text in (res.error or "", repr(res.attempts), json.dumps(res.body, ensure_ascii=False), caplog.text):
        assert not _leaks(text, key), text


def test_an_answer_echoing_the_key_through_a_whole_run_never_reaches_the_ledger(tmp_path: Path, monkeypatch, caplog) -> None:
    from jobs.lifecycle.service import JobSpec, export, run
    from jobs.runtime import Runtime
    from jobs.settings import Settings

    monkeypatch.setenv("RB_EXACT_KEY", ODD_KEY)
    caplog.set_level(logging.DEBUG)
    raw = ('{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", '
           f'"content": "{json_escaped(ODD_KEY)}"}}, "finish_reason": "stop"}}], '
           '"usage": {"prompt_tokens": 3, "completion_tokens": 2}}').encode()
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"custom_id": f"q{i}", "prompt": f"q {i}"}) + "\n" for i in range(5)))
    db = tmp_path / "ledger.db"
    with RawProvider(body=raw) as provider:
        cfg = parse_config({
            "providers": {"raw": {"base_url": provider.base_url, "api_key_env": "RB_EXACT_KEY"}},
            "models": {"strong": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                       "weak": {"provider": "raw", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}},
            "defaults": {"strong": "strong", "weak": "weak", "router": "length"},
        })
        rt = Runtime(Settings(database_url=f"sqlite:///{db}", broker_url=None), cfg)
        try:
            st = run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0))
            out = tmp_path / "out.jsonl"
            export(rt, st.job_id, out)
        finally:
            rt.close()
    assert st.status == "completed" and st.succeeded == 5
    for blob in (db.read_bytes().decode("latin-1"), out.read_text(), caplog.text):
        assert not _leaks(blob, ODD_KEY)


def _config_with(base_url: str) -> dict:
    data = copy.deepcopy(BUILTIN_CONFIG)
    data["providers"]["openai"] = {"base_url": base_url, "api_key_env": "OPENAI_API_KEY"}
    return data


@pytest.mark.parametrize(
    "url, secret",
    [
        ("https://user:hunter2pass@api.example.com/v1", "hunter2pass"),
        ("https://:AIzaSyD4xQ77skp0@api.example.com/v1", "AIzaSyD4xQ77skp0"),
        ("https://api.example.com/v1?key=AIzaSyD4xQ77skp0q1r2s3t", "AIzaSyD4xQ77skp0q1r2s3t"),
        ("https://api.example.com/v1?api-version=2024-02-01&token=abc", "abc"),
        ("https://api.example.com/v1?x=a1b2c3d4e5f6g7h8i9j0k1l2", "a1b2c3d4e5f6g7h8i9j0k1l2"),
        ("https://api.example.com/v1?code=sk-short", "sk-short"),
        ("https://api.example.com/sk-pathkey123/v1", "sk-pathkey123"),
    ],
)
def test_credentials_in_base_url_are_refused_naming_the_provider(url: str, secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config_with(url), "routebatch.toml")
    message = str(info.value)
    assert "providers.openai" in message and "credentials" in message and "api_key_env" in message
    assert secret not in message


@pytest.mark.parametrize(
    "url",
    ["https://api.openai.com/v1", "https://x.openai.azure.com/openai/deployments/gpt4?api-version=2024-02-01",
     "http://127.0.0.1:8000/v1", "https://gateway.ai.cloudflare.com/v1/0123456789abcdef0123456789abcdef/gw/openai"],
)
def test_ordinary_base_urls_pass(url: str) -> None:
    parse_config(_config_with(url), "routebatch.toml")
