"""Durable "this call is going out" markers for budget holds, written in group commits.

After a crash, recovery cannot ask a dead process which of its admitted items it had
already handed to a provider. The admission gate takes holds in small batches ahead of the
senders, so some holds always belong to calls that never started. A sender therefore
marks its hold ``sent_at`` *before* the call leaves (inside the provider pool, after
rate limits and the concurrency slot, so a call waiting for its turn is not marked); recovery settles at the reserved
amount only marked holds and releases the rest to zero, so lease-expiry charges never
exceed what may really have been sent.

One write per call would put a database round trip on every call's path; instead the
senders that want to go out at about the same time share one UPDATE (group commit): each
waits only for the flush that carries its hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import select, update

from jobs.errors import SendRefused
from jobs.ledger.models import Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.money.budgets import Hold

WriteMarks = Callable[[list[str]], Awaitable[set[str]]]


def mark_sent(db_url: str, reservation_ids: list[str]) -> set[str]:
    """Stamp the holds as sent (a hold keeps its first stamp); returns the ids of those still
    open. A hold closed meanwhile (the reaper released a claim whose lease had lapsed: its
    item may be claimed again elsewhere) is not stamped, and its call must not go out."""
    with session_scope(db_url) as s:
        s.execute(
            update(Reservation)
            .where(Reservation.id.in_(reservation_ids), Reservation.state == "open", Reservation.sent_at.is_(None))
            .values(sent_at=utcnow())
        )
        return set(s.scalars(select(Reservation.id).where(Reservation.id.in_(reservation_ids), Reservation.state == "open")))


class SentLog:
    """Group-commits sent markers; :meth:`mark` returns once the hold's marker is durable, and
    raises :class:`~jobs.errors.SendRefused` for a hold that is no longer open."""

    def __init__(self, write: WriteMarks) -> None:
        self._write = write
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def mark(self, reservation_id: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((reservation_id, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        await future

    def before_send(self, hold: Hold | None) -> Callable[[], Awaitable[None]] | None:
        """The pool's ``before_send`` for a call under ``hold``: marks it on the first try
        (after rate limits and the provider's concurrency slot, as close to the wire as the
        pool gets), nothing on retries; None without a hold (no budget, nothing to mark)."""
        if hold is None:
            return None
        marked = False

        async def mark_once() -> None:
            nonlocal marked
            if not marked:
                await self.mark(hold.reservation_id)
                marked = True

        return mark_once

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                still_open = await self._write([rid for rid, _ in batch])
            except Exception as exc:  # every waiter of this flush fails: none of them may send
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for rid, future in batch:
                if future.done():
                    continue
                if rid in still_open:
                    future.set_result(None)
                else:
                    future.set_exception(SendRefused(f"not sent: its budget hold {rid} was closed before the call went out"))
