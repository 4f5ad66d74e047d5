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
    from jobs.db.migrate import ensure_schema
    from jobs.ledger import ledger_rows
    from jobs.settings import get_settings

    try:
        since_date = datetime.strptime(since, "%Y-%m-%d").date() if since else None
    except ValueError:
        fail(f"--since: expected YYYY-MM-DD, got {since!r}", as_json)
    url = get_settings().database_url
    ensure_schema(url)
    try:
        rows = ledger_rows(url, job=job, since=since_date, by=by)
    except ValueError as exc:
        fail(str(exc), as_json)

    def render(con) -> None:
        table = Table(title=f"ledger by {by}")
        columns = [c for c in (rows[0].keys() if rows else []) if not c.endswith("micro_usd")]
        if by == "job":
            columns = ["job_id", "state", "total", "succeeded", "strong_answers", "weak_answers", "cost_usd", "all_strong_usd", "savings_pct"]
        for col in columns:
            table.add_column(col)
        for r in rows:
            table.add_row(*(f"{r[c]:.6f}" if isinstance(r[c], float) else str(r[c]) for c in columns))
        con.print(table if rows else "no spend recorded")

    emit(rows, as_json, render)


@db_app.command("grant-readonly")
def grant_readonly_cmd(role: str = typer.Argument(..., help="Role to create or update."), as_json: bool = JsonOption) -> None:
    """Create a Postgres role that can read the ledger (tables and views) and nothing else."""
    from jobs.ledger import grant_readonly
    from jobs.settings import get_settings

    try:
        statements = grant_readonly(get_settings().database_url, role)
    except ValueError as exc:
        fail(str(exc), as_json)
    emit({"role": role, "statements": statements}, as_json, lambda con: con.print(f"role {role} can now read the ledger"))
