"""The TOML config: providers, models with prices, and job defaults.

Parsed into pydantic models so that a missing or malformed key is reported by its dotted
path (``models.gpt-4o.provider: field required``) instead of a KeyError deep in a job.
API keys are never in this file: a provider names the environment variable that holds it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jobs.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    """How a provider's transient failures are retried (tenacity)."""

    max_attempts: int = Field(default=6, ge=1)
    max_elapsed_s: float = Field(default=300.0, gt=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_cap_s: float = Field(default=30.0, ge=0)
    jitter: bool = True


class ProviderConfig(_Strict):
    """An OpenAI-compatible endpoint (``/v1/chat/completions``)."""

    base_url: str = Field(default="", description="e.g. https://api.openai.com/v1; empty for a simulated provider")
    api_key_env: str | None = Field(default=None, description="Name of the environment variable holding the API key.")
    timeout_s: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=64, ge=1)
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute shared by all workers.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute shared by all workers.")
    retry: RetryConfig = RetryConfig()
    simulated: dict[str, Any] | None = Field(
        default=None, description="Options of the built-in simulated provider; when set, routebatch starts it itself."
    )

    @model_validator(mode="after")
    def _needs_url_or_sim(self) -> ProviderConfig:
        if not self.base_url and self.simulated is None:
            raise ValueError("base_url is required unless the provider is [simulated]")
        return self

    def api_key(self) -> str | None:
        """The secret, read from the environment at call time; never stored or logged."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class ModelConfig(_Strict):
    """A model on a provider, with its prices in USD per million tokens."""

    provider: str
    name: str | None = Field(default=None, description="Model id sent to the API; defaults to the table key.")
    context_window: int = Field(default=8192, ge=1)
    input_usd_per_mtok: float = Field(..., ge=0)
    output_usd_per_mtok: float = Field(..., ge=0)
    cached_input_usd_per_mtok: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1, description="Default max_tokens for this model.")
    encoding: str | None = Field(default=None, description="tiktoken encoding name, when known.")
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    fallback: str | None = Field(default=None, description="Model to use when this one fails permanently for an item.")


class Defaults(_Strict):
    strong: str
    weak: str
    router: str = "blend"
    max_tokens: int = Field(default=256, ge=1)
    chunk_size: int = Field(default=500, ge=1)


class AppConfig(_Strict):
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    defaults: Defaults

    @model_validator(mode="after")
    def _references_exist(self) -> AppConfig:
        for key, model in self.models.items():
            if model.provider not in self.providers:
                raise ValueError(f"models.{key}.provider: unknown provider {model.provider!r}")
            if model.fallback is not None and model.fallback not in self.models:
                raise ValueError(f"models.{key}.fallback: unknown model {model.fallback!r}")
        for role in ("strong", "weak"):
            name = getattr(self.defaults, role)
            if name not in self.models:
                raise ValueError(f"defaults.{role}: unknown model {name!r}")
        return self

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"unknown model {name!r}; configured: {', '.join(sorted(self.models))}") from None

    def fallback_chain(self, model: str) -> list[str]:
        """``model`` then its fallbacks in order, each once (a cycle ends the chain)."""
        chain: list[str] = []
        current: str | None = model
        while current is not None and current not in chain:
            chain.append(current)
            current = self.model(current).fallback
        return chain

    def models_with_fallbacks(self, models: Iterable[str]) -> list[str]:
        """Every model a call to one of ``models`` may end on (prices to load, holds to size)."""
        out: dict[str, None] = {}
        for m in models:
            out.update(dict.fromkeys(self.fallback_chain(m)))
        return sorted(out)

    def max_tokens_for(self, model: str, row_max_tokens: int | None = None, job_max_tokens: int | None = None) -> int:
        """Which ``max_tokens`` a call carries: the row's, else the model's, else the job's, else the default."""
        return row_max_tokens or self.model(model).max_tokens or job_max_tokens or self.defaults.max_tokens

    def provider_of(self, model_name: str) -> ProviderConfig:
        return self.providers[self.model(model_name).provider]


BUILTIN_CONFIG: dict[str, Any] = {
    "providers": {
        "sim": {"simulated": {"latency_ms": 20, "seed": 0}, "concurrency": 64, "timeout_s": 30},
    },
    "models": {
        "sim-strong": {
            "provider": "sim",
            "context_window": 128000,
            "input_usd_per_mtok": 10.0,
            "output_usd_per_mtok": 30.0,
        },
        "sim-weak": {
            "provider": "sim",
            "context_window": 32000,
            "input_usd_per_mtok": 0.6,
            "output_usd_per_mtok": 0.6,
        },
    },
    "defaults": {"strong": "sim-strong", "weak": "sim-weak", "router": "blend", "max_tokens": 256},
}


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{source}: {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> AppConfig:
    try:
        return AppConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_config(path: Path | None) -> AppConfig:
    """Read ``path``, or the built-in simulated setup when ``path`` is None."""
    if path is None:
        return parse_config(BUILTIN_CONFIG, "<built-in config>")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))
