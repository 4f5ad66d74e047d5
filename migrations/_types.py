"""Column types for the migrations: a frozen copy, not an import of the app's.

A migration must build the same schema forever, whatever the application becomes, so
nothing under ``migrations/`` imports ``jobs``, ``routing`` or ``worker``
(tests/unit/test_migrations_isolated.py checks it). ``UTCDateTime`` below is a copy of
``jobs.ledger.types.UTCDateTime`` as it was when migrations 0001 and 0002 were written.
Do not edit it to follow the app: if the app's type ever changes in a way the schema
must see, write a new migration (with a new type here beside this one, if needed).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes; SQLite stores naive values, so attach UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value if value.tzinfo else value.replace(tzinfo=UTC)
