"""The weak floor: while the cap covers every item's weak answer, no item is skipped and
only the surplus buys upgrades; below it the job says so first and --on-exhausted decides."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.ledger.models import Attempt, BudgetWindow, Item, Reservation
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run

N = 200


def write_prompts(path: Path, n: int = N) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} " + "detail " * (i % 30)}) + "\n")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, float]:
    """The prompts and the realised cost of answering all of them with the strong model."""
    from tests.conftest import make_runtime

    d = tmp_path_factory.mktemp("floor")
    data = write_prompts(d / "in.jsonl")
    rt = make_runtime(f"sqlite:///{d / 'probe.db'}")
    try:
        all_strong = run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0)).cost_usd
    finally:
        rt.close()
    return data, all_strong


def _books_closed(db: str, job_id: str) -> None:
    with session_scope(db) as s:
        assert s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open")) == 0
        assert s.scalar(select(func.sum(BudgetWindow.reserved_micro_usd))) == 0


ROUTING = {
    "strong-share": {"strong_share": 0.9},
    "threshold": {"threshold": 0.0},
    "allocate": {"allocate": "budget"},
}


@pytest.mark.parametrize("routing", list(ROUTING))
def test_no_item_is_skipped_while_the_cap_covers_the_floor(dataset, sqlite_url: str, runtime_factory, routing: str) -> None:
    """The issue's case at CI size: 30% of the all-strong cost, default downgrade. Before the
    floor, --strong-share 0.9 spent the cap on strong calls and skipped the tail."""
    data, all_strong = dataset
    cap = round(0.3 * all_strong, 6)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", budget_usd=cap, **ROUTING[routing]))
    assert st.status == "completed"
    assert st.succeeded == N and st.skipped_budget == 0
    assert st.cost_usd <= cap
    assert any("weak floor" in n for n in st.notes), st.notes
    if routing != "allocate":  # allocation plans on worst cases; the others upgrade until the surplus is gone
        assert st.cost_usd >= 0.85 * cap, f"only {st.cost_usd / cap:.1%} of the cap used"
        assert 0 < st.strong_calls < N
    _books_closed(sqlite_url, st.job_id)


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_every_policy_answers_weak_while_the_floor_is_covered(dataset, sqlite_url: str, runtime_factory, policy: str) -> None:
    data, all_strong = dataset
    cap = round(0.3 * all_strong, 6)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.9, budget_usd=cap, on_exhausted=policy))
    assert st.status == "completed" and st.succeeded == N and st.skipped_budget == 0
    assert st.cost_usd <= cap
    with session_scope(sqlite_url) as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.route_reason == "budget_downgrade")) > 0


def _weak_floor_usd(data: Path, runtime) -> float:
    from jobs.reports.planning import estimate

    inp = estimate(runtime.config, data, "length", "sim-strong", "sim-weak")
    return float(inp.weak_worst_micro.sum()) / 1e6


@pytest.mark.parametrize("policy", ["downgrade", "skip", "stop"])
def test_a_cap_below_the_floor_is_announced_and_the_policy_decides(
    dataset, sqlite_url: str, runtime_factory, policy: str
) -> None:
    data, _ = dataset
    rt = runtime_factory(sqlite_url)
    cap = round(0.15 * _weak_floor_usd(data, rt), 6)  # real weak answers cost about a fifth of their worst case
    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.5, budget_usd=cap, on_exhausted=policy))
    assert any("cannot cover the weak answer of every item" in n for n in st.notes), st.notes
    assert st.cost_usd <= cap
    with session_scope(sqlite_url) as s:
        reasons = s.scalars(select(Item.error).where(Item.job_id == st.job_id, Item.state == "skipped_budget")).all()
        attempts = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id == st.job_id))
    assert len(reasons) == st.skipped_budget > 0
    assert all(r and r.startswith("budget") for r in reasons), "a skipped item always carries its reason"
    if policy == "stop":
        assert st.status == "budget_exhausted" and attempts == 0, "stopped before the first call"
        assert st.skipped_budget == N
    elif policy == "downgrade":
        assert st.status == "completed" and st.strong_calls == 0, "no upgrade while the floor is short"
        assert st.succeeded + st.skipped_budget == N and st.succeeded > 0
    else:
        assert st.status == "completed" and st.succeeded > 0
        with session_scope(sqlite_url) as s:
            downgraded = s.scalar(select(func.count()).select_from(Item).where(Item.route_reason == "budget_downgrade"))
            skipped_routes = set(s.scalars(select(Item.route).where(Item.state == "skipped_budget")))
        assert downgraded == 0 and "strong" in skipped_routes, "skip keeps the routing and skips what does not fit"
    _books_closed(sqlite_url, st.job_id)


def test_faults_do_not_break_the_floor(dataset, sqlite_url: str, runtime_factory) -> None:
    """20% injected faults (retried): still every item answered, inside the cap."""
    data, all_strong = dataset
    cap = round(0.3 * all_strong, 6)
    rt = runtime_factory(
        sqlite_url,
        {
            "providers.sim.simulated.fault_rate": 0.2,
            "providers.sim.simulated.fault_kinds": ["429", "500", "503", "drop", "malformed", "no_usage"],
            "providers.sim.simulated.retry_after_s": 0.01,
            "providers.sim.retry.backoff_base_s": 0.01,
            "providers.sim.retry.max_attempts": 10,
        },
    )
    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.9, budget_usd=cap))
    assert st.status == "completed" and st.succeeded == N and st.skipped_budget == 0
    assert st.cost_usd <= cap and st.cost_usd >= 0.85 * cap
    with session_scope(sqlite_url) as s:
        failed_tries = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.error_class.is_not(None)))
    assert failed_tries > 0.1 * N, "the faults were injected"
    _books_closed(sqlite_url, st.job_id)


class _Steps:
    """A queue that records the steps: the test runs them (all but ``generate``) itself."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str, int | None]] = []

    def enqueue(self, task: str, job_id: str, chunk: int | None = None, delay_s: float = 0.0) -> None:
        self.tasks.append((task, job_id, chunk))


def _routed_job(tmp_path: Path, runtime_factory, n: int = 20, db_url: str | None = None):
    """A budgeted job scored and routed, its items not yet claimed by any generate step."""
    from jobs.lifecycle import service
    from jobs.pipeline.runner import run_task

    rt = runtime_factory(db_url or f"sqlite:///{tmp_path / 'ledger.db'}")
    queue = _Steps()
    job_id = service.submit(
        rt,
        JobSpec(input_file=str(write_prompts(tmp_path / "in.jsonl", n)), router="length", strong_share=0.5, budget_usd=5.0),
        queue,
    )
    while queue.tasks:
        task, jid, chunk = queue.tasks.pop(0)
        if task != "generate":
            run_task(rt, queue, task, jid, chunk)
    return rt, job_id


def _admit(rt, job_id: str, item_ids: list[int]):
    """Claim ``item_ids`` and admit them in one batch, as a generate step does."""
    from sqlalchemy import update

    from jobs.ledger.models import Job
    from jobs.money.admission import admit, budget_plan
    from jobs.money.pricing import sync_prices

    with session_scope(rt.db_url) as s:
        job = s.get_one(Job, job_id)
        plan, job_max = budget_plan(job), job.spec.get("max_tokens")
        prices = sync_prices(s, rt.config, rt.config.models_with_fallbacks([job.strong_model, job.weak_model]))
        s.execute(update(Item).where(Item.id.in_(item_ids)).values(state="sent"))
        rows = s.execute(
            select(Item.id, Item.prompt, Item.messages, Item.max_tokens, Item.model)
            .where(Item.id.in_(item_ids))
            .order_by(Item.id)
        ).all()
    return admit(rt, job_id, rows, plan, prices, job_max, final=True)


def _floor_held(rt, job_id: str) -> int:
    from jobs.money.budgets import floor_id

    with session_scope(rt.db_url) as s:
        res = s.get(Reservation, floor_id(job_id))
        return res.amount_micro_usd if res is not None and res.state == "open" else 0


def _released_after_admission(rt, job_id: str, lost: bool = False) -> tuple[int, int, list[int]]:
    """One weak item admitted, then its hold released unsent (or, ``lost``, its call lost in
    flight: the reaper settles the stamped hold) and the item routed again: (its id, its
    floor share, the job's other items)."""
    from jobs.money.budgets import hold_of, release

    with session_scope(rt.db_url) as s:
        weak_model = s.scalar(select(Item.model).where(Item.job_id == job_id, Item.route == "weak").limit(1))
        ids = list(s.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.id)))
        first = s.scalar(select(Item.id).where(Item.job_id == job_id, Item.model == weak_model).order_by(Item.id))
    (adm,) = _admit(rt, job_id, [first]).admitted
    assert adm.hold.amount > 0 and _floor_held(rt, job_id) > 0, "the first batch opened the floor and drew the share"
    with session_scope(rt.db_url) as s:
        hold = s.get_one(Reservation, adm.hold.reservation_id)
        if lost:
            from datetime import timedelta

            from jobs.ledger.types import utcnow
            from jobs.lifecycle.recovery import recover_lost

            hold.sent_at = utcnow()
            s.get_one(Item, first).lease_until = utcnow() - timedelta(seconds=1)
            s.flush()
            assert recover_lost(s, job_id=job_id)["settled_at_reserved"] == 1
        else:
            release(s, hold_of(hold), note="claimed, never sent: released to zero")
            s.get_one(Item, first).state = "routed"
    with session_scope(rt.db_url) as s:
        assert s.get_one(Item, first).state == "routed"
    return first, adm.hold.amount, [i for i in ids if i != first]


@pytest.mark.parametrize("lost", [False, True], ids=["released", "lost in flight"])
def test_a_released_hold_gives_its_floor_share_back_to_the_floor(tmp_path: Path, runtime_factory, lost: bool) -> None:
    """An admitted item whose hold is released unsent goes back to ``routed`` and will be
    admitted again (a claim the reaper finds never sent, a batch line with no answer, a
    downgrade to a model sent synchronously). Its weak share used to go back to the free room,
    where upgrades could spend it: the floor, drawn to zero by the other items, then no longer
    covered it. The next admission now puts the share back in the floor first. The same for
    a call lost in flight (its hold settled at the reserved amount, its item sent again)."""
    rt, job_id = _routed_job(tmp_path, runtime_factory)
    first, share, others = _released_after_admission(rt, job_id, lost)
    out = _admit(rt, job_id, others)
    assert len(out.admitted) == len(others)
    assert _floor_held(rt, job_id) == share, "what the floor still holds is the released item's share"
    (again,) = _admit(rt, job_id, [first]).admitted
    assert again.hold is not None and again.hold.amount == share
    assert _floor_held(rt, job_id) == 0


def _take_the_free_room(rt, job_id: str) -> None:
    """Another spender on the job's window (a job sharing a named budget) holds all its free room."""
    from jobs.ledger.models import Budget, Job
    from jobs.money.budgets import current_window, room_of, try_reserve

    with session_scope(rt.db_url) as s:
        window = current_window(s, s.get_one(Budget, s.get_one(Job, job_id).job_budget_id)).id
        assert try_reserve(s, (window,), room_of(s, (window,)))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


def test_a_released_share_stays_reserved_while_another_spender_takes_the_free_room(
    tmp_path: Path, runtime_factory, db_url: str
) -> None:
    """A hold released unsent gave its whole amount back to the free room, floor share
    included, and the next admission reserved the share again: a job sharing the named
    budget could take it in between, and the item ended skipped although the cap had covered
    it. The release now leaves the share reserved for the floor."""
    rt, job_id = _routed_job(tmp_path, runtime_factory, db_url=db_url)
    first, share, others = _released_after_admission(rt, job_id)
    with session_scope(rt.db_url) as s:
        kept = s.scalar(
            select(Reservation.floor_kept_micro_usd).where(Reservation.item_id == first, ~Reservation.id.startswith("floor-"))
        )
    assert kept == share, "the released hold keeps its floor share reserved"
    _take_the_free_room(rt, job_id)
    _admit(rt, job_id, others)
    assert _floor_held(rt, job_id) == share, "the kept share went into the floor"
    (again,) = _admit(rt, job_id, [first]).admitted
    assert again.hold is not None and again.hold.amount == share
    with session_scope(rt.db_url) as s:
        assert s.get_one(Item, first).state == "sent", "admitted again, not skipped"


def _reserved(rt) -> int:
    with session_scope(rt.db_url) as s:
        return int(s.scalar(select(func.sum(BudgetWindow.reserved_micro_usd))) or 0)


def _release_racing_the_end(rt, job_id: str, item_id: int) -> str:
    """``item_id`` admitted, then its hold released in the transaction that ends the job,
    after the end's clean-up read the holds: the share it keeps is left for the reaper.
    Returns the hold's id."""
    from jobs.ledger.models import Job
    from jobs.lifecycle.states import JobState
    from jobs.money.budgets import floor_id, hold_of, release

    (adm,) = _admit_in(rt, job_id, [item_id])
    with session_scope(rt.db_url) as s:
        assert release(s, hold_of(s.get_one(Reservation, adm.hold.reservation_id)), note="raced the end")
        s.get_one(Job, job_id).state = JobState.CANCELLED
        assert release(s, hold_of(s.get_one(Reservation, floor_id(job_id))), note="job cancelled: floor released")
    return adm.hold.reservation_id


def test_a_share_kept_for_a_job_that_ends_goes_back_to_the_free_room(tmp_path: Path, runtime_factory, db_url: str) -> None:
    """Kept shares must not outlive their job, or a shared named window loses that money for good:
    the job's end gives them back, a release after the end keeps nothing, and the reaper gives
    back one that a release committed while the end was being written."""
    from jobs.ledger.models import Job
    from jobs.lifecycle.states import JobState
    from jobs.lifecycle.transitions import transition
    from jobs.money.budgets import floor_id, hold_of, release, release_kept_of_ended_jobs

    rt, job_id = _routed_job(tmp_path, runtime_factory, db_url=db_url)
    first, share, others = _released_after_admission(rt, job_id)
    reserved = functools.partial(_reserved, rt)
    with session_scope(rt.db_url) as s:
        floor = s.scalar(select(Reservation.amount_micro_usd).where(Reservation.id.startswith("floor-")))
    assert reserved() == share + floor
    with session_scope(rt.db_url) as s:
        transition(s.get_one(Job, job_id), JobState.CANCELLING)
        transition(s.get_one(Job, job_id), JobState.CANCELLED)
    assert reserved() == 0, "the job's end released its floor and the share kept for it"

    (adm,) = _admit_in(rt, job_id, others[:1])
    with session_scope(rt.db_url) as s:
        s.get_one(Job, job_id).state = JobState.CANCELLED  # ended, without its end's clean-up
    with session_scope(rt.db_url) as s:
        assert release(s, hold_of(s.get_one(Reservation, adm.hold.reservation_id)), note="after the end")
        assert s.get_one(Reservation, adm.hold.reservation_id).floor_kept_micro_usd == 0, "an ended job keeps nothing"

    _release_racing_the_end(rt, job_id, others[1])
    assert reserved() > 0
    with session_scope(rt.db_url) as s:
        assert release_kept_of_ended_jobs(s) == 1
    assert reserved() == 0
    with session_scope(rt.db_url) as s:
        assert release_kept_of_ended_jobs(s) == 0, "given back once"


def test_the_reaper_skips_a_kept_share_whose_hold_another_transaction_holds(
    tmp_path: Path, runtime_factory, pg_url: str
) -> None:
    """The reaper gave kept shares back inside its main pass, after settling lost calls had
    locked windows, and waited for any hold another transaction had locked: an admission
    holding that hold and waiting for a window the reaper held was a deadlock. It now runs
    first, in its own transaction, skips a locked hold, and takes it at a later tick."""
    import threading

    from sqlalchemy import text

    from jobs.ledger.session import get_engine
    from jobs.lifecycle.reaper import tick

    rt, job_id = _routed_job(tmp_path, runtime_factory, db_url=pg_url)
    _, share, others = _released_after_admission(rt, job_id)
    hold_id = _release_racing_the_end(rt, job_id, others[0])
    assert _reserved(rt) > 0
    done: list[int] = []
    with get_engine(rt.db_url).connect() as other:
        other.execute(text("SELECT id FROM reservations WHERE id = :r FOR UPDATE"), {"r": hold_id})
        reaper = threading.Thread(target=lambda: done.append(tick(rt, _Steps()).reservations), daemon=True)
        reaper.start()
        reaper.join(timeout=20)
        blocked = reaper.is_alive()
        other.rollback()
    reaper.join(timeout=20)
    assert not blocked, "the reaper waited for a hold another transaction had locked"
    assert done == [0] and _reserved(rt) > 0, "the locked hold is left for a later tick"
    assert tick(rt, _Steps()).reservations == 1
    assert _reserved(rt) == 0


def _admit_in(rt, job_id: str, item_ids: list[int]):
    """Admit ``item_ids`` with the job (whatever its state) in progress for the admission."""
    from jobs.ledger.models import Job
    from jobs.lifecycle.states import JobState
    from jobs.money.budgets import release_floor

    with session_scope(rt.db_url) as s:
        s.get_one(Job, job_id).state = JobState.IN_PROGRESS
        release_floor(s, job_id)
    out = _admit(rt, job_id, item_ids).admitted
    assert len(out) == len(item_ids) and all(a.hold is not None for a in out)
    return out


def test_a_share_spent_before_it_is_taken_back_is_announced(tmp_path: Path, runtime_factory) -> None:
    """A call lost in flight spent its hold, floor share included. Between that and the job's
    next admission the free room can go to another spender (a job sharing a named budget):
    the floor then takes back what is left, and the job says how much of the share it could not."""
    from jobs.ledger.models import LedgerEvent

    rt, job_id = _routed_job(tmp_path, runtime_factory)
    first, share, others = _released_after_admission(rt, job_id, lost=True)
    _take_the_free_room(rt, job_id)
    _admit(rt, job_id, others)
    with session_scope(rt.db_url) as s:
        notes = list(s.scalars(select(LedgerEvent.message).where(LedgerEvent.job_id == job_id, LedgerEvent.kind == "job_note")))
    assert any("1 items returned to admission; the floor took back $0.000000" in n for n in notes), notes
    assert _floor_held(rt, job_id) == 0
    assert _admit(rt, job_id, [first]).admitted == [], "nothing left for it: skipped, with its reason"
    with session_scope(rt.db_url) as s:
        item = s.get_one(Item, first)
        assert item.state == "skipped_budget" and item.error.startswith("budget")
    assert share > 0
