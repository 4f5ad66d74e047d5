"""Ledger commands: `ledger` (spend by job, model or day) and `db grant-readonly`."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import typer
from rich.table import Table

from jobs.cli.app import app
from jobs.cli.job_cmds import db_app
from jobs.cli.output import JsonOption, emit, fail


@app.command()
def ledger(
    job: Optional[str] = typer.Option(None, "--job", help="Only this job."),
    since: Optional[str] = typer.Option(None, "--since", help="From this date (YYYY-MM-DD, UTC)."),
    by: str = typer.Option("job", "--by", help="job | model | day"),
    as_json: bool = JsonOption,
) -> None:
    """Where the money went: the ledger's SQL views, grouped by job, model or day."""
    from jobs.ledger.migrate import ensure_schema
    from jobs.ledger.session import check_database
    from jobs.ledger.views import ledger_rows
    from jobs.settings import get_settings

    try:
        since_date = datetime.strptime(since, "%Y-%m-%d").date() if since else None
    except ValueError:
        fail(f"--since: expected YYYY-MM-DD, got {since!r}", as_json)
    url = get_settings().database_url
    check_database(url)
    ensure_schema(url)
    try:
        rows = ledger_rows(url, job=job, since=since_date, by=by)
    except ValueError as exc:
        fail(str(exc), as_json)

    def render(con) -> None:
        table = Table(title=f"ledger by {by}")
        columns = [c for c in (rows[0].keys() if rows else []) if not c.endswith("micro_usd")]
        if by == "job":
            columns = [
                "job_id",
                "state",
                "total",
                "succeeded",
                "strong_answers",
                "weak_answers",
                "cost_usd",
                "all_strong_usd",
                "savings_pct",
            ]
        for col in columns:
            table.add_column(col)
        for r in rows:
            table.add_row(*(f"{r[c]:.6f}" if isinstance(r[c], float) else str(r[c]) for c in columns))
        con.print(table if rows else "no spend recorded")

    emit(rows, as_json, render)


@db_app.command("grant-readonly")
def grant_readonly_cmd(role: str = typer.Argument(..., help="Role to create or update."), as_json: bool = JsonOption) -> None:
    """Create a Postgres role that can read the ledger (tables and views) and nothing else."""
    from jobs.ledger.views import grant_readonly
    from jobs.settings import get_settings

    try:
        statements = grant_readonly(get_settings().database_url, role)
    except ValueError as exc:
        fail(str(exc), as_json)
    emit({"role": role, "statements": statements}, as_json, lambda con: con.print(f"role {role} can now read the ledger"))


@app.command()
def plan(
    input_file: str = typer.Argument(..., help="Dataset to price (not ingested; no provider calls)."),
    router: Optional[str] = typer.Option(None, "--router", help="Router spec (default from config)."),
    strong: Optional[str] = typer.Option(None, "--strong"),
    weak: Optional[str] = typer.Option(None, "--weak"),
    fmt: Optional[str] = typer.Option(None, "--format"),
    prompt_column: str = typer.Option("prompt", "--prompt-column"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="max_tokens for rows that set none."),
    output_tokens: Optional[int] = typer.Option(
        None, "--output-tokens", help="Assumed answer length (default: max_tokens, the worst case)."
    ),
    budget_usd: Optional[float] = typer.Option(
        None, "--budget-usd", help="Also show the budget-optimal allocation under this cap."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Dry run: estimated cost of all-weak, all-strong, routed at 10..90% strong, and the budget optimum."""
    from pathlib import Path

    from jobs.config import ConfigError, load_config
    from jobs.datasets import DatasetError
    from jobs.reports.planning import estimate, plan_table
    from jobs.settings import get_settings

    try:
        cfg = load_config(get_settings().config_file())
        strong_m, weak_m = strong or cfg.defaults.strong, weak or cfg.defaults.weak
        cfg.model(strong_m), cfg.model(weak_m)
        inp = estimate(
            cfg,
            Path(input_file),
            router or cfg.defaults.router,
            strong_m,
            weak_m,
            fmt=fmt,
            prompt_column=prompt_column,
            max_tokens=max_tokens,
            output_tokens=output_tokens,
        )
    except (ConfigError, DatasetError, ValueError) as exc:
        fail(str(exc), as_json)
    result = {
        "input_file": input_file,
        "router": router or cfg.defaults.router,
        "strong": strong_m,
        "weak": weak_m,
        **plan_table(inp, budget_usd),
    }

    def render(con) -> None:
        table = Table(
            title=f"plan for {input_file}: {result['items']} items ({result['invalid']} invalid), {strong_m} vs {weak_m}"
        )
        for col in ("policy", "strong items", "strong share", "est. cost (USD)", "savings vs all-strong"):
            table.add_column(col)
        for r in result["rows"]:
            table.add_row(
                r["policy"],
                str(r["strong_items"]),
                f"{100 * r['strong_share']:.1f}%",
                f"{r['cost_usd']:.6f}",
                f"{r['savings_pct']:.1f}%",
            )
        con.print(table)

    emit(result, as_json, render)
