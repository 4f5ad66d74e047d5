"""Per-process runtime: config, database URL, cached routers, started simulated providers.

One ``Runtime`` lives as long as the process that does the work (the CLI in embedded mode,
a Celery worker otherwise), so a router model is loaded once and simulated providers are
started once, lazily, when the first task needs them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from jobs.config import AppConfig, load_config
from jobs.settings import Settings, get_settings


@dataclass
class Runtime:
    settings: Settings
    config: AppConfig
    _routers: dict[str, Any] = field(default_factory=dict)
    _sims: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        from jobs.notify.webhooks import configure

        configure(self.config)  # webhooks of this config hear of committed alerts and outcomes

    @classmethod
    def from_settings(cls, settings: Settings | None = None, config: AppConfig | None = None) -> Runtime:
        settings = settings or get_settings()
        return cls(settings, config or load_config(settings.config_file()))

    @property
    def db_url(self) -> str:
        return self.settings.database_url

    def router(self, spec: str):
        """The router for ``spec``, loaded once per process."""
        with self._lock:
            if spec not in self._routers:
                from routing import get_router

                self._routers[spec] = get_router(spec)
            return self._routers[spec]

    def base_urls(self) -> dict[str, str]:
        """Base URL overrides: simulated providers without a URL are started here, once."""
        with self._lock:
            for name, provider in self.config.providers.items():
                if provider.simulated is not None and not provider.base_url and name not in self._sims:
                    from jobs.providers.sim.server import start_simulated_provider

                    self._sims[name] = start_simulated_provider(provider.simulated)
            return {name: sim.base_url for name, sim in self._sims.items()}

    def close(self) -> None:
        from jobs.notify.webhooks import flush

        flush()
        with self._lock:
            for sim in self._sims.values():
                sim.stop()
            self._sims.clear()
