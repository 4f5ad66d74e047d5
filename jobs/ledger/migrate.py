"""Apply Alembic migrations programmatically: the only way the schema changes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from jobs.ledger.session import get_engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> str:
    """Upgrade the database at ``url``; returns the revision it is at afterwards."""
    command.upgrade(alembic_config(url), revision)
    return current_revision(url) or ""


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head() or ""


_AT_HEAD: set[str] = set()


def ensure_schema(url: str) -> None:
    """Bring the database to head if it is behind; checked once per process and URL."""
    if url in _AT_HEAD:
        return
    if current_revision(url) != head_revision(url):
        upgrade(url)
    _AT_HEAD.add(url)
