"""The TOML config: providers, models with prices, and job defaults.

Parsed into pydantic models so that a missing or malformed key is reported by its dotted
path (``models.gpt-4o.provider: field required``) instead of a KeyError deep in a job.
API keys are never in this file: a provider names the environment variable that holds it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jobs.errors import ConfigError
from jobs.judge.config import JudgeConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    """How a provider's transient failures are retried (tenacity)."""

    max_attempts: int = Field(default=6, ge=1)
    max_elapsed_s: float = Field(default=300.0, gt=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_cap_s: float = Field(default=30.0, ge=0)
    jitter: bool = True


_SECRET_NAME = re.compile(r"(?i)key|token|secret|passw|pwd|auth|sig|credential|session|bearer|jwt|access")
_OPAQUE = re.compile(r"[A-Za-z0-9_\-.~+/=]{20,}")


def _looks_secret(value: str) -> bool:
    """An ``sk-``-style key, or a long opaque string of letters and digits (not a version or a name)."""
    if value.startswith(("sk-", "sk_", "pk-", "key-")):
        return True
    return bool(_OPAQUE.fullmatch(value)) and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def base_url_credentials(url: str) -> str | None:
    """Why ``url`` must not be a provider's ``base_url`` because it carries a credential, or
    None. Credentials never go in the URL (it reaches error messages and logs, and user-info
    is not even sent): the key belongs in the environment variable named by ``api_key_env``.
    The message never repeats the value."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None  # not a URL at all: reported by the URL checks
    hint = "; put the key in the environment variable named by api_key_env"
    if "@" in parts.netloc:
        return "base_url must not carry credentials in its user-info (user:password@host)" + hint
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_NAME.search(name) or _looks_secret(value):
            return f"base_url must not carry credentials: query parameter {name[:40]!r} looks like a key" + hint
    if any(seg.startswith(("sk-", "sk_")) for seg in parts.path.split("/")):
        return "base_url must not carry credentials: a path segment looks like a key" + hint
    return None


class ProviderConfig(_Strict):
    """One endpoint: OpenAI-compatible chat completions (``kind = "openai"``, the default:
    ``{base_url}/chat/completions``; OpenAI, vLLM, LiteLLM, Together, ...) or Anthropic's
    Messages API (``kind = "anthropic"``: ``{base_url}/v1/messages``). The protocol itself is
    ``jobs.providers.wire``."""

    kind: Literal["openai", "anthropic"] = Field(
        default="openai", description="Wire protocol: 'openai' (chat completions) or 'anthropic' (Messages API)."
    )
    base_url: str = Field(
        default="",
        description="e.g. https://api.openai.com/v1 or https://api.anthropic.com; empty for a simulated provider",
    )
    api_key_env: str | None = Field(default=None, description="Name of the environment variable holding the API key.")
    timeout_s: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=64, ge=1)
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute shared by all workers.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute shared by all workers.")
    retry: RetryConfig = RetryConfig()
    simulated: dict[str, Any] | None = Field(
        default=None, description="Options of the built-in simulated provider; when set, routebatch starts it itself."
    )
    dispatch: Literal["sync", "batch", "auto"] = Field(
        default="sync",
        description="How routed items are sent: 'sync' (one call each), 'batch' (the provider's batch API at batch "
        "prices, results within 24 h), 'auto' (batch unless the job's deadline is less than an hour away).",
    )
    batch_max_requests: int | None = Field(
        default=None, ge=1, description="Requests per provider batch; default the provider's limit (50,000 / 100,000)."
    )
    batch_poll_s: float = Field(default=30.0, gt=0, description="First wait before polling a provider batch.")
    batch_poll_max_s: float = Field(default=600.0, gt=0, description="Longest wait between two polls (the wait doubles).")
    batch_retry: Literal["sync", "batch", "fail"] = Field(
        default="sync",
        description="Lines of a provider batch that expired, was cancelled or failed: sent again synchronously, "
        "in a new batch, or failed.",
    )

    @model_validator(mode="after")
    def _needs_url_or_sim(self) -> ProviderConfig:
        if not self.base_url and self.simulated is None:
            raise ValueError("base_url is required unless the provider is [simulated]")
        problem = base_url_credentials(self.base_url) if self.base_url else None
        if problem is not None:  # checked first: later messages may quote the URL
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _port_and_sim_options(self) -> ProviderConfig:
        # Found when the config is loaded, not after ingest and scoring when the first call is made.
        if self.base_url:
            from urllib.parse import urlsplit

            try:
                urlsplit(self.base_url).port  # noqa: B018 - raises for a port that is not 0-65535
            except ValueError as exc:
                raise ValueError(f"base_url: bad port ({exc})") from None  # never quote the URL: it may carry a key
        if self.simulated is not None:
            from jobs.providers.sim.options import SimOptions  # a leaf module: imports nothing of jobs

            SimOptions.from_dict(self.simulated)  # unknown keys and bad values raise ValueError naming the key
        return self

    def api_key(self) -> str | None:
        """The secret, read from the environment at call time; never stored or logged."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


MAX_USD_PER_MTOK = 100_000.0
"""The highest price accepted (USD per million tokens); real prices are below 1,000."""

UsdPerMtok = Annotated[float, Field(ge=0, le=MAX_USD_PER_MTOK, allow_inf_nan=False)]
"""A price: finite and at most MAX_USD_PER_MTOK (inf or 1e13 would overflow the integer micro-USD ledger)."""


class ModelConfig(_Strict):
    """A model on a provider, with its prices in USD per million tokens."""

    provider: str
    name: str | None = Field(default=None, description="Model id sent to the API; defaults to the table key.")
    context_window: int = Field(default=8192, ge=1)
    input_usd_per_mtok: UsdPerMtok
    output_usd_per_mtok: UsdPerMtok
    cached_input_usd_per_mtok: UsdPerMtok | None = None
    cache_read_usd_per_mtok: UsdPerMtok | None = Field(
        default=None,
        description="Input tokens read from the prompt cache (Anthropic's name for cached_input_usd_per_mtok); "
        "default: 0.1 x input on an anthropic provider, the input price elsewhere.",
    )
    cache_write_usd_per_mtok: UsdPerMtok | None = Field(
        default=None,
        description="Input tokens written to the prompt cache (Anthropic: 5-minute cache); default 1.25 x input on an "
        "anthropic provider, the input price elsewhere (no surcharge).",
    )
    max_tokens: int | None = Field(default=None, ge=1, description="Default max_tokens for this model.")
    encoding: str | None = Field(default=None, description="tiktoken encoding name, when known.")
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    fallback: str | None = Field(default=None, description="Model to use when this one fails permanently for an item.")
    batch_input_usd_per_mtok: UsdPerMtok | None = Field(
        default=None, description="Input price through the provider's batch API; default 50% of input_usd_per_mtok."
    )
    batch_output_usd_per_mtok: UsdPerMtok | None = Field(
        default=None, description="Output price through the provider's batch API; default 50% of output_usd_per_mtok."
    )

    @model_validator(mode="after")
    def _one_cache_read_price(self) -> ModelConfig:
        both = self.cached_input_usd_per_mtok is not None and self.cache_read_usd_per_mtok is not None
        if both and self.cached_input_usd_per_mtok != self.cache_read_usd_per_mtok:
            raise ValueError("cached_input_usd_per_mtok and cache_read_usd_per_mtok are the same price; give one of them")
        return self


class WebhookConfig(_Strict):
    """A URL that receives budget alerts and job outcomes as JSON POSTs (``[[webhooks]]``)."""

    name: str = "webhook"
    url: str = Field(..., description="Never logged: a Slack-style URL carries its token in the path.")
    format: Literal["slack", "json"] = "json"
    events: tuple[str, ...] = Field(
        default=("budget_alert", "job_completed", "job_failed", "job_cancelled", "job_budget_exhausted", "job_expired"),
        description="Which notifications to send.",
    )
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _known_events(self) -> WebhookConfig:
        from jobs.notify.webhooks import EVENT_KINDS

        unknown = sorted(set(self.events) - set(EVENT_KINDS))
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {', '.join(EVENT_KINDS)}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be http:// or https://")
        return self


class Defaults(_Strict):
    strong: str
    weak: str
    router: str = "blend"
    max_tokens: int = Field(default=256, ge=1)
    chunk_size: int = Field(default=500, ge=1)
    tiers: tuple[str, ...] = Field(
        default=(), description="Default --models: the job's models most capable first (strong first, weak last)."
    )


class AppConfig(_Strict):
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    defaults: Defaults
    webhooks: tuple[WebhookConfig, ...] = ()
    judge: JudgeConfig = JudgeConfig()

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
        for name in self.defaults.tiers:
            if name not in self.models:
                raise ValueError(f"defaults.tiers: unknown model {name!r}")
        if self.judge.model is not None and self.judge.model not in self.models:
            raise ValueError(f"judge.model: unknown model {self.judge.model!r}")
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
