"""``routebatch`` command line. Each module below registers its commands on ``app``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from jobs.cli.app import app  # noqa: E402
from jobs.cli import budget_cmds, job_cmds, ledger_cmds, provider_cmds, routing_cmds, worker_cmds  # noqa: E402,F401


def main() -> None:
    app()


__all__ = ["app", "main"]
