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


@dataclass(frozen=True)
class PriceVersion:
    id: int | None
    model: str
    input_micro_per_mtok: int
    cached_input_micro_per_mtok: int
    output_micro_per_mtok: int

    @classmethod
    def from_config(cls, model: str, cfg: ModelConfig) -> PriceVersion:
        cached = cfg.cached_input_usd_per_mtok if cfg.cached_input_usd_per_mtok is not None else cfg.input_usd_per_mtok
        return cls(
            None,
            model,
            usd_to_micro(cfg.input_usd_per_mtok),
            usd_to_micro(cached),
            usd_to_micro(cfg.output_usd_per_mtok),
        )

    def same_rates(self, other: PriceVersion) -> bool:
        return (self.input_micro_per_mtok, self.cached_input_micro_per_mtok, self.output_micro_per_mtok) == (
            other.input_micro_per_mtok,
            other.cached_input_micro_per_mtok,
            other.output_micro_per_mtok,
        )

    def cost_micro_usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """Exact integer cost, rounded up to the next micro-dollar (never under-charged)."""
        cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
        numerator = (
            (prompt_tokens - cached) * self.input_micro_per_mtok
            + cached * self.cached_input_micro_per_mtok
            + completion_tokens * self.output_micro_per_mtok
        )
        return -(-numerator // MICRO)


def _row_to_version(row: Price) -> PriceVersion:
    return PriceVersion(row.id, row.model, row.input_micro_per_mtok, row.cached_input_micro_per_mtok, row.output_micro_per_mtok)


def latest_price(session: Session, model: str, at: datetime | None = None) -> PriceVersion | None:
    query = select(Price).where(Price.model == model)
    if at is not None:
        query = query.where(Price.valid_from <= at)
    row = session.scalars(query.order_by(Price.valid_from.desc()).limit(1)).first()
    return _row_to_version(row) if row else None


def sync_prices(session: Session, config: AppConfig, models: list[str] | None = None) -> dict[str, PriceVersion]:
    """Make the config's prices the current versions; insert a new version only on change."""
    out: dict[str, PriceVersion] = {}
    for name in models or list(config.models):
        wanted = PriceVersion.from_config(name, config.model(name))
        current = latest_price(session, name)
        if current is not None and current.same_rates(wanted):
            out[name] = current
            continue
        row = Price(
            model=name,
            valid_from=utcnow(),
            input_micro_per_mtok=wanted.input_micro_per_mtok,
            cached_input_micro_per_mtok=wanted.cached_input_micro_per_mtok,
            output_micro_per_mtok=wanted.output_micro_per_mtok,
        )
        session.add(row)
        session.flush()
        out[name] = _row_to_version(row)
    return out
