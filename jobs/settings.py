"""Process settings from the environment (``ROUTEBATCH_*``), via pydantic-settings.

Only where things live is configured here; what to run (providers, models, defaults) is
in the TOML config file that ``config_path`` points to.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROUTEBATCH_", extra="ignore")

    database_url: str = Field("sqlite:///routebatch.db", description="SQLAlchemy URL of the ledger database.")
    broker_url: str | None = Field(None, description="Redis URL; none means tasks run inline in the CLI process.")
    config: Path | None = Field(None, description="Path of routebatch.toml; default ./routebatch.toml if present.")
    log_level: str = "INFO"

    def config_file(self) -> Path | None:
        """The config file to read, or None for the built-in simulated setup."""
        if self.config is not None:
            return self.config
        default = Path("routebatch.toml")
        return default if default.exists() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
