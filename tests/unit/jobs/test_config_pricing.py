"""Config errors name the key; prices are exact integer micro-USD, rounded up."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import ConfigError, load_config
from jobs.money.pricing import PriceVersion, usd_to_micro

GOOD = """
[providers.openai]
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[models.big]
provider = "openai"
name = "gpt-4o"
input_usd_per_mtok = 2.5
output_usd_per_mtok = 10.0

[models.small]
provider = "openai"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.6

[defaults]
strong = "big"
weak = "small"
"""


def test_good_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "routebatch.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.model("big").name == "gpt-4o"
    assert cfg.provider_of("small").api_key_env == "OPENAI_API_KEY"
    assert load_config(None).defaults.strong == "sim-strong"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.replace('output_usd_per_mtok = 10.0\n', ""), "models.big.output_usd_per_mtok: Field required"),
        (lambda t: t.replace('provider = "openai"\nname', 'provider = "nobody"\nname'), "unknown provider 'nobody'"),
        (lambda t: t.replace('weak = "small"', 'weak = "tiny"'), "defaults.weak: unknown model 'tiny'"),
        (lambda t: t.replace("input_usd_per_mtok = 2.5", 'input_usd_per_mtok = "cheap"'), "models.big.input_usd_per_mtok"),
        (lambda t: t + "\n[defaults\n", "not valid TOML"),
        (lambda t: t.replace('base_url = "https://api.openai.com/v1"', ""), "providers.openai"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "routebatch.toml"
    path.write_text(mutate(GOOD))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")


def test_cost_is_integer_and_rounds_up() -> None:
    price = PriceVersion(None, "m", usd_to_micro(2.5), usd_to_micro(1.25), usd_to_micro(10.0))
    # 1000 in * 2.5 + 500 out * 10 = 2500 + 5000 micro-USD exactly
    assert price.cost_micro_usd(1000, 500) == 7500
    # one input token at $2.5/Mtok is 2.5 micro-USD: charged 3, never 2
    assert price.cost_micro_usd(1, 0) == 3
    # cached tokens are charged at the cached rate and never exceed the prompt
    assert price.cost_micro_usd(1000, 0, cached_tokens=1000) == 1250
    assert price.cost_micro_usd(10, 0, cached_tokens=50) == price.cost_micro_usd(10, 0, cached_tokens=10)
    assert isinstance(price.cost_micro_usd(123, 456, 7), int)


def test_shipped_example_config_parses() -> None:
    cfg = load_config(Path(__file__).parents[3] / "examples" / "routebatch.toml")
    assert cfg.model("gpt-4o").fallback == "gpt-4o-mini"
    assert cfg.providers["openai"].retry.max_attempts == 6
    assert cfg.providers["sim"].simulated == {"latency_ms": 20, "seed": 0}


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    """The schema changes only through migrations: the models must match what they build."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from jobs.ledger.migrate import upgrade
    from jobs.ledger.models import Base
    from jobs.ledger.session import get_engine

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    with get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
