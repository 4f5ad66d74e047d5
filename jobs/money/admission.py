"""Admission of claimed items to the provider: the budget gate in front of every call.

Items are admitted in small batches just before they are sent, so the money held at any
moment is about the worst case of the calls in flight, not of a whole chunk. For each item
one reservation is opened on the job's cap and on its named budget (both or neither); when
the routed model cannot be afforded the ``--on-exhausted`` policy decides: ``downgrade`` to
the weak model when that fits, ``skip`` the item, or ``stop`` the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from jobs.config import AppConfig
from jobs.ledger.models import Budget, Item, Job
from jobs.ledger.session import session_scope
from jobs.ledger.types import utcnow
from jobs.lifecycle import transitions as lifecycle
from jobs.lifecycle.states import ItemState, JobState
from jobs.money.budgets import Hold, add_event, check_alerts, current_window, open_reservation
from jobs.money.pricing import PriceVersion
from jobs.money.tokens import input_token_bound
from jobs.pipeline.request import RequestShape, request_shape
from jobs.runtime import Runtime


def worst_case_micro(shape: RequestShape, model: str, prices: dict[str, PriceVersion], config: AppConfig) -> int:
    """Worst-case cost of one call, over the model and its fallback chain."""
    tokens_in = input_token_bound(shape.messages)
    worst = 0
    for candidate in config.fallback_chain(model):
        price = prices.get(candidate)
        if price is not None:
            worst = max(worst, price.cost_micro_usd(tokens_in, shape.max_tokens))
    return worst


@dataclass
class Admitted:
    row: Any
    model: str
    hold: Hold | None
    max_tokens: int
    messages: list[dict]


@dataclass
class AdmitResult:
    admitted: list[Admitted] = field(default_factory=list)
    deferred: list = field(default_factory=list)  # would fit once holds in flight settle
    stop: bool = False


@dataclass(frozen=True)
class BudgetPlan:
    """Which windows a job draws from; None when the job has no budget at all."""

    job_budget_id: int | None
    named_budget_id: int | None
    policy: str
    strong: str
    weak: str

    @property
    def active(self) -> bool:
        return self.job_budget_id is not None or self.named_budget_id is not None


def budget_plan(job: Job) -> BudgetPlan:
    return BudgetPlan(job.job_budget_id, job.budget_id, job.on_exhausted, job.strong_model, job.weak_model)


def _room_without_holds(s, window_ids: tuple[int, ...]) -> int:
    """What the tightest window could still afford if every hold were released."""
    from sqlalchemy import func

    from jobs.ledger.models import BudgetWindow

    if not window_ids:
        return 2**62
    return int(
        s.scalar(
            select(func.min(BudgetWindow.cap_micro_usd - BudgetWindow.spent_micro_usd)).where(BudgetWindow.id.in_(window_ids))
        )
    )


def admit(
    rt: Runtime,
    job_id: str,
    rows: list,
    plan: BudgetPlan,
    prices: dict[str, PriceVersion],
    job_max_tokens: int | None,
    final: bool = False,
) -> AdmitResult:
    """Reserve money for ``rows`` (claimed 'sent' items) in one transaction.

    A reservation that fails only because of money held for calls in flight is *deferred*
    (tried again after they settle), not downgraded or skipped: the policy applies only when
    the call could not be afforded even if every hold were released, or when ``final``.
    """
    out = AdmitResult()
    cfg = rt.config
    prepared = [
        (
            row,
            request_shape(
                cfg,
                row.model,
                prompt=row.prompt,
                messages=row.messages,
                row_max_tokens=row.max_tokens,
                job_max_tokens=job_max_tokens,
            ),
        )
        for row in rows
    ]
    if not plan.active:
        out.admitted = [Admitted(row, row.model, None, shape.max_tokens, shape.messages) for row, shape in prepared]
        return out
    with session_scope(rt.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.state != JobState.IN_PROGRESS:
            out.stop = True
            return out
        job_window = current_window(s, s.get_one(Budget, plan.job_budget_id)).id if plan.job_budget_id else None
        named_window = current_window(s, s.get_one(Budget, plan.named_budget_id)).id if plan.named_budget_id else None
        skipped: list[tuple[int, str]] = []
        downgraded: list[int] = []
        windows = tuple(w for w in (job_window, named_window) if w is not None)
        for i, (row, shape) in enumerate(prepared):
            model = row.model
            amount = worst_case_micro(shape, model, prices, cfg)
            hold = open_reservation(s, job_id, row.id, model, amount, job_window, named_window)
            if hold is None and not final and amount <= _room_without_holds(s, windows):
                out.deferred.append(row)
                continue
            if hold is None and plan.policy == "downgrade" and model != plan.weak:
                weak_amount = worst_case_micro(shape, plan.weak, prices, cfg)
                hold = open_reservation(s, job_id, row.id, plan.weak, weak_amount, job_window, named_window)
                if hold is not None:
                    model = plan.weak
                    downgraded.append(row.id)
                elif not final and weak_amount <= _room_without_holds(s, windows):
                    out.deferred.append(row)
                    continue
            if hold is None:
                if plan.policy == "stop":
                    _stop_job(s, job, [r.id for r, *_ in prepared[i:]], amount)
                    for window in windows:
                        check_alerts(s, window, job_id, needed=amount)
                    out.stop = True
                    break
                skipped.append((row.id, f"budget: cannot afford {model} (worst case {amount} micro-USD)"))
                for window in windows:
                    check_alerts(s, window, job_id, needed=amount)
                continue
            out.admitted.append(Admitted(row, model, hold, shape.max_tokens, shape.messages))
        now = utcnow()
        if downgraded:
            s.execute(
                update(Item)
                .where(Item.id.in_(downgraded))
                .values(model=plan.weak, route_reason="budget_downgrade", updated_at=now)
            )
        for item_id, reason in skipped:
            s.execute(
                update(Item)
                .where(Item.id == item_id, Item.state == ItemState.SENT)
                .values(state=ItemState.SKIPPED_BUDGET, error=reason, lease_until=None, updated_at=now)
            )
    return out


def _stop_job(s, job: Job, unsent_ids: list[int], amount: int) -> None:
    """--on-exhausted stop: the job ends budget_exhausted, every unsent item is listed as skipped."""
    now = utcnow()
    reason = "budget exhausted: job stopped (--on-exhausted stop)"
    s.execute(
        update(Item)
        .where(Item.id.in_(unsent_ids), Item.state == ItemState.SENT)
        .values(state=ItemState.SKIPPED_BUDGET, error=reason, lease_until=None, updated_at=now)
    )
    s.execute(
        update(Item)
        .where(Item.job_id == job.id, Item.state.in_(lifecycle.UNSENT_STATES))
        .values(state=ItemState.SKIPPED_BUDGET, error=reason, updated_at=now)
    )
    lifecycle.transition(job, JobState.BUDGET_EXHAUSTED)
    job.error = "budget_exhausted"
    add_event(s, "budget_exhausted", f"job {job.id} stopped: next call needed {amount} micro-USD", job_id=job.id)
