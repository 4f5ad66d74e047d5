"""Engines and sessions. Created on demand (never at import) and cached per URL.

Infrastructure errors are translated here, in one place: a URL that names no usable
dialect or driver (``get_engine``) and a database that cannot be reached or opened
(``check_database``, called once when a command or a worker starts) become an
``InfrastructureError`` naming the database without its password. Errors during work are
left alone: the ledger writer and the Celery tasks retry the transient ones
(``jobs/ledger/transient.py``), and anything else is a bug that keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from jobs.errors import InfrastructureError


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the progress bar read while the runner writes; foreign keys are off by default.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


_urls_seen: set[str] = set()


def safe_url(url: str) -> str:
    """The database URL without its password (for messages and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database URL>"


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    text = str(cause).strip()
    return text.splitlines()[0].strip() if text else type(cause).__name__


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise InfrastructureError(
            f"bad database URL {safe_url(url)}: {_first_line(exc)} (use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)"
        ) from None
    _urls_seen.add(url)
    return engine


def check_database(url: str) -> None:
    """Connect once; an unreachable or unopenable database is an ``InfrastructureError``.

    Called where a process starts to use the ledger (a CLI command, a worker), so the user
    gets one line naming the database instead of a driver traceback. Work after this
    point keeps the driver's errors, which the retrying callers understand.
    """
    from jobs.ledger.transient import transient_db_errors

    engine = get_engine(url)
    try:
        with engine.connect():
            pass
    except transient_db_errors() as exc:
        raise InfrastructureError(f"cannot reach the database {safe_url(url)}: {_first_line(exc)}") from None


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
