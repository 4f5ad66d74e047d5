"""Prompt-cache prices (issue 14, item 4): Anthropic's documented defaults (reads 0.1 x, writes
1.25 x the input price), explicit prices, and holds that cover the dearest input."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.config import ConfigError, parse_config
from jobs.ledger.session import session_scope
from jobs.money.pricing import PriceVersion, latest_price, sync_prices


def config(kind: str = "anthropic", **model: Any):
    return parse_config(
        {
            "providers": {"p": {"kind": kind, "base_url": "https://api.example.com"}},
            "models": {
                "m": {"provider": "p", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0, **model},
                "w": {"provider": "p", "input_usd_per_mtok": 0.8, "output_usd_per_mtok": 4.0},
            },
            "defaults": {"strong": "m", "weak": "w"},
        }
    )


def test_anthropic_defaults_are_the_documented_multiples() -> None:
    cfg = config()
    p = PriceVersion.from_config("m", cfg.model("m"), "anthropic")
    assert (p.input_micro_per_mtok, p.cached_input_micro_per_mtok, p.cache_write_rate, p.output_micro_per_mtok) == (
        3_000_000,
        300_000,
        3_750_000,
        15_000_000,
    )
    # 1M fresh + 1M read + 1M written + 1M out, exactly
    assert p.cost_micro_usd(3_000_000, 1_000_000, 1_000_000, 1_000_000) == 3_000_000 + 300_000 + 3_750_000 + 15_000_000


def test_openai_kind_keeps_its_old_prices() -> None:
    cfg = config("openai")
    p = PriceVersion.from_config("m", cfg.model("m"), "openai")
    assert (p.cached_input_micro_per_mtok, p.cache_write_rate) == (3_000_000, 3_000_000)  # no discount, no surcharge
    assert p.worst_case_micro_usd(1000, 100) == p.cost_micro_usd(1000, 100)  # holds of OpenAI jobs did not change


def test_explicit_prices_win_and_the_two_names_of_a_cache_read_must_agree() -> None:
    cfg = config(cache_read_usd_per_mtok=0.5, cache_write_usd_per_mtok=6.0)
    p = PriceVersion.from_config("m", cfg.model("m"), "anthropic")
    assert (p.cached_input_micro_per_mtok, p.cache_write_rate) == (500_000, 6_000_000)
    assert (
        PriceVersion.from_config("m", config(cached_input_usd_per_mtok=0.4).model("m"), "anthropic").cached_input_micro_per_mtok
        == 400_000
    )
    with pytest.raises(ConfigError, match="same price; give one of them"):
        config(cached_input_usd_per_mtok=0.4, cache_read_usd_per_mtok=0.5)
    with pytest.raises(ConfigError, match="cache_write_usd_per_mtok"):
        config(cache_write_usd_per_mtok=-1)


def test_a_hold_covers_input_written_to_the_cache() -> None:
    p = PriceVersion.from_config("m", config().model("m"), "anthropic")
    worst = p.worst_case_micro_usd(10_000, 500)
    assert worst == -(-(10_000 * 3_750_000 + 500 * 15_000_000) // 1_000_000)
    assert worst >= p.cost_micro_usd(10_000, 500, 0, 10_000) > p.cost_micro_usd(10_000, 500)


def test_sync_prices_versions_the_rates_and_applies_the_cache_write_price(tmp_path) -> None:
    from jobs.ledger.migrate import upgrade

    db = f"sqlite:///{tmp_path / 'l.db'}"
    upgrade(db)
    cfg = config(cache_write_usd_per_mtok=7.5)
    with session_scope(db) as s:
        first = sync_prices(s, cfg, ["m"])["m"]
        again = sync_prices(s, cfg, ["m"])["m"]
        stored = latest_price(s, "m")
    assert first.id is not None and again.id == first.id  # no new version for the same rates
    assert first.cache_write_rate == again.cache_write_rate == 7_500_000
    assert stored is not None and stored.cached_input_micro_per_mtok == 300_000


def test_the_cache_write_price_is_stored_with_its_version(tmp_path) -> None:
    """Recovery's worst case and status read prices back from the ledger: the cache-write
    rate must come back too, and a change of it alone is a new price version."""
    from jobs.ledger.migrate import upgrade

    db = f"sqlite:///{tmp_path / 'l.db'}"
    upgrade(db)
    with session_scope(db) as s:
        first = sync_prices(s, config(cache_write_usd_per_mtok=7.5), ["m"])["m"]
        stored = latest_price(s, "m")
        changed = sync_prices(s, config(cache_write_usd_per_mtok=9.0), ["m"])["m"]
    assert stored is not None and stored.cache_write_rate == 7_500_000
    assert changed.id != first.id and changed.cache_write_rate == 9_000_000
