"""Fixtures for provider tests: configs built in code and a simulated provider per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobs.config import AppConfig, parse_config
from jobs.providers import SimulatedServer, start_simulated_provider


def make_config(
    *,
    provider: dict[str, Any] | None = None,
    strong: dict[str, Any] | None = None,
    weak: dict[str, Any] | None = None,
    extra_models: dict[str, dict[str, Any]] | None = None,
) -> AppConfig:
    prov = {"base_url": "http://provider.test/v1", "timeout_s": 5, "concurrency": 8,
            "retry": {"max_attempts": 4, "backoff_base_s": 0.0, "backoff_cap_s": 0.0, "jitter": False}}
    prov.update(provider or {})
    models = {
        "strong": {"provider": "p", "name": "big-model", "input_usd_per_mtok": 10, "output_usd_per_mtok": 30, **(strong or {})},
        "weak": {"provider": "p", "input_usd_per_mtok": 1, "output_usd_per_mtok": 2, "max_tokens": 77, **(weak or {})},
    }
    for k, v in (extra_models or {}).items():
        models[k] = {"provider": "p", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1, **v}
    return parse_config({"providers": {"p": prov}, "models": models, "defaults": {"strong": "strong", "weak": "weak"}})


@pytest.fixture
def sim() -> Iterator[SimulatedServer]:
    server = start_simulated_provider({"latency_ms": 0, "seed": 7})
    try:
        yield server
    finally:
        server.stop()
