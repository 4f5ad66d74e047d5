"""Engines and sessions. Created on demand (never at import) and cached per URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the progress bar read while the runner writes; foreign keys are off by default.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


_urls_seen: set[str] = set()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    _urls_seen.add(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    return engine


@lru_cache(maxsize=8)
def _factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error."""
    session = _factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _engines() -> list[Engine]:
    return [get_engine(url) for url in _urls_seen]


def dispose_all(*, close: bool = True) -> None:
    """Drop pooled connections and forget every engine.

    Tests that drop databases close them; a forked worker child passes ``close=False``:
    closing would send a terminate message on a socket the parent still uses
    (SQLAlchemy's advice for forked processes is ``dispose(close=False)``).
    """
    for engine in _engines():
        engine.dispose(close=close)
    get_engine.cache_clear()
    _factory.cache_clear()
    _urls_seen.clear()


def rowcount(result: Result[Any]) -> int:
    """The number of rows an UPDATE or DELETE matched.

    ``Session.execute`` is typed as returning a plain ``Result``; for a DML statement without
    RETURNING it is a ``CursorResult``, which carries the count.
    """
    return cast("CursorResult[Any]", result).rowcount
