"""The one list of "the database was briefly unreachable" errors.

Retried by the ledger write (answers already paid for are kept and written again) and by
the Celery tasks; an error not listed here means the data or the code is wrong, and
retrying would only repeat it.
"""

from __future__ import annotations

from functools import cache


def _psycopg(*names: str) -> tuple[type[BaseException], ...]:
    """psycopg's own classes: the ledger writer's COPY path raises them unwrapped."""
    try:
        import psycopg
    except ImportError:
        return ()
    return tuple(getattr(psycopg, n) for n in names)


@cache
def transient_db_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (OperationalError, InterfaceError, *_psycopg("OperationalError", "InterfaceError"))


@cache
def integrity_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import IntegrityError

    return (IntegrityError, *_psycopg("IntegrityError"))


def is_transient_db_error(exc: BaseException) -> bool:
    return isinstance(exc, transient_db_errors())


def is_integrity_error(exc: BaseException) -> bool:
    return isinstance(exc, integrity_errors())
