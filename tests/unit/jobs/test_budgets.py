"""Budgets: the cap is a database fact; policies downgrade, skip or stop; holds are recovered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from jobs.money.budgets import BudgetError, budget_report, create_budget, current_window, raise_budget, try_reserve, window_start
from jobs.ledger.migrate import upgrade
from jobs.ledger.models import Attempt, Budget, BudgetWindow, Item, LedgerEvent, Reservation
from jobs.ledger.session import session_scope
from jobs.lifecycle.service import JobSpec, run, status


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i} " + "detail " * (i % 30)}) + "\n")
    return path


def test_windows_are_utc_periods() -> None:
    now = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)  # a Thursday
    assert window_start("daily", now) == datetime(2026, 11, 26, tzinfo=UTC)
    assert window_start("weekly", now) == datetime(2026, 11, 23, tzinfo=UTC)
    assert window_start("monthly", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert window_start("none", now).year == 1970
    with pytest.raises(BudgetError):
        window_start("hourly", now)


def test_reservations_stop_at_the_cap_and_the_check_constraint_holds(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with session_scope(sqlite_url) as s:
        b = create_budget(s, "team", 0.001, "daily")  # 1000 micro-USD
        wid = current_window(s, b).id
    admitted = 0
    with session_scope(sqlite_url) as s:
        for _ in range(15):
            admitted += try_reserve(s, (wid,), 70)
    assert admitted == 14  # 14 * 70 = 980 <= 1000 < 15 * 70
    with pytest.raises(IntegrityError):
        with session_scope(sqlite_url) as s:  # a bug that bypasses the conditional UPDATE still cannot overspend
            s.execute(text("UPDATE budget_windows SET spent_micro_usd = spent_micro_usd + 100 WHERE id = :w"), {"w": wid})
    with session_scope(sqlite_url) as s:
        with pytest.raises(BudgetError, match="below what this window already spent and holds"):
            raise_budget(s, "team", 0.0005)
        raise_budget(s, "team", 0.002)
        assert budget_report(s, s.scalar(select(Budget).where(Budget.name == "team")))["available_usd"] == pytest.approx(
            0.002 - 0.00098
        )
        with pytest.raises(BudgetError, match="already exists"):
            create_budget(s, "team", 1.0)


def _all_strong_cost(tmp_path: Path, sqlite_url: str, runtime_factory, data: Path) -> float:
    rt = runtime_factory(f"sqlite:///{tmp_path / 'probe.db'}")
    return run(rt, JobSpec(input_file=str(data), router="length", threshold=0.0)).cost_usd


@pytest.mark.parametrize("policy", ["downgrade", "skip", "stop"])
def test_job_cap_at_30_percent_of_all_strong(tmp_path: Path, sqlite_url: str, runtime_factory, policy: str) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 200)
    all_strong = _all_strong_cost(tmp_path, sqlite_url, runtime_factory, data)
    cap = round(0.3 * all_strong, 6)
    rt = runtime_factory(sqlite_url)
    st = run(
        rt, JobSpec(input_file=str(data), router="length", strong_share=0.8, budget_usd=cap, on_exhausted=policy, max_tokens=64)
    )
    assert st.cost_usd <= cap
    budget = st.budgets["job"]
    assert budget["spent_usd"] == pytest.approx(st.cost_usd) and budget["reserved_usd"] == 0
    with session_scope(sqlite_url) as s:
        assert s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open")) == 0
        reasons = dict(s.execute(select(Item.route_reason, func.count()).group_by(Item.route_reason)).all())
    # The cap covers every item's weak answer (the weak floor): under every policy no item is
    # skipped and upgrades the surplus cannot pay are answered weak (tests/unit/jobs/test_weak_floor.py
    # covers a cap below the floor, where the policies differ).
    assert st.status == "completed"
    assert reasons.get("budget_downgrade", 0) > 0
    assert st.succeeded == 200 and st.skipped_budget == 0
    assert st.cost_usd >= 0.5 * cap, "the cap should be used, not left idle"


def test_named_budget_shared_by_two_jobs_and_alerts(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 60)
    rt = runtime_factory(sqlite_url)
    upgrade(sqlite_url)
    with session_scope(sqlite_url) as s:
        create_budget(s, "labeling", 0.02, "monthly")
    first = run(rt, JobSpec(input_file=str(data), router="length", budget="labeling", max_tokens=32))
    second = run(rt, JobSpec(input_file=str(data), router="length", budget="labeling", max_tokens=32))
    with session_scope(sqlite_url) as s:
        w = s.scalars(select(BudgetWindow)).one()
        kinds = set(s.scalars(select(LedgerEvent.kind)))
    assert w.spent_micro_usd == first.cost_micro_usd + second.cost_micro_usd <= w.cap_micro_usd
    assert {"budget_alert_50", "budget_alert_80"} <= kinds


def test_allocate_budget_spends_under_the_cap(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 100)
    all_strong = _all_strong_cost(tmp_path, sqlite_url, runtime_factory, data)
    rt = runtime_factory(sqlite_url)
    st = run(
        rt,
        JobSpec(input_file=str(data), router="length", budget_usd=round(0.4 * all_strong, 6), allocate="budget", max_tokens=64),
    )
    assert st.status == "completed" and st.succeeded == 100
    assert st.cost_usd <= 0.4 * all_strong
    assert 0 < st.strong_calls < 100
    with session_scope(sqlite_url) as s:
        # an empty ledger: a pilot first (tests/unit/pipeline/test_allocate_estimates.py), then the rest
        # allocated on estimates; upgrades that no longer fit the worst-case holds are answered weak
        reasons = set(s.scalars(select(Item.route_reason)))
        assert "budget_allocation" in reasons and reasons <= {"budget_allocation", "budget_pilot", "budget_downgrade"}
        allocated = Item.route_reason == "budget_allocation"
        strong_scores = s.scalars(select(Item.score).where(allocated, Item.route == "strong")).all()
        weak_scores = s.scalars(select(Item.score).where(allocated, Item.route == "weak")).all()
    assert np.mean(strong_scores) > np.mean(weak_scores)


def test_lost_hold_is_settled_conservatively_and_attempts_add_up(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    from jobs.pipeline.tasks import InlineQueue
    from jobs.lifecycle.service import drain_inline, resume

    data = write_prompts(tmp_path / "in.jsonl", 20)
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", budget_usd=1.0))
    job_id = st.job_id
    with session_scope(sqlite_url) as s:  # a worker that reserved, marked sent and died
        item = s.scalars(select(Item).where(Item.job_id == job_id).limit(1)).one()
        job_window = s.scalar(select(BudgetWindow.id))
        s.execute(
            update(Item).where(Item.id == item.id).values(state="sent", lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        s.execute(
            text("UPDATE budget_windows SET reserved_micro_usd = reserved_micro_usd + 5000 WHERE id = :w"), {"w": job_window}
        )
        s.add(
            Reservation(
                id="dead",
                job_id=job_id,
                item_id=item.id,
                model=item.model,
                amount_micro_usd=5000,
                job_window_id=job_window,
                state="open",
                created_at=datetime.now(UTC),
                lease_until=datetime.now(UTC) - timedelta(seconds=1),
                sent_at=datetime.now(UTC),
            )
        )  # the call was marked as going out (jobs.pipeline.sent)
        from jobs.ledger.models import Job

        s.execute(update(Job).where(Job.id == job_id).values(state="in_progress", phase="generating"))
    queue = InlineQueue()
    resume(rt, job_id, queue)
    drain_inline(rt, queue, job_id)
    st = status(rt, job_id)
    assert st.status == "completed" and st.succeeded == 20
    with session_scope(sqlite_url) as s:
        dead = s.get(Reservation, "dead")
        lost = s.scalars(select(Attempt).where(Attempt.error_class == "LostInFlight")).one()
        spent = s.scalar(select(BudgetWindow.spent_micro_usd))
        attempt_sum = s.scalar(select(func.sum(Attempt.cost_micro_usd)))
        item_sum = s.scalar(select(func.sum(Item.cost_micro_usd)))
        assert s.scalar(select(func.count()).select_from(LedgerEvent).where(LedgerEvent.kind == "reaper_settled")) == 1
    assert dead.state == "settled" and dead.settled_micro_usd == 5000
    assert lost.cost_micro_usd == 5000
    assert spent == attempt_sum == item_sum == st.cost_micro_usd


def test_allocation_beats_threshold_at_equal_spend() -> None:
    from routing.allocation import allocate_budget, threshold_at_spend

    rng = np.random.default_rng(0)
    p = rng.uniform(size=2000)
    extra = rng.lognormal(0, 1, size=2000)  # long prompts cost much more on the strong model
    cw = np.full(2000, 0.1)
    cap = cw.sum() + 0.2 * extra.sum()
    alloc = allocate_budget(p, cw + extra, cw, cap)
    fixed = threshold_at_spend(p, cw + extra, cw, cap)
    assert alloc.affordable and alloc.cost <= cap
    assert (cw + extra * fixed).sum() <= cap
    assert p[alloc.strong].sum() > p[fixed].sum()
    none = allocate_budget(p, cw + extra, cw, cw.sum() - 1)
    assert not none.affordable and not none.strong.any()


def test_cap_holds_under_twenty_percent_faults(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    data = write_prompts(tmp_path / "in.jsonl", 200)
    all_strong = _all_strong_cost(tmp_path, sqlite_url, runtime_factory, data)
    cap = round(0.3 * all_strong, 6)
    faults = {
        "providers.sim.simulated.fault_rate": 0.2,
        "providers.sim.simulated.retry_after_s": 0.01,
        "providers.sim.simulated.hang_s": 2.0,
        "providers.sim.timeout_s": 0.5,
        "providers.sim.retry": {"max_attempts": 12, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "max_elapsed_s": 60},
    }
    rt = runtime_factory(sqlite_url, faults)
    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.8, budget_usd=cap, max_tokens=64))
    assert st.status == "completed"
    assert st.failed == 0 and st.succeeded + st.skipped_budget == 200
    assert st.attempts > st.succeeded, "faults were injected and retried"
    budget = st.budgets["job"]
    assert budget["spent_usd"] <= cap and budget["overdraft_usd"] == 0
    assert st.cost_usd == pytest.approx(budget["spent_usd"])
    with session_scope(sqlite_url) as s:
        errors = set(s.scalars(select(Attempt.error_class).where(Attempt.error_class.is_not(None))))
        assert s.scalar(select(func.count()).select_from(Reservation).where(Reservation.state == "open")) == 0
    assert len(errors) >= 3, errors


def test_locally_counted_usage_never_exceeds_the_hold(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    """Responses without `usage` are counted with another tokenizer; the count is bounded by
    what the request allowed, so the settlement stays within the reservation (no overdraft)."""
    data = write_prompts(tmp_path / "in.jsonl", 120)
    all_strong = _all_strong_cost(tmp_path, sqlite_url, runtime_factory, data)
    rt = runtime_factory(sqlite_url, {"providers.sim.simulated.faults": {"no_usage": 0.6}})
    st = run(
        rt, JobSpec(input_file=str(data), router="length", strong_share=0.8, budget_usd=round(0.3 * all_strong, 6), max_tokens=64)
    )
    assert st.budgets["job"]["overdraft_usd"] == 0
    with session_scope(sqlite_url) as s:
        estimated = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.usage_estimated.is_(True)))
        over = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.completion_tokens > 64))
    assert estimated > 0 and over == 0


def test_an_alert_is_recorded_after_commit_and_once_the_write_fails_by_the_next_check(sqlite_url: str, monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    import jobs.money.budgets as budgets

    upgrade(sqlite_url)
    with session_scope(sqlite_url) as s:
        window = current_window(s, create_budget(s, "labeling", 0.01, "monthly")).id

    def alerts() -> list[str]:
        with session_scope(sqlite_url) as s:
            return list(s.scalars(select(LedgerEvent.dedupe_key).where(LedgerEvent.kind.like("budget_alert%"))))

    with session_scope(sqlite_url) as s:  # rolled back: nothing recorded
        budgets.check_alerts(s, window, None, needed=20_000)
        s.rollback()
    assert alerts() == []

    real_add_event = budgets.add_event
    monkeypatch.setattr(
        budgets, "add_event", lambda *a, **k: (_ for _ in ()).throw(OperationalError("INSERT", {}, Exception("locked")))
    )
    with session_scope(sqlite_url) as s:  # the spend commits although its alert cannot be written
        assert try_reserve(s, (window,), 3_000)
        budgets.check_alerts(s, window, None, needed=20_000)
    assert alerts() == []
    monkeypatch.setattr(budgets, "add_event", real_add_event)
    with session_scope(sqlite_url) as s:
        budgets.check_alerts(s, window, None, needed=20_000)
        budgets.check_alerts(s, window, None, needed=20_000)
        assert try_reserve(s, (window,), 1_000)  # a savepoint released is not the commit
        assert alerts() == []  # not before this transaction commits
    with session_scope(sqlite_url) as s:
        budgets.check_alerts(s, window, None, needed=20_000)  # already there: nothing new
    assert alerts() == [f"alert:{window}:100"]
    with session_scope(sqlite_url) as s:
        assert s.scalar(text("SELECT reserved_micro_usd FROM budget_windows WHERE id = :w"), {"w": window}) == 4_000
