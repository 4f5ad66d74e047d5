"""``routebatch`` command line. Each module below registers its commands on ``app``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from jobs.cli import (  # noqa: F401  (each module registers its commands)
    budget_cmds,
    eval_cmds,
    job_cmds,
    ledger_cmds,
    memory_cmds,
    metrics_cmds,
    provider_cmds,
    report_cmds,
    routing_cmds,
    version_cmds,
    worker_cmds,
)
from jobs.cli.app import app
from jobs.cli.plugins import load_plugins

load_plugins(app)


def main() -> None:
    import logging

    level = os.environ.get("ROUTEBATCH_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    app()


__all__ = ["app", "main"]
