"""Prices as integer micro-USD per million tokens, versioned in the ``prices`` table.

A job charges each attempt at the price version valid when the attempt was made and
stores that version's id, so a later price change never rewrites history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.config import AppConfig, ModelConfig
from jobs.ledger.models import Price
from jobs.ledger.types import utcnow

MICRO = 1_000_000


def usd_to_micro(usd: float) -> int:
    return int(round(usd * MICRO))


def micro_to_usd(micro: int) -> float:
    return micro / MICRO


CACHE_WRITE_MULTIPLIER = (5, 4)
"""Anthropic's documented price of a prompt-cache write (5-minute cache): 1.25 x the input price."""
ANTHROPIC_CACHE_READ_MULTIPLIER = (1, 10)
"""Anthropic's documented price of a prompt-cache read: 0.1 x the input price."""


def _times(micro: int, ratio: tuple[int, int]) -> int:
    """``micro`` x ratio, rounded up (a derived price never under-charges)."""
    return -(-micro * ratio[0] // ratio[1])


@dataclass(frozen=True)
class PriceVersion:
    """One price version of a model, in integer micro-USD per million tokens.

    ``cache_write_micro_per_mtok`` is the price of input tokens written to a prompt cache
    (Anthropic's ``cache_creation_input_tokens``); None means no surcharge (the input price:
    OpenAI-compatible providers report no cache writes). Stored with the version
    (``prices.cache_write_micro_per_mtok``, migration 0008), so charges can be recomputed
    from the ledger alone.
    """

    id: int | None
    model: str
    input_micro_per_mtok: int
    cached_input_micro_per_mtok: int
    output_micro_per_mtok: int
    cache_write_micro_per_mtok: int | None = None

    @classmethod
    def from_config(cls, model: str, cfg: ModelConfig, kind: str = "openai") -> PriceVersion:
        """The config's prices; ``kind`` is the provider's protocol, which sets the defaults
        of the cache prices: on ``anthropic`` a read costs 0.1 x input and a write 1.25 x, as
        Anthropic documents; elsewhere a read costs the input price (which never under-charges
        a provider whose discount is not configured) and a write has no surcharge."""
        input_micro = usd_to_micro(cfg.input_usd_per_mtok)
        read_usd = cfg.cache_read_usd_per_mtok if cfg.cache_read_usd_per_mtok is not None else cfg.cached_input_usd_per_mtok
        if read_usd is not None:
            cached = usd_to_micro(read_usd)
        elif kind == "anthropic":
            cached = _times(input_micro, ANTHROPIC_CACHE_READ_MULTIPLIER)
        else:
            cached = input_micro
        write: int | None = None
        if cfg.cache_write_usd_per_mtok is not None:
            write = usd_to_micro(cfg.cache_write_usd_per_mtok)
        elif kind == "anthropic":
            write = _times(input_micro, CACHE_WRITE_MULTIPLIER)
        return cls(None, model, input_micro, cached, usd_to_micro(cfg.output_usd_per_mtok), write)

    @property
    def cache_write_rate(self) -> int:
        """Micro-USD per million cache-write tokens (the input price when none is set)."""
        if self.cache_write_micro_per_mtok is not None:
            return self.cache_write_micro_per_mtok
        return self.input_micro_per_mtok

    def same_rates(self, other: PriceVersion) -> bool:
        """Whether the rates stored in ``prices`` agree (a change of any is a new version)."""
        return (
            self.input_micro_per_mtok,
            self.cached_input_micro_per_mtok,
            self.output_micro_per_mtok,
            self.cache_write_micro_per_mtok,
        ) == (
            other.input_micro_per_mtok,
            other.cached_input_micro_per_mtok,
            other.output_micro_per_mtok,
            other.cache_write_micro_per_mtok,
        )

    def cost_micro_usd(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> int:
        """Exact integer cost, rounded up to the next micro-dollar (never under-charged).

        ``prompt_tokens`` is all input, including ``cached_tokens`` (read from a prompt cache)
        and ``cache_write_tokens`` (written to one); each part is charged at its own price.
        """
        prompt = max(prompt_tokens, 0)
        cached = min(max(cached_tokens, 0), prompt)
        written = min(max(cache_write_tokens, 0), prompt - cached)
        numerator = (
            (prompt - cached - written) * self.input_micro_per_mtok
            + cached * self.cached_input_micro_per_mtok
            + written * self.cache_write_rate
            + completion_tokens * self.output_micro_per_mtok
        )
        return -(-numerator // MICRO)

    def worst_case_micro_usd(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The most ``prompt_tokens`` in and ``completion_tokens`` out can cost: every input
        token at the dearest input price (a cache write costs more than plain input)."""
        dearest = max(self.input_micro_per_mtok, self.cached_input_micro_per_mtok, self.cache_write_rate)
        numerator = max(prompt_tokens, 0) * dearest + max(completion_tokens, 0) * self.output_micro_per_mtok
        return -(-numerator // MICRO)


def _row_to_version(row: Price) -> PriceVersion:
    return PriceVersion(
        row.id,
        row.model,
        row.input_micro_per_mtok,
        row.cached_input_micro_per_mtok,
        row.output_micro_per_mtok,
        row.cache_write_micro_per_mtok,
    )


def latest_price(session: Session, model: str, at: datetime | None = None) -> PriceVersion | None:
    query = select(Price).where(Price.model == model)
    if at is not None:
        query = query.where(Price.valid_from <= at)
    row = session.scalars(query.order_by(Price.valid_from.desc()).limit(1)).first()
    return _row_to_version(row) if row else None


BATCH_SUFFIX = "@batch"
"""Batch-API prices are their own versions in ``prices``, under ``<model>@batch``."""
BATCH_DISCOUNT = (1, 2)
"""OpenAI's Batch API and Anthropic's Message Batches both bill 50% of the synchronous price."""


def price_key(model: str, batch: bool = False) -> str:
    """The ``prices.model`` a call is charged under: the model, or its batch version."""
    return model + BATCH_SUFFIX if batch else model


def batch_version(model: str, cfg: ModelConfig, kind: str = "openai") -> PriceVersion:
    """The batch prices of ``model``: the configured ones, else half of every sync rate
    (rounded up: a derived price never under-charges); cache rates scale the same way."""
    sync = PriceVersion.from_config(model, cfg, kind)

    def rate(configured: float | None, sync_micro: int) -> int:
        return usd_to_micro(configured) if configured is not None else _times(sync_micro, BATCH_DISCOUNT)

    input_micro = rate(cfg.batch_input_usd_per_mtok, sync.input_micro_per_mtok)
    scale = (input_micro, sync.input_micro_per_mtok) if sync.input_micro_per_mtok else BATCH_DISCOUNT
    cached = _times(sync.cached_input_micro_per_mtok, scale)
    write = None if sync.cache_write_micro_per_mtok is None else _times(sync.cache_write_micro_per_mtok, scale)
    return PriceVersion(
        None, price_key(model, True), input_micro, cached, rate(cfg.batch_output_usd_per_mtok, sync.output_micro_per_mtok), write
    )


def sync_prices(
    session: Session, config: AppConfig, models: list[str] | None = None, batch: bool = False
) -> dict[str, PriceVersion]:
    """Make the config's prices the current versions; insert a new version only on change.

    Keyed by model; with ``batch`` the versions are the batch-API prices (``<model>@batch``).
    """
    out: dict[str, PriceVersion] = {}
    for name in models or list(config.models):
        kind = config.provider_of(name).kind
        wanted = (
            batch_version(name, config.model(name), kind) if batch else PriceVersion.from_config(name, config.model(name), kind)
        )
        current = latest_price(session, wanted.model)
        if current is not None and current.same_rates(wanted):
            out[name] = current
            continue
        row = Price(
            model=wanted.model,
            valid_from=utcnow(),
            input_micro_per_mtok=wanted.input_micro_per_mtok,
            cached_input_micro_per_mtok=wanted.cached_input_micro_per_mtok,
            output_micro_per_mtok=wanted.output_micro_per_mtok,
            cache_write_micro_per_mtok=wanted.cache_write_micro_per_mtok,
        )
        session.add(row)
        session.flush()
        out[name] = _row_to_version(row)
    return out
