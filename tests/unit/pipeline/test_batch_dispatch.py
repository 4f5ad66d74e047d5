"""Batch dispatch end to end (issue 14): embedded jobs whose items go through the simulator's
OpenAI Batch and Anthropic Message Batches APIs over real HTTP, settled from the result files.

Every test checks the ledger's invariants: each item answered (or ended) once, attempts =
item costs = budget spent, every batch attempt charged at the ``@batch`` price version, and
(through the simulator's counters) no request uploaded twice, also across crashes.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from jobs.config import BUILTIN_CONFIG, parse_config
from jobs.ledger.models import Attempt, BudgetWindow, Item, Price, ProviderBatch, Reservation
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import service
from jobs.lifecycle.service import JobSpec
from jobs.pipeline import batch_dispatch, batch_poll
from jobs.pipeline.tasks import InlineQueue
from jobs.providers.sim.server import start_simulated_provider
from jobs.runtime import Runtime
from jobs.settings import Settings

N = 120
FAST = {"batch_poll_s": 0.1, "batch_poll_max_s": 0.3}


def _config(sim: dict | None = None, kind: str = "openai", base_url: str = "", **provider: object):
    data = copy.deepcopy(BUILTIN_CONFIG)
    prov = data["providers"]["sim"]
    prov.update({"dispatch": "batch", "concurrency": 8, **FAST, **provider})
    prov["retry"] = {"max_attempts": 4, "backoff_base_s": 0.0, "backoff_cap_s": 0.0, "jitter": False}
    if kind != "openai":
        prov["kind"] = kind
    if base_url:
        prov["base_url"] = base_url
        prov.pop("simulated")
    else:
        prov["simulated"] = {"latency_ms": 0, "seed": 3, "batch_complete_s": 0.3, **(sim or {})}
    return parse_config(data)


def _dataset(tmp_path: Path, n: int = N) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "in.jsonl"
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i}: " + "why " * (i % 13)}) + "\n")
    return path


def _run(tmp_path: Path, cfg, **spec: object):
    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", broker_url=None), cfg)
    try:
        st = service.run(rt, JobSpec(input_file=str(_dataset(tmp_path)), router="length", strong_share=0.5, **spec))
    finally:
        rt.close()
    return rt.db_url, st


def _ledger_adds_up(db: str, job_id: str) -> dict:
    """attempts = item costs = money settled on the job's budget windows; no hold left open.
    ``per_item``: calls that reached a provider per item (a crash's LostInFlight markers aside:
    without a budget, recovery cannot know that a claimed item never left)."""
    with session_scope(db) as s:
        attempts = s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)).where(Attempt.job_id == job_id))
        items = s.scalar(select(func.coalesce(func.sum(Item.cost_micro_usd), 0)).where(Item.job_id == job_id))
        open_holds = s.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.job_id == job_id, Reservation.state == "open")
        )
        settled = s.scalar(
            select(func.coalesce(func.sum(Reservation.settled_micro_usd), 0)).where(
                Reservation.job_id == job_id, Reservation.state == "settled"
            )
        )
        spent = s.scalar(select(func.coalesce(func.sum(BudgetWindow.spent_micro_usd), 0)))
        real = (Attempt.job_id == job_id) & (Attempt.error_class.is_distinct_from("LostInFlight"))
        per_item = s.execute(select(Attempt.item_id, func.count()).where(real).group_by(Attempt.item_id)).all()
    assert attempts == items and open_holds == 0
    return {"attempts": attempts, "settled": settled, "spent": spent, "per_item": dict(per_item)}


def test_a_batch_job_is_answered_once_at_half_the_sync_price(tmp_path: Path) -> None:
    db, st = _run(tmp_path / "batch", _config())
    assert st.status == "completed" and st.succeeded == N
    assert {pb["state"] for pb in st.provider_batches} == {"settled"} and len(st.provider_batches) == 2
    assert sum(pb["requests"] for pb in st.provider_batches) == N
    sums = _ledger_adds_up(db, st.job_id)
    assert set(sums["per_item"].values()) == {1}  # one call per item: its batch line
    with session_scope(db) as s:
        prices = {p.id: p for p in s.scalars(select(Price))}
        for a in s.scalars(select(Attempt).where(Attempt.job_id == st.job_id)):
            price = prices[a.price_id]
            assert a.provider_batch_id and price.model == f"{a.model}@batch"
            expected = -(
                -(a.prompt_tokens * price.input_micro_per_mtok + a.completion_tokens * price.output_micro_per_mtok) // 10**6
            )
            assert a.cost_micro_usd == expected
        sync = {p.model: p for p in prices.values() if "@" not in p.model}
        for p in prices.values():
            if p.model.endswith("@batch"):
                base = sync[p.model.removesuffix("@batch")]
                assert 2 * p.input_micro_per_mtok == base.input_micro_per_mtok
                assert 2 * p.output_micro_per_mtok == base.output_micro_per_mtok
    sync_db, sync_st = _run(tmp_path / "sync", _config(), dispatch="sync")
    assert sync_st.succeeded == N and not sync_st.provider_batches
    # the same answers (the simulator is seeded per prompt), at half the price; per-call rounding up only
    assert abs(2 * st.cost_micro_usd - sync_st.cost_micro_usd) <= 2 * N


def test_a_batch_that_expires_half_done_is_finished_synchronously_within_the_budget(tmp_path: Path) -> None:
    db, st = _run(tmp_path, _config({"batch_complete_s": 2.0, "batch_expire_s": 0.4}), budget_usd=1.0)
    assert st.status == "completed" and st.succeeded == N
    with session_scope(db) as s:
        via_batch = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.provider_batch_id.is_not(None)))
        via_sync = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.provider_batch_id.is_(None)))
        states = set(s.scalars(select(ProviderBatch.remote_status)))
        marked = s.scalar(select(func.count()).select_from(Item).where(Item.dispatch == "sync"))
    assert states == {"expired"} and 0 < via_batch < N and via_batch + via_sync == N
    assert marked == via_sync, "marked for a synchronous send when leased for it: a killed step's reaper keeps that"
    sums = _ledger_adds_up(db, st.job_id)
    assert sums["attempts"] == sums["settled"] == sums["spent"]


def test_a_poll_step_answers_only_what_its_time_allows_and_hands_on_the_rest(tmp_path: Path, monkeypatch) -> None:
    """An expired batch's unanswered lines were all answered synchronously inside the poll
    step, whose time limit is short: 50,000 of them would get it killed part-way, with every
    call in flight charged as lost and sent again. Now the poll answers them while its time
    lasts (one clock for the whole step) and hands the rest to generate steps, which send
    them synchronously as ``batch_retry = "sync"`` says, not in a new provider batch."""
    monkeypatch.setattr(batch_poll, "SYNC_SLICE", 5)
    monkeypatch.setattr(batch_poll, "SYNC_INLINE_SHARE", 0.0)  # no time left: everything is handed on
    handed: list[int] = []
    original = batch_poll.hand_to_generate

    def counting(rt, queue, job_id, rows, lease):
        handed.append(len(rows))
        original(rt, queue, job_id, rows, lease)

    monkeypatch.setattr(batch_poll, "hand_to_generate", counting)
    db, st = _run(tmp_path, _config({"batch_complete_s": 2.0, "batch_expire_s": 0.4}), budget_usd=1.0)
    assert st.status == "completed" and st.succeeded == N
    with session_scope(db) as s:
        via_sync = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.provider_batch_id.is_(None)))
        marked = s.scalar(select(func.count()).select_from(Item).where(Item.dispatch == "sync"))
        remote = set(s.scalars(select(ProviderBatch.remote_status)))
    assert handed and 0 < via_sync == sum(handed) == marked < N
    assert remote == {"expired"} and len(st.provider_batches) == 2, "handed on: sent synchronously, in no new batch"
    sums = _ledger_adds_up(db, st.job_id)
    assert set(sums["per_item"].values()) == {1}, "nothing answered twice"
    assert sums["attempts"] == sums["settled"] == sums["spent"]


def test_batch_retry_fail_fails_the_expired_lines_with_the_reason(tmp_path: Path) -> None:
    db, st = _run(tmp_path, _config({"batch_complete_s": 2.0, "batch_expire_s": 0.4}, batch_retry="fail"))
    assert st.status == "completed" and 0 < st.succeeded < N and st.succeeded + st.failed == N
    with session_scope(db) as s:
        errors = set(s.scalars(select(Item.error).where(Item.state == "failed")))
    assert errors and all("expired" in e for e in errors)
    _ledger_adds_up(db, st.job_id)


def test_errored_lines_are_recorded_and_answered_again(tmp_path: Path) -> None:
    db, st = _run(tmp_path, _config({"faults": {"500": 0.1}}), budget_usd=1.0)
    assert st.status == "completed" and st.succeeded == N
    with session_scope(db) as s:
        errored = s.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.provider_batch_id.is_not(None), Attempt.status_code == 500)
        )
        errored_cost = s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)).where(Attempt.status_code == 500))
    assert errored >= 3 and errored_cost == 0  # in the ledger, not billed
    sums = _ledger_adds_up(db, st.job_id)
    assert sums["attempts"] == sums["settled"] == sums["spent"]


def _resume(rt: Runtime, job_id: str):
    """``routebatch resume`` in embedded mode: hold the job, recover (force), run the steps here."""
    queue = InlineQueue()
    with service.hold(rt, job_id) as lease:
        service.resume(rt, job_id, queue, force=True, lease=lease)
        service.drain_inline(rt, queue, job_id, runner_id=lease.runner_id)
    return service.status(rt, job_id)


class Killed(BaseException):
    """The worker dying at a chosen point (a SIGKILL leaves nothing to clean up either)."""


@pytest.fixture
def sim_server():
    server = start_simulated_provider({"latency_ms": 0, "seed": 5, "batch_complete_s": 0.3})
    yield server
    server.stop()


def _stats(server) -> dict:
    return httpx.get(server.base_url.removesuffix("/v1") + "/_sim/stats").json()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_worker_killed_after_upload_does_not_upload_again(tmp_path: Path, sim_server, monkeypatch, kind: str) -> None:
    cfg = _config(kind=kind, base_url=sim_server.base_url)
    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", broker_url=None), cfg)

    def die(pb_id: str) -> None:
        raise Killed(pb_id)

    monkeypatch.setattr(batch_dispatch, "after_upload", die)
    with pytest.raises(Killed):
        service.run(rt, JobSpec(input_file=str(_dataset(tmp_path)), router="length", strong_share=0.5, budget_usd=1.0))
    monkeypatch.undo()
    with session_scope(rt.db_url) as s:
        pb = s.scalars(select(ProviderBatch)).one()
        assert pb.state == "preparing" and pb.remote_id is None
        job_id = pb.job_id
        s.execute(update(ProviderBatch).values(lease_until=utcnow() - timedelta(seconds=1)))  # its uploader is gone
    assert _stats(sim_server)["batch_requests_uploaded"] == pb.request_count
    st = _resume(rt, job_id)
    rt.close()
    stats = _stats(sim_server)
    assert st.status == "completed" and st.succeeded == N
    assert stats["requests_uploaded_twice"] == 0 and stats["distinct_requests_uploaded"] == N
    sums = _ledger_adds_up(rt.db_url, job_id)
    assert set(sums["per_item"].values()) == {1} and len(sums["per_item"]) == N
    assert sums["attempts"] == sums["settled"] == sums["spent"]  # with a budget, unsent claims cost nothing


def test_a_worker_killed_while_polling_is_picked_up_by_resume(tmp_path: Path, sim_server, monkeypatch) -> None:
    rt = Runtime(
        Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", broker_url=None), _config(base_url=sim_server.base_url)
    )

    def die(*args: object) -> int:
        raise Killed("poll")

    monkeypatch.setattr(batch_poll, "_poll_one", die)
    with pytest.raises(Killed):
        service.run(rt, JobSpec(input_file=str(_dataset(tmp_path)), router="length", strong_share=0.5))
    monkeypatch.undo()
    with session_scope(rt.db_url) as s:
        assert set(s.scalars(select(ProviderBatch.state))) == {"submitted"}
        job_id = s.scalars(select(ProviderBatch.job_id)).first()
    st = _resume(rt, job_id)
    rt.close()
    assert st.status == "completed" and st.succeeded == N
    assert _stats(sim_server)["requests_uploaded_twice"] == 0
    assert set(_ledger_adds_up(rt.db_url, job_id)["per_item"].values()) == {1}


def test_cancel_cancels_the_provider_batch_and_keeps_what_was_billed(tmp_path: Path, monkeypatch) -> None:
    cfg = _config({"batch_complete_s": 5.0})
    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", broker_url=None), cfg)
    cancelled: list[str] = []

    def cancel_once(pb_id: str) -> None:
        if not cancelled:
            with session_scope(rt.db_url) as s:
                job_id = s.get_one(ProviderBatch, pb_id).job_id
            cancelled.append(job_id)
            service.cancel(rt, job_id)

    monkeypatch.setattr(batch_dispatch, "after_upload", cancel_once)
    try:
        st = service.run(rt, JobSpec(input_file=str(_dataset(tmp_path)), router="length", strong_share=0.5))
    finally:
        rt.close()
    assert st.status == "cancelled" and st.succeeded + st.counts["cancelled"] == N
    with session_scope(rt.db_url) as s:
        pbs = s.scalars(select(ProviderBatch)).all()
    assert pbs and all(pb.cancel_requested or pb.state != "submitted" for pb in pbs)
    assert {pb.remote_status for pb in pbs if pb.remote_id} <= {"cancelled", "cancelling", "completed"}
    _ledger_adds_up(rt.db_url, st.job_id)


def test_inline_queue_runs_delayed_steps_after_the_rest_and_sleeps_only_when_idle() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    q = InlineQueue(sleep=sleep, clock=lambda: now[0])
    q.enqueue("poll", "j", None, 5.0)
    q.enqueue("generate", "j", 0)
    ran: list[str] = []
    q.drain(lambda task, job_id, chunk: ran.append(task))
    assert ran == ["generate", "poll"] and slept == [5.0] and len(q) == 0


def test_forced_recovery_leaves_items_inside_a_provider_batch_alone(tmp_path: Path, sim_server, monkeypatch) -> None:
    from jobs.lifecycle.recovery import recover_lost

    rt = Runtime(
        Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", broker_url=None), _config(base_url=sim_server.base_url)
    )
    monkeypatch.setattr(batch_poll, "_poll_one", lambda *a: (_ for _ in ()).throw(Killed("poll")))
    with pytest.raises(Killed):
        service.run(rt, JobSpec(input_file=str(_dataset(tmp_path)), router="length", strong_share=0.5))
    rt.close()
    with session_scope(rt.db_url) as s:
        sent_before = s.scalar(select(func.count()).select_from(Item).where(Item.state == "sent"))
        got = recover_lost(s, force=True)
        sent_after = s.scalar(select(func.count()).select_from(Item).where(Item.state == "sent"))
    assert sent_before == N and got["lost_items"] == 0 and sent_after == N


@pytest.mark.parametrize("dispatch", ["sync", "batch"])
def test_an_anthropic_job_exports_openai_batch_lines_sync_and_batch(tmp_path: Path, dispatch: str) -> None:
    from openai.types.chat import ChatCompletion

    from jobs.ledger.export import export_job
    from tests.unit.test_export_sdk import _Line

    db, st = _run(tmp_path, _config(kind="anthropic"), dispatch=dispatch)
    assert st.status == "completed" and st.succeeded == N
    assert bool(st.provider_batches) == (dispatch == "batch")
    out = tmp_path / "results.jsonl"
    assert export_job(db, st.job_id, out, tmp_path / "errors.jsonl", force=True)["results"] == N
    for raw in out.read_text().splitlines():
        line = json.loads(raw)
        _Line.model_validate(line)
        body = ChatCompletion.model_validate(line["response"]["body"])
        assert body.object == "chat.completion" and body.choices[0].message.content
    _ledger_adds_up(db, st.job_id)


def test_batch_retry_batch_sends_the_unanswered_lines_in_new_batches(tmp_path: Path) -> None:
    db, st = _run(tmp_path, _config({"batch_complete_s": 0.6, "batch_expire_s": 0.35}, batch_retry="batch"), budget_usd=1.0)
    assert st.status == "completed" and st.succeeded == N
    assert len(st.provider_batches) > 2 and {pb["remote_status"] for pb in st.provider_batches} == {"expired"} | (
        {pb["remote_status"] for pb in st.provider_batches} & {"completed"}
    )
    sums = _ledger_adds_up(db, st.job_id)
    assert set(sums["per_item"].values()) == {1}  # an expired line was never answered: no attempt for it
    assert sums["attempts"] == sums["settled"] == sums["spent"]


def test_auto_dispatch_sends_what_a_batch_has_not_answered_synchronously_near_the_deadline(tmp_path: Path, monkeypatch) -> None:
    """``auto``: batches while the deadline is far; once it is within the margin, the open
    provider batch is cancelled and its unanswered items are answered synchronously."""
    cfg = _config({"batch_complete_s": 30.0}, dispatch="auto", batch_retry="fail")

    def deadline_approaches(pb_id: str) -> None:  # time passes: the job's deadline is now near
        monkeypatch.setattr(batch_dispatch, "AUTO_MIN_LEFT", timedelta(hours=3))

    monkeypatch.setattr(batch_dispatch, "after_upload", deadline_approaches)
    db, st = _run(tmp_path, cfg, completion_window="2h")
    assert st.status == "completed" and st.succeeded == N
    with session_scope(db) as s:
        pbs = s.scalars(select(ProviderBatch)).all()
        via_sync = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.provider_batch_id.is_(None)))
    assert pbs and all(pb.cancel_requested and pb.state == "settled" for pb in pbs)
    assert via_sync >= N // 2  # the batches were cancelled long before they could finish
    _ledger_adds_up(db, st.job_id)


@pytest.mark.parametrize("timeout_s", [30.0, 600.0])
def test_the_uploaders_lease_outlasts_an_upload_with_all_its_retries(sqlite_url: str, runtime_factory, timeout_s: float) -> None:
    """The lease was a fixed two minutes while one upload (the file, then the create, each
    with up to five tries of the client's timeout and waits of up to 60 s) can take half an
    hour: a poll that found the lease lapsed while the upload still ran found nothing at the
    provider and uploaded the batch again."""
    rt = runtime_factory(sqlite_url, {"providers.sim.timeout_s": timeout_s})
    one_call = 5 * max(timeout_s, 120.0) + 4 * 60.0
    assert batch_dispatch.prepare_lease(rt, "sim") > timedelta(seconds=2 * one_call)
