"""Process settings from the environment (``ROUTEBATCH_*``), via pydantic-settings.

Only where things live is configured here; what to run (providers, models, defaults) is
in the TOML config file that ``config_path`` points to.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.errors import ConfigError

# Spellings of a Postgres URL that SQLAlchemy would map to a driver we do not ship
# (``postgres://`` is not a dialect at all; ``postgresql://`` means psycopg2).
_PG_ALIASES = ("postgres://", "postgresql://")
_PG_DIALECT = "postgresql+psycopg://"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTEBATCH_", extra="ignore")

    database_url: str = Field(default="sqlite:///routebatch.db", description="SQLAlchemy URL of the ledger database.")
    broker_url: str | None = Field(default=None, description="Redis URL; none means tasks run inline in the CLI process.")
    config: Path | None = Field(default=None, description="Path of routebatch.toml; default ./routebatch.toml if present.")

    # Distributed execution (worker/, jobs/lifecycle/reaper.py). The generate task's hard time limit
    # stays below the send lease, so a worker still alive can never record an item that
    # the reaper has already declared lost and handed to another worker.
    preflight: bool = Field(
        default=True,
        description="Check each provider a job uses (key present, endpoint answers, key accepted) before ingesting; "
        "turn off on a submit machine that lacks the workers' keys.",
    )
    send_lease_s: float = Field(
        default=900.0, gt=0, description="How long an item may stay 'sent' before the reaper treats it as lost."
    )
    score_time_limit_s: float = Field(
        default=600.0, gt=0, description="Hard time limit of a score task (soft limit 30 s before)."
    )
    generate_time_limit_s: float = Field(
        default=840.0, gt=0, description="Hard time limit of a generate task; keep below send_lease_s."
    )
    reaper_interval_s: float = Field(default=30.0, gt=0, description="How often workers run the reaper (one at a time, DB lock).")
    stall_s: float | None = Field(
        default=None,
        gt=0,
        description="A job with open work and no progress this long is re-enqueued; default: longest time limit + 60 s.",
    )
    cancel_poll_s: float = Field(
        default=1.0, gt=0, description="How often a generating task checks whether its job was cancelled."
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        """``postgres://`` (Heroku, many PaaS) and ``postgresql://`` mean psycopg 3 here."""
        url = url.strip()
        if not url:
            raise ValueError("is empty; e.g. sqlite:///routebatch.db or postgresql+psycopg://user@host/db")
        for alias in _PG_ALIASES:
            if url.startswith(alias):
                return _PG_DIALECT + url[len(alias) :]
        if "://" not in url:
            raise ValueError(
                "is not a database URL (scheme://...); e.g. sqlite:///routebatch.db or postgresql+psycopg://user@host/db"
            )
        return url

    def short_step_limit_s(self) -> float:
        """Hard time limit of the steps that should be short (route, finalize, poll): the
        generate limit, capped at 10 minutes. A poll step sizes the work it does inline by it."""
        return max(60.0, min(self.generate_time_limit_s, 600.0))

    def stall_after_s(self) -> float:
        """No live task can run longer than its hard limit, so silence past it means lost messages."""
        return self.stall_s if self.stall_s is not None else max(self.score_time_limit_s, self.generate_time_limit_s) + 60.0

    def config_file(self) -> Path | None:
        """The config file to read, or None for the built-in simulated setup."""
        if self.config is not None:
            return self.config
        default = Path("routebatch.toml")
        return default if default.exists() else None


def load_settings() -> Settings:
    """The settings from the environment; an invalid value is a ``ConfigError`` naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"ROUTEBATCH_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise ConfigError(problems) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
