"""Pre-flight (issue 10, item 12): a missing key, a refused key or a dead endpoint stops the
job before any work, with one line naming the provider and why."""

from __future__ import annotations

import socket

import pytest

from jobs.config import parse_config
from jobs.errors import ProviderError
from jobs.providers import start_simulated_provider
from jobs.providers.preflight import preflight
from tests.unit.providers.test_header_injection import RawProvider

KEY = "sk-preflight-0a1b2c3d4e5f6a7b8c9d"


def config(providers: dict, strong_provider: str = "a", weak_provider: str = "a", fallback: str | None = None):
    models = {
        "strong": {"provider": strong_provider, "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
        "weak": {"provider": weak_provider, "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
        "spare": {"provider": "b" if "b" in providers else "a", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
    }
    if fallback:
        models["strong"]["fallback"] = fallback
    return parse_config({"providers": providers, "models": models, "defaults": {"strong": "strong", "weak": "weak"}})


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return port


def test_simulated_provider_answers_the_models_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_PF_KEY", KEY)
    with start_simulated_provider({"latency_ms": 0, "api_key": KEY}) as sim:
        cfg = config({"a": {"simulated": {}, "api_key_env": "RB_PF_KEY"}})
        preflight(cfg, ["strong", "weak"], {"a": sim.base_url})
        assert sim.app.requests == 1  # one request per provider, not per model


def test_missing_key_variable_stops_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RB_PF_UNSET", raising=False)
    with start_simulated_provider({"latency_ms": 0}) as sim:
        cfg = config({"a": {"simulated": {}, "api_key_env": "RB_PF_UNSET"}})
        with pytest.raises(ProviderError, match=r"provider 'a': environment variable RB_PF_UNSET .* is not set") as info:
            preflight(cfg, ["strong"], {"a": sim.base_url})
        assert sim.app.requests == 0
    assert "\n" not in str(info.value)


def test_a_refused_key_names_the_provider_and_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_PF_KEY", KEY + "-wrong")
    with start_simulated_provider({"latency_ms": 0, "api_key": KEY}) as sim:  # echoes the key it got
        cfg = config({"a": {"simulated": {}, "api_key_env": "RB_PF_KEY"}})
        with pytest.raises(ProviderError, match=r"provider 'a': the API key in RB_PF_KEY was refused \(HTTP 401") as info:
            preflight(cfg, ["strong"], {"a": sim.base_url})
    assert KEY not in str(info.value)


@pytest.mark.parametrize("status, ok", [(403, False), (404, True), (405, True), (500, True), (429, True), (200, True)])
def test_status_answers(status: int, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_PF_KEY", KEY)
    with RawProvider(status=status, reply={"error": {"message": f"nope {KEY}"}}) as raw:
        cfg = config({"a": {"base_url": raw.base_url, "api_key_env": "RB_PF_KEY"}})
        if ok:
            preflight(cfg, ["strong"], {})
        else:
            with pytest.raises(ProviderError, match="HTTP 403") as info:
                preflight(cfg, ["strong"], {})
            assert KEY not in str(info.value)
    assert [(m, t) for m, t, _, _ in raw.requests] == [("GET", "/v1/models")]
    assert dict((k.lower(), v) for k, v in raw.requests[0][2])["authorization"] == f"Bearer {KEY}"


def test_a_dead_endpoint_stops_the_job() -> None:
    port = closed_port()
    cfg = config({"a": {"base_url": f"http://127.0.0.1:{port}/v1", "timeout_s": 2}})
    with pytest.raises(ProviderError, match=rf"provider 'a': cannot reach http://127.0.0.1:{port} \(.*refused"):
        preflight(cfg, ["strong", "weak"], {})


def test_only_providers_the_job_can_reach_are_checked() -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with start_simulated_provider({"latency_ms": 0}) as sim:
        cfg = config({"a": {"simulated": {}}, "b": {"base_url": dead, "timeout_s": 2}})
        preflight(cfg, ["strong", "weak"], {"a": sim.base_url})  # b is used by no model of the job
        cfg = config({"a": {"simulated": {}}, "b": {"base_url": dead, "timeout_s": 2}}, fallback="spare")
        with pytest.raises(ProviderError, match="provider 'b'"):
            preflight(cfg, ["strong", "weak"], {"a": sim.base_url})  # ... unless a fallback is on it


def test_every_failing_provider_is_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RB_PF_UNSET", raising=False)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = config({"a": {"base_url": dead, "timeout_s": 2}, "b": {"base_url": dead, "api_key_env": "RB_PF_UNSET"}},
                 weak_provider="b")
    with pytest.raises(ProviderError) as info:
        preflight(cfg, ["strong", "weak"], {})
    text = str(info.value)
    assert "provider 'a'" in text and "provider 'b'" in text and "\n" not in text


@pytest.mark.parametrize("value", ["", "   ", KEY + "\n", " " + KEY])
def test_an_unusable_key_value_is_named_without_the_key(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RB_PF_KEY", value)
    cfg = config({"a": {"base_url": "http://127.0.0.1:1/v1", "api_key_env": "RB_PF_KEY"}})
    with pytest.raises(ProviderError, match="RB_PF_KEY") as info:
        preflight(cfg, ["strong"], {})
    assert KEY not in str(info.value)
