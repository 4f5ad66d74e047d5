"""Alembic environment: online migrations against the URL routebatch configured.

Self-contained on purpose: nothing under ``migrations/`` imports the application
(``jobs``, ``routing``, ``worker``), so that an old migration runs the same whatever the
app becomes (tests/unit/test_migrations_isolated.py checks it). Hence its own engine and
URL lookup here, and ``target_metadata = None``: routebatch never autogenerates at run
time. To draft a new migration, compare ``jobs.ledger.models.Base.metadata`` with a
migrated database by hand (as tests/unit/jobs/test_config_pricing.py does) and write the
operations into a file made by ``alembic revision``; column types come from
``migrations/_types.py``, never from ``jobs``.

The URL: ``sqlalchemy.url`` from the Alembic config (jobs/ledger/migrate.py sets it),
else ``ROUTEBATCH_DATABASE_URL``, else routebatch's default ``sqlite:///routebatch.db``.
A caller may instead hand over an open connection as ``config.attributes["connection"]``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Engine, create_engine, event, pool

config = context.config
target_metadata = None

# The same default as jobs.settings.Settings.database_url (copied, not imported).
DEFAULT_URL = "sqlite:///routebatch.db"


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get("ROUTEBATCH_DATABASE_URL") or DEFAULT_URL


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # As the app's engine (jobs/ledger/session.py) except foreign keys: WAL is a property of
    # the database file, so a ledger that migrations create is in WAL mode from its first
    # write; busy_timeout lets two processes that both bring one file to head wait for each
    # other instead of failing with "database is locked". Foreign keys stay OFF, as Alembic
    # advises for batch mode: a batch operation on SQLite copies the table and drops the old
    # one, and with foreign keys on that DROP runs ON DELETE CASCADE (0002's batch on `jobs`
    # would empty items, attempts and invalid_rows).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=OFF")
    cur.close()


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=pool.NullPool, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, poolclass=pool.NullPool)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = _engine(_url())
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
