"""Writing a batch of provider outcomes to the ledger, fast on Postgres.

On Postgres the attempts go in with COPY and the item outcomes through a COPY-filled
staging table and two set-based UPDATEs, instead of one statement per row: at a thousand
answers a second the per-row statements cost more CPU (client and server, on the same
cores as the senders) than the calls themselves. Other databases take the portable path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam
from sqlalchemy.orm import Session

from jobs.ledger.models import Attempt, Item

if TYPE_CHECKING:
    import psycopg

    from jobs.providers.types import Attempt as CallAttempt

ATTEMPT_COLUMNS = tuple(c.name for c in Attempt.__table__.columns)
"""The columns of ``attempts``, from the model: one definition for COPY and INSERT alike."""


def attempt_row(
    job_id: str, item_id: int, a: CallAttempt, cost_micro_usd: int, price_id: int | None, purpose: str = "answer"
) -> dict[str, Any]:
    """The ``attempts`` row of one provider call, charged ``cost_micro_usd`` at ``price_id``;
    ``purpose`` is ``answer``, ``twin`` or ``judge`` (see ``Attempt.purpose``)."""
    return {
        "id": a.attempt_id,
        "job_id": job_id,
        "item_id": item_id,
        "attempt_no": a.attempt_no,
        "model": a.model,
        "provider": a.provider,
        "is_fallback": a.is_fallback,
        "request_id": a.request_id,
        "status_code": a.status_code,
        "error_class": a.error_class,
        "error_message": a.error_message,
        "latency_ms": a.latency_ms,
        "prompt_tokens": a.prompt_tokens,
        "cached_tokens": a.cached_tokens,
        "cache_write_tokens": a.cache_write_tokens,
        "completion_tokens": a.completion_tokens,
        "usage_estimated": a.usage_estimated,
        "cost_micro_usd": cost_micro_usd,
        "price_id": price_id,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "provider_batch_id": a.provider_batch_id,
        "purpose": purpose,
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one item's calls came to. ``cost_micro_usd`` and ``attempts`` are always added to
    the item; the rest is written only while the item is still held by this claim."""

    item_id: int
    state: str
    model: str | None
    response: Any
    status_code: int | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int
    attempts: int

    def guarded_params(self) -> dict[str, Any]:
        """Bind parameters of the guarded outcome UPDATE (``b_id`` names the item: a bind
        named like a column would also be added to the unguarded cost UPDATE by Core)."""
        return {
            "b_id": self.item_id,
            "state": str(self.state),
            "model": self.model,
            "response": self.response,
            "status_code": self.status_code,
            "error": self.error,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


_STAGE = """CREATE TEMP TABLE IF NOT EXISTS rb_outcome_stage (
    id bigint, state text, model text, response text, status_code integer, error text,
    prompt_tokens integer, completion_tokens integer, cost bigint, n integer
) ON COMMIT DELETE ROWS"""
# summed per item first: UPDATE ... FROM applies one joined row per target row, and a write
# can stage an item more than once (the judge's two calls of an item, both orders)
_ADD_COST = """UPDATE items AS i SET cost_micro_usd = i.cost_micro_usd + st.cost, attempts_count = i.attempts_count + st.n
FROM (SELECT id, SUM(cost) AS cost, SUM(n) AS n FROM rb_outcome_stage GROUP BY id) AS st WHERE i.id = st.id"""
_OUTCOME = """UPDATE items AS i SET state = st.state, model = st.model, response = st.response::json,
    status_code = st.status_code, error = st.error, prompt_tokens = st.prompt_tokens,
    completion_tokens = st.completion_tokens, lease_until = NULL, updated_at = %(now)s
FROM rb_outcome_stage AS st WHERE i.id = st.id AND i.state = 'sent'"""


def write_outcomes(
    s: Session, attempts: list[dict[str, Any]], outcomes: list[Outcome], now: datetime, lease: datetime | None
) -> None:
    """The outcome is written only where the item is still 'sent' under ``lease``; the cost
    and attempt count are always added."""
    if s.get_bind().dialect.name == "postgresql":
        _write_postgres(s, attempts, outcomes, now, lease)
    else:
        _write_portable(s, attempts, outcomes, now, lease)


def _write_postgres(
    s: Session, attempts: list[dict[str, Any]], outcomes: list[Outcome], now: datetime, lease: datetime | None
) -> None:
    # only the postgresql+psycopg dialect comes here: its DB-API connection is psycopg's own
    raw = cast("psycopg.Connection[Any]", s.connection().connection.dbapi_connection)
    with raw.cursor() as cur:
        if attempts:
            with cur.copy(f"COPY attempts ({', '.join(ATTEMPT_COLUMNS)}) FROM STDIN") as copy:
                for row in attempts:
                    copy.write_row(tuple(row[c] for c in ATTEMPT_COLUMNS))
        if not outcomes:
            return
        cur.execute(_STAGE)
        with cur.copy("COPY rb_outcome_stage FROM STDIN") as copy:
            for o in outcomes:
                copy.write_row(
                    (
                        o.item_id,
                        str(o.state),
                        o.model,
                        json.dumps(o.response, ensure_ascii=False) if o.response is not None else None,
                        o.status_code,
                        o.error,
                        o.prompt_tokens,
                        o.completion_tokens,
                        o.cost_micro_usd,
                        o.attempts,
                    )
                )
        cur.execute(_ADD_COST)
        if lease is None:
            cur.execute(_OUTCOME, {"now": now})
        else:
            cur.execute(_OUTCOME + " AND i.lease_until = %(lease)s", {"now": now, "lease": lease})


def _write_portable(
    s: Session, attempts: list[dict[str, Any]], outcomes: list[Outcome], now: datetime, lease: datetime | None
) -> None:
    if attempts:
        s.execute(cast(Table, Attempt.__table__).insert(), attempts)
    if not outcomes:
        return
    items = cast(Table, Item.__table__)  # a declarative model's __table__ is a Table (typed FromClause)
    s.execute(
        items.update()
        .where(items.c.id == bindparam("b_id"))
        .values(
            cost_micro_usd=items.c.cost_micro_usd + bindparam("b_cost"),
            attempts_count=items.c.attempts_count + bindparam("b_n"),
        ),
        # Only the b_* keys: Core would add any key named like a column (state, response...)
        # to this unguarded SET clause and overwrite the outcome of an item re-sent since.
        [{"b_id": o.item_id, "b_cost": o.cost_micro_usd, "b_n": o.attempts} for o in outcomes],
    )
    guard = [items.c.id == bindparam("b_id"), items.c.state == "sent"]
    if lease is not None:
        guard.append(items.c.lease_until == lease)
    s.execute(
        items.update()
        .where(*guard)
        .values(
            state=bindparam("state"),
            model=bindparam("model"),
            response=bindparam("response", type_=items.c.response.type),
            status_code=bindparam("status_code"),
            error=bindparam("error"),
            prompt_tokens=bindparam("prompt_tokens"),
            completion_tokens=bindparam("completion_tokens"),
            lease_until=None,
            updated_at=now,
        ),
        [o.guarded_params() for o in outcomes],
    )
