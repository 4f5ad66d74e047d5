"""The money-spending fan-out, part by part: AdmissionGate, LedgerFlusher, CancelWatch, FanOut.

The pure tests drive each part with fakes on one event loop; the end-to-end ones claim a
routed chunk on a temporary SQLite ledger the way ``generate_chunk`` does and run
:class:`FanOut` against the built-in simulated provider over real local HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from jobs.ledger.models import Attempt, BudgetWindow, Item, Job, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle.service import JobSpec, cancel, submit
from jobs.lifecycle.states import ItemState, JobState
from jobs.money.admission import AdmitResult, Admitted, budget_plan
from jobs.money.budgets import Hold
from jobs.money.pricing import sync_prices
from jobs.pipeline import fanout, record, runner
from jobs.pipeline.fanout import AdmissionGate, CancelWatch, FanOut, LedgerFlusher
from jobs.pipeline.tasks import InlineQueue
from jobs.providers.types import Attempt as CallAttempt
from jobs.providers.types import CallResult, ChatRequest

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------- helpers: pure parts


@dataclass(frozen=True)
class Row:
    id: int


def hold_for(item_id: int) -> Hold:
    return Hold(f"h{item_id}", 100, (1,))


class FakeFlusher:
    """What the gate needs of a flusher: ``pending`` and ``flush_now``."""

    def __init__(self) -> None:
        self.pending = 0
        self.flushes = 0

    async def flush_now(self) -> None:
        self.flushes += 1
        self.pending = 0


class SlotAdmit:
    """A budget with room for ``slots`` holds at once; a full budget defers unless ``final``.

    ``free(item_id)`` settles an item's hold, as the ledger would once its answer is written.
    """

    def __init__(self, slots: int, *, final_admits: bool = True) -> None:
        self.slots = slots
        self.final_admits = final_admits
        self.held: set[int] = set()
        self.calls: list[tuple[list[int], bool]] = []

    async def __call__(self, batch: list, final: bool) -> AdmitResult:
        self.calls.append(([r.id for r in batch], final))
        out = AdmitResult()
        for row in batch:
            if len(self.held) < self.slots or (final and self.final_admits):
                self.held.add(row.id)
                out.admitted.append(Admitted(row, "m", hold_for(row.id), 8, []))
            elif not final:
                out.deferred.append(row)
        return out

    def free(self, item_id: int) -> None:
        self.held.discard(item_id)


def run_async(coro, timeout: float = 10.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---------------------------------------------------------------- helpers: a real ledger


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i:03d}", "prompt": f"question {i} " + "detail " * (i % 20)}) + "\n")
    return path


def submit_routed(rt, tmp_path: Path, n: int, **spec) -> str:
    """A job scored and routed; its generate steps are dropped (the test runs FanOut itself)."""
    q = InlineQueue()
    job_id = submit(rt, JobSpec(input_file=str(write_prompts(tmp_path / "in.jsonl", n)), router="length", **spec), q)
    q.drain(lambda task, jid, chunk: None if task == "generate" else runner.run_task(rt, q, task, jid, chunk))
    with session_scope(rt.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.state == ItemState.ROUTED)) == n
    return job_id


def claim(rt, job_id: str) -> FanOut:
    """What ``generate_chunk`` does before it runs the fan-out: claim every routed item."""
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        rows = s.execute(
            select(Item.id, Item.custom_id, Item.prompt, Item.messages, Item.params, Item.max_tokens, Item.model)
            .where(Item.job_id == job_id, Item.state == ItemState.ROUTED)
            .order_by(Item.id)
        ).all()
        now = utcnow()
        lease = now + timedelta(seconds=rt.settings.send_lease_s)
        s.execute(
            update(Item).where(Item.id.in_([r.id for r in rows])).values(state=ItemState.SENT, lease_until=lease, updated_at=now)
        )
        models = sorted({r.model for r in rows} | {job.weak_model})
        prices = sync_prices(s, rt.config, rt.config.models_with_fallbacks(models))
        return FanOut(rt, job_id, rows, prices, job.spec.get("max_tokens"), lease, budget_plan(job))


class Sends:
    """Every ``ProviderPool.complete`` call a watched FanOut makes: (custom_id, stopped already?, time)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, float]] = []
        self.fan: FanOut | None = None

    def watch(self, fan: FanOut) -> FanOut:
        self.fan = fan
        return fan


@pytest.fixture
def sends(monkeypatch) -> Sends:
    from jobs.providers.pool import ProviderPool

    seen = Sends()

    class RecordingPool(ProviderPool):
        async def complete(self, req: ChatRequest, before_send=None) -> CallResult:
            seen.calls.append((req.custom_id, bool(seen.fan and seen.fan.stop.is_set()), time.monotonic()))
            return await super().complete(req, before_send)

    monkeypatch.setattr("jobs.providers.ProviderPool", RecordingPool)  # FanOut.run imports it from there
    return seen


def ledger(db_url: str, job_id: str) -> dict:
    with session_scope(db_url) as s:
        window = s.execute(
            select(BudgetWindow.cap_micro_usd, BudgetWindow.spent_micro_usd, BudgetWindow.reserved_micro_usd).where(
                BudgetWindow.budget_id == s.get(Job, job_id).job_budget_id
            )
        ).one()
        return {
            "cap": window[0],
            "spent": window[1],
            "reserved": window[2],
            "attempts_cost": int(
                s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)).where(Attempt.job_id == job_id))
            ),
            "items_cost": int(s.scalar(select(func.coalesce(func.sum(Item.cost_micro_usd), 0)).where(Item.job_id == job_id))),
            "settled": int(
                s.scalar(
                    select(func.coalesce(func.sum(Reservation.settled_micro_usd), 0)).where(
                        Reservation.job_id == job_id, Reservation.state == "settled"
                    )
                )
            ),
            "open_holds": s.scalar(
                select(func.count()).select_from(Reservation).where(Reservation.job_id == job_id, Reservation.state == "open")
            ),
            "states": dict(s.execute(select(Item.state, func.count()).where(Item.job_id == job_id).group_by(Item.state)).all()),
            "attempted": set(
                s.scalars(select(Item.custom_id).join(Attempt, Attempt.item_id == Item.id).where(Item.job_id == job_id))
            ),
            "item_state": dict(s.execute(select(Item.custom_id, Item.state).where(Item.job_id == job_id)).all()),
        }


# ---------------------------------------------------------------- 1. reserve / settle


def test_fanout_under_a_cap_settles_every_hold_to_the_real_cost(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    """A cap that fits only a few strong calls at once: holds are deferred, downgraded, settled."""
    rt = runtime_factory(sqlite_url)
    # ~2,400 micro-USD worst case per strong call at max_tokens=64: a 10,000 cap holds about four.
    job_id = submit_routed(rt, tmp_path, 30, strong_share=0.8, budget_usd=0.01, on_exhausted="downgrade", max_tokens=64)
    fan = claim(rt, job_id)
    assert fan.plan.active
    deferred, admitted = set(), set()
    real_admit = fan._admit

    async def spy(batch, final):
        out = await real_admit(batch, final)
        deferred.update(r.id for r in out.deferred)
        admitted.update(a.row.id for a in out.admitted)
        return out

    fan._admit = spy

    asyncio.run(fan.run())

    got = ledger(sqlite_url, job_id)
    assert got["reserved"] == 0 and got["open_holds"] == 0
    assert got["spent"] == got["attempts_cost"] == got["items_cost"] == got["settled"] > 0
    assert got["spent"] <= got["cap"]
    assert got["states"].get(ItemState.SENT, 0) == 0, got["states"]
    assert set(got["states"]) <= {ItemState.SUCCEEDED, ItemState.SKIPPED_BUDGET}
    with session_scope(sqlite_url) as s:
        downgraded = s.scalar(
            select(func.count()).select_from(Item).where(Item.job_id == job_id, Item.route_reason == "budget_downgrade")
        )
        strong_ok = s.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.job_id == job_id, Item.model == "sim-strong", Item.state == "succeeded")
        )
    assert downgraded > 0 and strong_ok > 0, "the cap is meant to bind"
    # Items kept out only by money held for calls in flight were admitted once those settled.
    assert deferred and deferred <= admitted
    assert len(admitted) == len(fan.rows)


def test_gate_retries_deferred_items_after_in_flight_answers() -> None:
    async def main() -> None:
        admit = SlotAdmit(slots=2)
        stop = asyncio.Event()
        flusher = FakeFlusher()
        gate = AdmissionGate([Row(1), Row(2), Row(3)], admit, flusher, stop, batch_size=16, defer_sleep_s=5, defer_max_s=60)
        first, second = await gate.next(), await gate.next()
        assert [first.row.id, second.row.id] == [1, 2] and gate.in_flight == 2
        assert admit.calls == [([1, 2, 3], False)]  # item 3 deferred: the money is held for 1 and 2

        third = asyncio.create_task(gate.next())
        await asyncio.sleep(0.05)
        assert not third.done(), "a deferred item must wait for a call in flight, not be decided"
        assert admit.calls == [([1, 2, 3], False)]

        admit.free(1)  # the first answer is written and its hold settled
        gate.answered()
        got = await asyncio.wait_for(third, 2)
        assert got is not None and got.row.id == 3
        assert admit.calls == [([1, 2, 3], False), ([3], False)]
        assert gate.in_flight == 2 and gate.unsent() == ([], [])
        gate.answered(), gate.answered()
        assert await gate.next() is None

    run_async(main())


def test_gate_flushes_pending_answers_before_retrying_deferred_items() -> None:
    async def main() -> None:
        admit = SlotAdmit(slots=1)
        flusher = FakeFlusher()
        gate = AdmissionGate([Row(1), Row(2)], admit, flusher, asyncio.Event(), defer_sleep_s=5, defer_max_s=60)
        assert (await gate.next()).row.id == 1
        gate.answered()
        flusher.pending = 1  # the answer of 1 is waiting to be written
        orig = flusher.flush_now

        async def flush_and_settle() -> None:
            await orig()
            admit.free(1)

        flusher.flush_now = flush_and_settle
        got = await gate.next()
        assert got is not None and got.row.id == 2
        assert flusher.flushes == 1
        assert admit.calls == [([1, 2], False), ([2], False)]

    run_async(main())


def test_gate_passes_final_once_the_defer_time_runs_out() -> None:
    async def main() -> None:
        admit = SlotAdmit(slots=0)  # someone else holds all the money, nothing is in flight here
        gate = AdmissionGate([Row(1), Row(2)], admit, FakeFlusher(), asyncio.Event(), defer_sleep_s=0.02, defer_max_s=0.1)
        started = time.monotonic()
        got = await gate.next()
        elapsed = time.monotonic() - started
        assert got is not None and got.row.id == 1  # the policy decided (here: admitted) on the final try
        finals = [final for _, final in admit.calls]
        assert finals[0] is False and finals[-1] is True and finals.count(True) == 1
        assert 4 <= len(finals) - 2 <= 6, admit.calls  # about defer_max_s / defer_sleep_s retries
        assert all(ids == [1, 2] for ids, _ in admit.calls)
        assert elapsed >= 0.1 - 0.02
        assert (await gate.next()).row.id == 2
        assert len(admit.calls) == len(finals)  # 2 was admitted with 1 on the final try

    run_async(main())


def test_gate_final_try_that_still_cannot_afford_ends_the_gate() -> None:
    async def main() -> None:
        admit = SlotAdmit(slots=0, final_admits=False)  # the policy skips
        gate = AdmissionGate([Row(1)], admit, FakeFlusher(), asyncio.Event(), defer_sleep_s=0.01, defer_max_s=0.03)
        assert await gate.next() is None
        assert admit.calls[-1] == ([1], True)
        assert gate.unsent() == ([], [])  # skipped by admission, not left for cancel_unsent_items

    run_async(main())


# ---------------------------------------------------------------- 2. cancel mid-batch


def test_stop_part_way_leaves_exactly_the_unsent_ids_and_their_holds() -> None:
    async def main() -> None:
        # odd ids fit, even ones wait for money in flight
        async def admit(batch: list, final: bool) -> AdmitResult:
            out = AdmitResult()
            for row in batch:
                if row.id % 2:
                    out.admitted.append(Admitted(row, "m", hold_for(row.id), 8, []))
                else:
                    out.deferred.append(row)
            return out

        stop = asyncio.Event()
        rows = [Row(i) for i in range(1, 11)]
        gate = AdmissionGate(rows, admit, FakeFlusher(), stop, batch_size=6)
        handed = [(await gate.next()).row.id]
        stop.set()
        assert await gate.next() is None
        assert await gate.next() is None
        ids, holds = gate.unsent()
        assert handed == [1]
        assert len(ids) == len(set(ids)) and set(ids) == {r.id for r in rows} - set(handed)
        assert sorted(holds, key=lambda h: h.reservation_id) == [hold_for(3), hold_for(5)]

    run_async(main())


def test_cancel_watch_stops_the_gate_part_way() -> None:
    async def main() -> None:
        state = {"now": JobState.IN_PROGRESS, "reads": 0}

        async def read_state() -> str:
            state["reads"] += 1
            if state["reads"] == 2:
                raise OSError("database blip")  # logged and polled again, not fatal
            return state["now"]

        async def admit(batch: list, final: bool) -> AdmitResult:
            return AdmitResult(admitted=[Admitted(r, "m", hold_for(r.id), 8, []) for r in batch])

        stop = asyncio.Event()
        rows = [Row(i) for i in range(1, 21)]
        gate = AdmissionGate(rows, admit, FakeFlusher(), stop, batch_size=8)
        watch = asyncio.create_task(CancelWatch(read_state, 0.01, stop).run())
        handed = [(await gate.next()).row.id for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not stop.is_set() and not watch.done() and state["reads"] >= 2
        state["now"] = JobState.CANCELLING
        await asyncio.wait_for(watch, 1)
        assert stop.is_set()
        assert await gate.next() is None
        ids, holds = gate.unsent()
        assert handed == [1, 2, 3]
        assert sorted(ids) == list(range(4, 21))
        assert sorted(h.reservation_id for h in holds) == sorted(f"h{i}" for i in range(4, 9))  # admitted, never sent

    run_async(main())


def test_a_batch_refused_because_the_job_stopped_is_still_unsent() -> None:
    """``admit`` answers ``stop`` without admitting anything when the job is no longer in
    progress (a cancel seen by admission before the CancelWatch): that batch was never sent
    either, so ``unsent()`` must list it for ``cancel_unsent_items``."""

    async def main() -> None:
        calls = []

        async def admit(batch: list, final: bool) -> AdmitResult:
            calls.append([r.id for r in batch])
            if len(calls) == 1:
                return AdmitResult(admitted=[Admitted(r, "m", hold_for(r.id), 8, []) for r in batch])
            return AdmitResult(stop=True)  # jobs.money.admission.admit: job.state != in_progress

        rows = [Row(i) for i in range(1, 11)]
        gate = AdmissionGate(rows, admit, FakeFlusher(), asyncio.Event(), batch_size=4)
        handed = [(await gate.next()).row.id for _ in range(4)]
        assert await gate.next() is None
        assert calls == [[1, 2, 3, 4], [5, 6, 7, 8]]
        ids, _ = gate.unsent()
        assert sorted(ids) == sorted({r.id for r in rows} - set(handed)), "ids 5-8 were never sent but are not unsent()"

    run_async(main())


def test_cancel_while_fanning_out_sends_nothing_after_it_is_seen(tmp_path: Path, sqlite_url: str, runtime_factory, sends) -> None:
    rt = runtime_factory(sqlite_url, {"providers.sim.concurrency": 2, "providers.sim.simulated.latency_ms": 200})
    rt.settings.cancel_poll_s = 0.05
    # 12 items: one admission batch (ADMIT_BATCH = 16), all admitted with a hold before the cancel.
    job_id = submit_routed(rt, tmp_path, 12, strong_share=0.5, budget_usd=1.0, max_tokens=32)
    fan = sends.watch(claim(rt, job_id))

    async def main() -> float:
        task = asyncio.create_task(fan.run())
        await asyncio.sleep(0.3)  # two calls answered, two in flight
        await asyncio.to_thread(cancel, rt, job_id)
        cancelled_at = time.monotonic()
        await asyncio.wait_for(task, 10)
        return cancelled_at

    cancelled_at = asyncio.run(main())

    assert fan.stop.is_set()
    assert not [c for c in sends.calls if c[1]], "a call started after the fan-out had stopped"
    late = [c for c in sends.calls if c[2] > cancelled_at + 0.05 + 0.25]
    assert not late, f"calls started well after the cancel: {late}"
    sent = {c[0] for c in sends.calls}
    assert 2 <= len(sent) < 12 and len(sent) == len(sends.calls)
    got = ledger(sqlite_url, job_id)
    assert got["attempted"] == sent
    assert {cid for cid, st in got["item_state"].items() if st == ItemState.SUCCEEDED} == sent  # in flight: recorded
    assert {cid for cid, st in got["item_state"].items() if st == ItemState.CANCELLED} == set(got["item_state"]) - sent
    assert got["reserved"] == 0 and got["open_holds"] == 0  # holds of admitted, unsent items released to zero
    assert got["spent"] == got["attempts_cost"] == got["items_cost"]


def test_cancel_seen_first_by_admission_leaves_no_item_sent(tmp_path: Path, sqlite_url: str, runtime_factory, sends) -> None:
    """The cancel lands between the claim and the first admission (or between a CancelWatch
    poll and the next admission batch): admission refuses the batch; no call is made and
    every claimed item must end cancelled, not stay 'sent' until the reaper."""
    rt = runtime_factory(sqlite_url)
    job_id = submit_routed(rt, tmp_path, 20, strong_share=0.5, budget_usd=1.0, max_tokens=32)
    fan = sends.watch(claim(rt, job_id))
    cancel(rt, job_id)
    with session_scope(sqlite_url) as s:  # the 20 claimed items are 'sent': the job waits for them
        assert s.scalar(select(Job.state).where(Job.id == job_id)) == JobState.CANCELLING

    run_async(fan.run())

    assert sends.calls == []
    got = ledger(sqlite_url, job_id)
    assert got["attempted"] == set() and got["reserved"] == 0
    assert got["states"] == {ItemState.CANCELLED: 20}, got["states"]


# ---------------------------------------------------------------- 3. a failed flush


def answer(item_id: int) -> tuple[int, CallResult, None]:
    req = ChatRequest(custom_id=f"c{item_id}", model="m", messages=[], max_tokens=8)
    return (item_id, CallResult(req, True, [], {}, "m", 200, None), None)


def test_failed_flush_sets_failure_and_stop_and_releases_the_waiter() -> None:
    async def main() -> None:
        boom = RuntimeError("ledger unreachable")
        batches = []

        async def failing(batch) -> str:
            batches.append(batch)
            await asyncio.sleep(0.01)
            raise boom

        stop = asyncio.Event()
        flusher = LedgerFlusher(failing, stop, flush_every=1000, flush_seconds=30)
        writer = asyncio.create_task(flusher.run())
        flusher.add(answer(1))
        flusher.add(answer(2))
        await asyncio.wait_for(flusher.flush_now(), 2)  # woken by the failure, not left waiting
        assert flusher.failure is boom and stop.is_set()
        assert [[a[0] for a in b] for b in batches] == [[1, 2]]
        await asyncio.wait_for(writer, 1)  # run() returns; it does not raise

    run_async(main())


def test_flush_now_after_the_writer_failed_does_not_hang() -> None:
    async def main() -> None:
        async def failing(batch) -> str:
            raise RuntimeError("ledger unreachable")

        flusher = LedgerFlusher(failing, asyncio.Event(), flush_every=1, flush_seconds=30)
        writer = asyncio.create_task(flusher.run())
        flusher.add(answer(1))
        await asyncio.wait_for(writer, 1)
        assert flusher.failure is not None
        flusher.add(answer(2))
        await asyncio.wait_for(flusher.flush_now(), 0.3)

    run_async(main())


def test_flusher_writes_in_batches_and_stops_on_cancelling() -> None:
    async def main() -> None:
        batches = []

        async def rec(batch) -> str:
            batches.append([a[0] for a in batch])
            return JobState.CANCELLING if len(batches) == 2 else JobState.IN_PROGRESS

        stop = asyncio.Event()
        flusher = LedgerFlusher(rec, stop, flush_every=3, flush_seconds=30)
        writer = asyncio.create_task(flusher.run())
        for i in (1, 2, 3):
            flusher.add(answer(i))
        await asyncio.sleep(0.01)
        assert batches == [[1, 2, 3]] and flusher.pending == 0 and not stop.is_set()
        flusher.add(answer(4))
        await asyncio.wait_for(flusher.flush_now(), 1)
        assert batches == [[1, 2, 3], [4]] and stop.is_set()
        flusher.add(answer(5))
        flusher.finish()
        await asyncio.wait_for(writer, 1)
        assert batches == [[1, 2, 3], [4], [5]] and flusher.failure is None

    run_async(main())


def test_fanout_reraises_the_failed_write_and_stops_sending(tmp_path: Path, sqlite_url: str, runtime_factory, sends) -> None:
    rt = runtime_factory(sqlite_url, {"providers.sim.concurrency": 2, "providers.sim.simulated.latency_ms": 100})
    job_id = submit_routed(rt, tmp_path, 30)
    fan = sends.watch(claim(rt, job_id))
    boom = RuntimeError("ledger unreachable")
    writes = []

    async def failing(batch) -> str:
        writes.append(len(batch))
        raise boom

    fan._record = failing

    with pytest.raises(RuntimeError) as info:
        run_async(fan.run())

    assert info.value is boom
    assert writes and fan.stop.is_set()
    # 30 calls take 1.5 s at width 2; the first write fails after FLUSH_SECONDS and the fan-out stops.
    assert len(sends.calls) < 30 - 2 * 2
    assert not [c for c in sends.calls if c[1]]


# ---------------------------------------------------------------- 4. a late duplicate answer


def late_result(attempt_id: str, body: dict, model: str = "sim-weak") -> CallResult:
    now = utcnow()
    attempt = CallAttempt(
        attempt_id=attempt_id, model=model, provider="sim", attempt_no=1, status_code=200, error_class=None,
        error_message=None, request_id=attempt_id, latency_ms=5, prompt_tokens=100, completion_tokens=50,
        cached_tokens=0, usage_estimated=False, started_at=now, finished_at=now,
    )  # fmt: skip
    # a prompt that can count 100 tokens (usage beyond the input bound would be capped)
    request = ChatRequest(custom_id="x", model=model, messages=[{"role": "user", "content": "x " * 100}], max_tokens=64)
    return CallResult(request=request, ok=True, attempts=[attempt], body=body, model=model, status_code=200, error=None)


def test_late_answer_under_an_old_lease_is_paid_for_but_does_not_overwrite(
    tmp_path: Path, sqlite_url: str, runtime_factory
) -> None:
    rt = runtime_factory(sqlite_url)
    job_id = submit_routed(rt, tmp_path, 3, threshold=2.0)  # all weak
    with session_scope(sqlite_url) as s:
        item_id = s.scalar(select(func.min(Item.id)).where(Item.job_id == job_id))
        prices = sync_prices(s, rt.config, ["sim-weak", "sim-strong"])
    old_lease = utcnow() + timedelta(seconds=5)
    new_lease = old_lease + timedelta(seconds=60)
    with session_scope(sqlite_url) as s:  # claimed by worker A, then re-claimed by worker B
        s.execute(update(Item).where(Item.id == item_id).values(state=ItemState.SENT, lease_until=old_lease))
    with session_scope(sqlite_url) as s:
        s.execute(update(Item).where(Item.id == item_id).values(state=ItemState.SENT, lease_until=new_lease))

    def item():
        with session_scope(sqlite_url) as s:
            return s.execute(
                select(Item.state, Item.response, Item.cost_micro_usd, Item.attempts_count, Item.lease_until).where(
                    Item.id == item_id
                )
            ).one()

    def attempt_ids():
        with session_scope(sqlite_url) as s:
            return set(s.scalars(select(Attempt.id).where(Attempt.item_id == item_id)))

    one_call = prices["sim-weak"].cost_micro_usd(100, 50)
    assert one_call > 0

    # A's answer arrives while B's call is in flight: paid for, but B still holds the item.
    state = record.record_results(rt, job_id, [(item_id, late_result("a-late", {"from": "A"}), None)], prices, old_lease)
    assert state == JobState.IN_PROGRESS
    got = item()
    assert got.state == ItemState.SENT and got.response is None and got.lease_until == new_lease
    assert got.cost_micro_usd == one_call and got.attempts_count == 1
    assert attempt_ids() == {"a-late"}

    # B's answer, under the lease B holds, is the outcome.
    record.record_results(rt, job_id, [(item_id, late_result("b", {"from": "B"}), None)], prices, new_lease)
    got = item()
    assert got.state == ItemState.SUCCEEDED and got.response == {"from": "B"} and got.lease_until is None
    assert got.cost_micro_usd == 2 * one_call and got.attempts_count == 2

    # Another late duplicate (A retried its write): recorded, outcome untouched.
    record.record_results(rt, job_id, [(item_id, late_result("a-late-2", {"from": "A"}), None)], prices, old_lease)
    got = item()
    assert got.state == ItemState.SUCCEEDED and got.response == {"from": "B"}
    assert got.cost_micro_usd == 3 * one_call and got.attempts_count == 3
    assert attempt_ids() == {"a-late", "b", "a-late-2"}
    with session_scope(sqlite_url) as s:
        assert s.scalar(select(func.sum(Attempt.cost_micro_usd)).where(Attempt.job_id == job_id)) == s.scalar(
            select(func.sum(Item.cost_micro_usd)).where(Item.job_id == job_id)
        )


def test_module_constants_used_by_the_tests() -> None:
    """The end-to-end tests above size their batches on these."""
    assert fanout.ADMIT_BATCH == 16 and fanout.FLUSH_SECONDS == 0.5


def test_an_item_whose_request_cannot_be_built_fails_alone(tmp_path, sqlite_url, runtime_factory) -> None:
    """Params that are not a mapping (a row written before validation was strict, or a
    hand-edited ledger) fail that item with the reason; its neighbours are answered."""
    import json as _json

    from sqlalchemy import update as _update

    from jobs.ledger.models import Item as _Item
    from jobs.ledger.session import session_scope as _scope
    from jobs.lifecycle.service import JobSpec as _Spec
    from jobs.lifecycle.service import submit as _submit
    from jobs.pipeline.runner import run_task
    from jobs.pipeline.tasks import InlineQueue as _Queue

    data = tmp_path / "in.jsonl"
    data.write_text("".join(_json.dumps({"custom_id": f"r{i}", "prompt": f"q {i}"}) + "\n" for i in range(10)))
    rt = runtime_factory(sqlite_url)
    queue = _Queue()
    job_id = _submit(rt, _Spec(input_file=str(data), router="length", strong_share=0.5), queue)
    with _scope(sqlite_url) as s:
        s.execute(_update(_Item).where(_Item.job_id == job_id, _Item.custom_id == "r3").values(params=["not", "a", "dict"]))
    queue.drain(lambda task, jid, chunk: run_task(rt, queue, task, jid, chunk))
    with _scope(sqlite_url) as s:
        states = dict(s.execute(select(_Item.custom_id, _Item.state).where(_Item.job_id == job_id)).all())
        bad = s.scalars(select(_Item).where(_Item.job_id == job_id, _Item.custom_id == "r3")).one()
    assert states.pop("r3") == "failed" and "request cannot be built" in (bad.error or "")
    assert set(states.values()) == {"succeeded"} and len(states) == 9


def test_a_sender_that_raises_lets_the_others_land_their_answers(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch
) -> None:
    """One sender's error (a bug, or a database the sent marker gave up on) used to end the
    fan-out at once: the answers of the calls still out arrived after the writer had ended
    and were dropped, so the reaper charged them at worst case and they were sent again."""
    from jobs.providers.pool import ProviderPool

    rt = runtime_factory(sqlite_url, {"providers.sim.concurrency": 4, "providers.sim.simulated.latency_ms": 300})
    job_id = submit_routed(rt, tmp_path, 12, budget_usd=1.0)
    fan = claim(rt, job_id)
    boom = RuntimeError("a bug in one sender")
    sent: list[str] = []

    class OneBadSender(ProviderPool):
        async def complete(self, req: ChatRequest, before_send=None) -> CallResult:
            sent.append(req.custom_id)
            if len(sent) == 4:  # three calls are out when this one raises
                raise boom
            return await super().complete(req, before_send)

    monkeypatch.setattr("jobs.providers.ProviderPool", OneBadSender)
    with pytest.raises(RuntimeError) as info:
        run_async(fan.run())
    assert info.value is boom
    got = ledger(sqlite_url, job_id)
    answered = set(sent) - {sent[3]}
    assert len(answered) >= 3 and got["attempted"] == answered  # every call that went out is recorded
    assert all(got["item_state"][c] == ItemState.SUCCEEDED for c in answered)


@pytest.mark.parametrize("stopped", [None, "budget_exhausted", "reclaimed"])
def test_items_a_failed_fanout_never_sent_are_handed_back(
    tmp_path: Path, sqlite_url: str, runtime_factory, monkeypatch, stopped: str | None
) -> None:
    """After a sender's error the items never handed to a provider stayed claimed, their
    holds open: a retry of the step found nothing routed and waited for the reaper's lease
    check; and when the budget stopped the job at that moment, nothing ever ended them (the
    reaper put them back to ``routed`` in a job that no longer runs). Now they go back to
    ``routed`` with their holds released, or end ``skipped_budget`` if the job stopped."""
    from jobs.providers.pool import ProviderPool

    rt = runtime_factory(sqlite_url, {"providers.sim.concurrency": 2, "providers.sim.simulated.latency_ms": 200})
    job_id = submit_routed(rt, tmp_path, 30, budget_usd=1.0)
    fan = claim(rt, job_id)
    sent: list[str] = []
    reclaimed: list[str] = []

    class FailingSender(ProviderPool):
        async def complete(self, req: ChatRequest, before_send=None) -> CallResult:
            sent.append(req.custom_id)
            if len(sent) == 3:
                with session_scope(sqlite_url) as s:
                    if stopped == "reclaimed":  # its claim lapsed; the reaper freed it, another worker claimed it
                        last = s.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.id.desc())).first()
                        last.lease_until = utcnow() + timedelta(hours=1)
                        reclaimed.append(last.custom_id)
                    elif stopped:  # the budget stopped the job in another worker at the same moment
                        s.get_one(Job, job_id).state = stopped
                raise RuntimeError("a bug in one sender")
            return await super().complete(req, before_send)

    monkeypatch.setattr("jobs.providers.ProviderPool", FailingSender)
    with pytest.raises(RuntimeError, match="a bug in one sender"):
        run_async(fan.run())
    with session_scope(sqlite_url) as s:
        states = dict(s.execute(select(Item.custom_id, Item.state).where(Item.job_id == job_id)).all())
        open_holds = set(
            s.scalars(
                select(Item.custom_id)
                .join(Reservation, Reservation.item_id == Item.id)
                .where(Reservation.state == "open", ~Reservation.id.startswith("floor-"))
            )
        )
    never_sent = set(states) - set(sent) - set(reclaimed)
    assert len(never_sent) >= 20
    expected = ItemState.SKIPPED_BUDGET if stopped == "budget_exhausted" else ItemState.ROUTED
    assert {states[c] for c in never_sent} == {expected}
    assert all(states[c] == ItemState.SENT for c in reclaimed), "another worker's claim is not touched"
    assert not open_holds & never_sent, "their holds are released"
    assert states[sent[2]] == ItemState.SENT, "the call that raised may have gone out: the reaper decides"
