"""The fan-out that spends the money: claimed items -> budget holds -> provider calls -> ledger.

Three parts with one job each, composed by :class:`FanOut`:

- :class:`AdmissionGate` takes holds just in time, in small batches, so the money held at
  any moment is about the worst case of the calls in flight; it defers an item that only
  money held for calls in flight keeps out, and lets the ``--on-exhausted`` policy decide
  once deferring cannot help.
- :class:`LedgerFlusher` writes answers in batches off the senders' path: a sender never
  waits for the database, only for its provider.
- :class:`CancelWatch` polls the job state, so that no new call starts more than
  ``cancel_poll_s`` after ``cancel`` even while no answer comes back.

With a budget, a sender marks its hold sent (:class:`jobs.pipeline.sent.SentLog`, group
commits) before its call leaves, so a crash charges only holds whose calls may have gone out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobs.lifecycle.states import JobState
from jobs.money.admission import AdmitResult, Admitted, BudgetPlan, admit
from jobs.money.budgets import Hold
from jobs.money.pricing import PriceVersion
from jobs.providers.types import CallResult, ChatRequest
from jobs.runtime import Runtime

if TYPE_CHECKING:
    from jobs.pipeline.record import Answer

log = logging.getLogger(__name__)

ADMIT_BATCH = 16
DEFER_SLEEP_S = 0.2
DEFER_MAX_S = 60.0
FLUSH_EVERY = 200
FLUSH_SECONDS = 0.5


class CancelWatch:
    """Sets ``stop`` when the job leaves ``in_progress`` (a cancel from any worker)."""

    def __init__(self, read_state: Callable[[], Awaitable[str]], every_s: float, stop: asyncio.Event) -> None:
        self._read_state = read_state
        self._every_s = every_s
        self.stop = stop

    async def run(self) -> None:
        while not self.stop.is_set():
            await asyncio.sleep(self._every_s)
            try:
                state = await self._read_state()
            except Exception:
                log.warning("cannot read the job state to check for a cancel", exc_info=True)
                continue
            if state != JobState.IN_PROGRESS:
                self.stop.set()


class LedgerFlusher:
    """Collects answers and records them in batches; a failed write stops the fan-out."""

    def __init__(
        self,
        record: Callable[[list[Answer]], Awaitable[str]],
        stop: asyncio.Event,
        *,
        flush_every: int = FLUSH_EVERY,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._record = record
        self._stop = stop
        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._pending: list[Answer] = []
        self._wanted = asyncio.Event()
        self._flushed = asyncio.Event()
        self._finishing = False
        self.failure: BaseException | None = None
        self._done = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, answer: Answer) -> None:
        self._pending.append(answer)
        if len(self._pending) >= self._flush_every:
            self._wanted.set()

    async def flush_now(self) -> None:
        """Wait until what is pending now has been written (or the writer failed or stopped)."""
        if self._done:
            return
        self._flushed.clear()
        self._wanted.set()
        await self._flushed.wait()

    def finish(self) -> None:
        """Write what is left, then let :meth:`run` return."""
        self._finishing = True
        self._wanted.set()

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            self._done = True
            self._flushed.set()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wanted.wait(), self._flush_seconds)
            except TimeoutError:
                pass
            self._wanted.clear()
            if self._pending:
                batch = self._pending[:]
                self._pending.clear()
                try:
                    state = await self._record(batch)
                except BaseException as exc:
                    self.failure = exc
                    self._stop.set()
                    self._flushed.set()
                    return
                if state == JobState.CANCELLING:
                    self._stop.set()
                self._flushed.set()
            if self._finishing and not self._pending:
                return


AdmitFn = Callable[[list[Any], bool], Awaitable[AdmitResult]]


class AdmissionGate:
    """Hands admitted items to senders one at a time, taking budget holds just in time."""

    def __init__(
        self,
        rows: Sequence[Any],
        admit_batch: AdmitFn,
        flusher: LedgerFlusher,
        stop: asyncio.Event,
        *,
        batch_size: int = ADMIT_BATCH,
        defer_sleep_s: float = DEFER_SLEEP_S,
        defer_max_s: float = DEFER_MAX_S,
    ) -> None:
        self._todo: deque[Any] = deque(rows)  # claimed, not yet admitted
        self._ready: deque[Admitted] = deque()  # admitted (money held with a budget), not yet sent
        self._deferred: deque[Any] = deque()  # affordable once holds in flight settle
        self._admit = admit_batch
        self._flusher = flusher
        self._stop = stop
        self._lock = asyncio.Lock()
        self._answered = asyncio.Event()
        self._batch_size = batch_size
        self._defer_sleep_s = defer_sleep_s
        self._defer_max_s = defer_max_s
        self.in_flight = 0

    async def next(self) -> Admitted | None:
        """The next item to send, or None when nothing is left (or the job stopped)."""
        async with self._lock:
            waited = 0.0
            while not self._ready and not self._stop.is_set():
                final = False
                if self._todo:
                    batch = [self._todo.popleft() for _ in range(min(self._batch_size, len(self._todo)))]
                elif self._deferred:
                    # Money is held for calls in flight (here or in other workers): let them
                    # settle, then try again; apply the policy after ``defer_max_s``.
                    if self._flusher.pending:
                        await self._flusher.flush_now()
                    elif self.in_flight:
                        self._answered.clear()
                        await self._answered.wait()
                    else:
                        await asyncio.sleep(self._defer_sleep_s)
                        waited += self._defer_sleep_s
                    final = waited >= self._defer_max_s
                    batch = list(self._deferred)
                    self._deferred.clear()
                else:
                    return None
                outcome = await self._admit(batch, final)
                self._ready.extend(outcome.admitted)
                self._deferred.extend(outcome.deferred)
                if outcome.stop:
                    # Rows neither admitted nor deferred were refused because the job
                    # stopped: they go back to the unsent pile, so the cancel finds them.
                    handled = {a.row.id for a in outcome.admitted} | {r.id for r in outcome.deferred}
                    self._todo.extendleft(reversed([r for r in batch if r.id not in handled]))
                    self._stop.set()
            if not self._ready or self._stop.is_set():
                return None
            self.in_flight += 1
            return self._ready.popleft()

    def answered(self) -> None:
        """A call handed out by :meth:`next` came back (successfully or not)."""
        self.in_flight -= 1
        self._answered.set()

    def unsent(self) -> tuple[list[int], list[Hold]]:
        """Item ids never handed to a provider, and the holds taken for some of them."""
        ids = [r.id for r in self._todo] + [r.id for r in self._deferred] + [a.row.id for a in self._ready]
        holds = [a.hold for a in self._ready if a.hold is not None]
        return ids, holds


def request_for(adm: Admitted) -> ChatRequest:
    row = adm.row
    return ChatRequest(
        custom_id=row.custom_id, model=adm.model, messages=adm.messages, max_tokens=adm.max_tokens, params=dict(row.params or {})
    )


def unbuildable(adm: Admitted, exc: Exception) -> CallResult:
    """The result of an item whose request cannot be built: it fails alone, with the reason,
    and nothing was sent (no attempt, no cost; its hold settles at zero)."""
    request = ChatRequest(custom_id=adm.row.custom_id, model=adm.model, messages=[], max_tokens=adm.max_tokens)
    reason = f"request cannot be built: {type(exc).__name__}: {exc}"[:500]
    return CallResult(request, False, [], None, adm.model, None, reason)


class FanOut:
    """Sends one chunk's claimed items with bounded concurrency and records every answer."""

    def __init__(
        self,
        rt: Runtime,
        job_id: str,
        rows: Sequence[Any],
        prices: dict[str, PriceVersion],
        job_max_tokens: int | None,
        lease: datetime | None = None,
        plan: BudgetPlan | None = None,
    ) -> None:
        self.rt = rt
        self.job_id = job_id
        self.rows = rows
        self.prices = prices
        self.job_max_tokens = job_max_tokens
        self.lease = lease
        self.plan = plan or BudgetPlan(None, None, "downgrade", "", "")
        self.stop = asyncio.Event()

    async def _admit(self, batch: list[Any], final: bool) -> AdmitResult:
        args = (self.rt, self.job_id, batch, self.plan, self.prices, self.job_max_tokens, final)
        if self.plan.active:
            return await asyncio.to_thread(admit, *args)
        return admit(*args)  # no budget: admission is pure bookkeeping, no database

    async def _record(self, batch: list[Answer]) -> str:
        from jobs.pipeline.record import record_with_retry

        return await record_with_retry(self.rt, self.job_id, batch, self.prices, self.lease)

    async def _mark_sent(self, reservation_ids: list[str]) -> set[str]:
        from jobs.pipeline.record import db_retrying
        from jobs.pipeline.sent import mark_sent

        warning = f"job {self.job_id}: database unreachable while marking {len(reservation_ids)} calls sent; retrying"
        async for attempt in db_retrying(warning):
            with attempt:
                return await asyncio.to_thread(mark_sent, self.rt.db_url, reservation_ids)
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def _read_state(self) -> str:
        from jobs.pipeline.record import job_state

        return await asyncio.to_thread(job_state, self.rt, self.job_id)

    def _width(self) -> int:
        providers = self.rt.config.providers.values()
        return max(p.concurrency for p in providers) * max(1, len(providers))

    async def run(self) -> None:
        from jobs.lifecycle import transitions
        from jobs.pipeline import inflight
        from jobs.pipeline.sent import SentLog
        from jobs.providers import ProviderPool
        from jobs.providers.ratelimit import limiter_for

        pool = ProviderPool(
            self.rt.config, base_urls=self.rt.base_urls(), rate_limiter=limiter_for(self.rt.config, self.rt.settings.broker_url)
        )
        flusher = LedgerFlusher(self._record, self.stop)
        gate = AdmissionGate(self.rows, self._admit, flusher, self.stop)
        watch = CancelWatch(self._read_state, self.rt.settings.cancel_poll_s, self.stop)
        sent_log = SentLog(self._mark_sent)
        errors: list[BaseException] = []

        async def sender() -> None:
            try:
                await send_until_done()
            except Exception as exc:
                # the others finish the calls they have out, and their answers are written
                # before the error goes up: abandoned, they would be sent and paid for again
                errors.append(exc)
                self.stop.set()

        async def send_until_done() -> None:
            while not self.stop.is_set():
                adm = await gate.next()
                if adm is None:
                    return
                try:
                    request = request_for(adm)
                except Exception as exc:
                    gate.answered()
                    flusher.add((adm.row.id, unbuildable(adm, exc), adm.hold))
                    continue
                try:
                    inflight.mark(self.job_id, adm.row.id, self.lease)  # may reach the provider from here on
                    result = await pool.complete(request, sent_log.before_send(adm.hold))
                finally:
                    gate.answered()
                flusher.add((adm.row.id, result, adm.hold))

        watcher = asyncio.create_task(watch.run())
        writer = asyncio.create_task(flusher.run())
        try:
            await asyncio.gather(*(sender() for _ in range(min(self._width(), len(self.rows)))))
        finally:
            flusher.finish()
            await writer
            watcher.cancel()
            await pool.aclose()
        failure = flusher.failure or (errors[0] if errors else None)
        if failure is not None:
            unsent, holds = gate.unsent()
            try:
                await asyncio.to_thread(transitions.return_unsent_items, self.rt.db_url, self.job_id, unsent, holds, self.lease)
            except Exception:  # the database that failed the write: the reaper frees them later
                log.warning("job %s: cannot hand %d unsent items back after an error", self.job_id, len(unsent), exc_info=True)
            raise failure
        if self.stop.is_set():
            unsent, holds = gate.unsent()
            await asyncio.to_thread(transitions.cancel_unsent_items, self.rt.db_url, self.job_id, unsent, holds)
