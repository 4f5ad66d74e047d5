"""Shared fixtures: a fresh SQLite ledger per test, a throwaway Postgres database, Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_ADMIN_URL = os.environ.get("ROUTEBATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ROUTEBATCH_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _unavailable(what: str, exc: Exception) -> None:
    """In CI a missing service is a failure; on a laptop without it, a clean skip."""
    message = f"{what} not reachable: {exc}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new Postgres database for this test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from jobs.ledger.session import dispose_all

    name = f"rb_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        _unavailable("Postgres", exc)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        _unavailable("Redis", exc)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


def make_runtime(db_url: str, config_overrides: dict | None = None):
    """A Runtime on ``db_url`` with the built-in simulated providers (fast latency)."""
    import copy

    from jobs.config import BUILTIN_CONFIG, parse_config
    from jobs.runtime import Runtime
    from jobs.settings import Settings

    data = copy.deepcopy(BUILTIN_CONFIG)
    data["providers"]["sim"]["simulated"]["latency_ms"] = 1
    data["providers"]["sim"]["concurrency"] = 8
    for key, value in (config_overrides or {}).items():
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return Runtime(Settings(database_url=db_url, broker_url=None), parse_config(data))


@pytest.fixture
def runtime_factory():
    made = []

    def factory(db_url: str, config_overrides: dict | None = None):
        rt = make_runtime(db_url, config_overrides)
        made.append(rt)
        return rt

    yield factory
    for rt in made:
        rt.close()
