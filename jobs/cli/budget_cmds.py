"""Budget commands: create, list, show, raise."""

from __future__ import annotations

import typer
from rich.table import Table

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit, fail, ledger_url

budget_app = typer.Typer(help="Named budgets that jobs draw from (--budget NAME).", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


def _db_url() -> str:
    return ledger_url()


def _render(reports: list[dict]):
    def render(con) -> None:
        table = Table(title="budgets")
        for col in ("name", "window", "window_start", "cap_usd", "spent_usd", "reserved_usd", "available_usd", "used_pct"):
            table.add_column(col)
        for r in reports:
            table.add_row(
                *(
                    str(r[c])
                    for c in (
                        "name",
                        "window",
                        "window_start",
                        "cap_usd",
                        "spent_usd",
                        "reserved_usd",
                        "available_usd",
                        "used_pct",
                    )
                )
            )
        con.print(table)

    return render


def _run(fn):
    from jobs.ledger.session import session_scope
    from jobs.money.budgets import BudgetError

    try:
        with session_scope(_db_url()) as s:
            return fn(s)
    except BudgetError as exc:
        fail(str(exc))


@budget_app.command("create")
def create(
    name: str,
    cap_usd: float = typer.Option(..., "--cap-usd", help="Cap per window, in USD."),
    window: str = typer.Option("none", "--window", help="none | daily | weekly | monthly (UTC periods)."),
    as_json: bool = JsonOption,
) -> None:
    """Create a named budget."""
    from jobs.money.budgets import budget_report, create_budget

    report = _run(lambda s: budget_report(s, create_budget(s, name, cap_usd, window)))
    emit(report, as_json, _render([report]))


@budget_app.command("list")
def list_budgets(
    include_jobs: bool = typer.Option(False, "--include-jobs", help="Also list the jobs' own caps."), as_json: bool = JsonOption
) -> None:
    """Every named budget with its current window."""
    from sqlalchemy import select

    from jobs.ledger.models import Budget
    from jobs.money.budgets import budget_report

    def collect(s):
        q = select(Budget).order_by(Budget.name)
        if not include_jobs:
            q = q.where(Budget.kind == "named")
        return [budget_report(s, b) for b in s.scalars(q).all()]

    reports = _run(collect)
    emit(reports, as_json, _render(reports))


@budget_app.command("show")
def show(name: str, as_json: bool = JsonOption) -> None:
    """One budget: cap, spent, held, available in its current window."""
    from jobs.money.budgets import budget_report, get_budget

    report = _run(lambda s: budget_report(s, get_budget(s, name)))
    emit(report, as_json, _render([report]))


@budget_app.command("raise")
def raise_cap(
    name: str,
    cap_usd: float = typer.Option(..., "--cap-usd", help="The new cap (USD); not below what is spent and held."),
    as_json: bool = JsonOption,
) -> None:
    """Change a budget's cap (resume a budget_exhausted job afterwards)."""
    from jobs.money.budgets import budget_report, raise_budget

    report = _run(lambda s: budget_report(s, raise_budget(s, name, cap_usd)))
    emit(report, as_json, _render([report]))
