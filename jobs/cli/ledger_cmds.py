"""Ledger commands: `ledger` (spend by job, model or day) and `db grant-readonly`."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import typer
from rich.table import Table

from jobs.cli.app import app
from jobs.cli.job_cmds import db_app
from jobs.cli.output import JsonOption, emit, fail, styled


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
    input_file: str = typer.Argument(..., help="Dataset to price (not ingested; no calls unless --pilot)."),
    router: Optional[str] = typer.Option(None, "--router", help="Router spec (default from config)."),
    strong: Optional[str] = typer.Option(None, "--strong"),
    weak: Optional[str] = typer.Option(None, "--weak"),
    fmt: Optional[str] = typer.Option(None, "--format"),
    prompt_column: str = typer.Option("prompt", "--prompt-column"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="max_tokens for rows that set none."),
    output_tokens: Optional[int] = typer.Option(
        None, "--output-tokens", help="Assume this answer length instead of the ledger's history."
    ),
    pilot: int = typer.Option(
        0,
        "--pilot",
        min=0,
        help="First answer N sampled items with both models (real calls, recorded as two jobs) to learn answer lengths.",
    ),
    budget_usd: Optional[float] = typer.Option(
        None, "--budget-usd", help="Also show the weak floor and the budget-optimal allocation under this cap."
    ),
    dispatch: Optional[str] = typer.Option(
        None, "--dispatch", help="sync | batch | auto: price as the job would be sent (default: each provider's dispatch)."
    ),
    adapt: Optional[float] = typer.Option(None, "--adapt", help="Also price --adapt F: the sample's weak twins and judge calls."),
    models: Optional[str] = typer.Option(
        None, "--models", help="a,b,c: also price each model alone and (with --budget-usd) the allocation across them."
    ),
    adapt_min: int = typer.Option(100, "--adapt-min", help="With --adapt: the sample's minimum size."),
    judge: str = typer.Option("llm", "--judge", help="With --adapt: llm | labels:FILE | sim (the last two make no calls)."),
    as_json: bool = JsonOption,
) -> None:
    """Dry run: estimated cost (with a p10-p90 interval and the worst case) of all-weak,
    routed at 10..90% strong, all-strong and the budget optimum."""
    import tempfile
    from pathlib import Path

    from rich.markup import escape

    from jobs.cli.output import console
    from jobs.config import ConfigError, load_config
    from jobs.datasets import DatasetError
    from jobs.money.pricing import micro_to_usd
    from jobs.reports.planning import (
        accepted_rows,
        adapt_overhead,
        estimate,
        plan_table,
        priced_dispatch,
        run_pilot,
        tiers_plan,
    )
    from jobs.settings import get_settings

    settings = get_settings()
    err = console(stderr=True)
    if dispatch not in (None, "sync", "batch", "auto"):
        fail(f"--dispatch must be sync, batch or auto, not {dispatch!r}", as_json)
    try:
        cfg = load_config(settings.config_file())
        strong_m, weak_m = strong or cfg.defaults.strong, weak or cfg.defaults.weak
        cfg.model(strong_m), cfg.model(weak_m)
        rows = accepted_rows(cfg, Path(input_file), strong_m, weak_m, fmt=fmt, prompt_column=prompt_column)
    except (ConfigError, DatasetError, ValueError) as exc:
        fail(str(exc), as_json)
    db_url = _ledger_url(settings.database_url, required=bool(pilot), as_json=as_json)
    pilot_info = None
    if pilot:
        from jobs.runtime import Runtime

        if not as_json:
            err.print(f"pilot: answering {min(pilot, len(rows[0]))} sampled items with {strong_m} and {weak_m} ...")
        rt = Runtime(settings, cfg)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                job_ids = run_pilot(rt, rows[0], pilot, strong_m, weak_m, workdir=Path(tmp), max_tokens=max_tokens)
            from jobs.lifecycle.service import status

            spent = sum(status(rt, j).cost_usd for j in job_ids)
        finally:
            rt.close()
        pilot_info = {"items": min(pilot, len(rows[0])), "job_ids": job_ids, "cost_usd": spent}
        if not as_json:
            err.print(f"pilot: jobs {', '.join(job_ids)} cost ${spent:.6f} (in the ledger)")
    try:
        inp = _score_with_progress(
            lambda progress: estimate(
                cfg,
                Path(input_file),
                router or cfg.defaults.router,
                strong_m,
                weak_m,
                max_tokens=max_tokens,
                output_tokens=output_tokens,
                db_url=db_url,
                progress=progress,
                rows=rows,
                dispatch=dispatch,
            ),
            show=not as_json,
        )
    except (ConfigError, DatasetError, ValueError) as exc:
        fail(str(exc), as_json)
    result = {
        "input_file": input_file,
        "router": router or cfg.defaults.router,
        "strong": strong_m,
        "weak": weak_m,
        "prices": priced_dispatch(cfg, [strong_m, weak_m], dispatch),
        **plan_table(inp, budget_usd),
    }
    if models:
        tiers = [m.strip() for m in models.split(",") if m.strip()]
        try:
            for m in tiers:
                cfg.model(m)
        except ConfigError as exc:
            fail(str(exc), as_json)
        if len(tiers) < 2:
            fail("--models needs at least two models, most capable first", as_json)
        result["tiers"] = tiers_plan(
            cfg,
            rows[0],
            inp,
            tiers,
            budget_usd=budget_usd,
            max_tokens=max_tokens,
            output_tokens=output_tokens,
            db_url=db_url,
            dispatch=dispatch,
        )
    if adapt is not None:
        if not 0 < adapt <= 0.5:
            fail("--adapt must be in (0, 0.5]", as_json)
        result["adapt"] = adapt_overhead(
            cfg, rows[0], inp, strong_m, weak_m, fraction=adapt, minimum=adapt_min, judge=judge, dispatch=dispatch, db_url=db_url
        )
    if pilot_info:
        result["pilot"] = pilot_info

    def render(con) -> None:
        table = Table(
            title=escape(f"plan for {input_file}: {result['items']} items ({result['invalid']} invalid), {strong_m} vs {weak_m}")
        )
        for col in ("policy", "strong items", "strong share", "est. cost (USD)", "p10-p90 (USD)", "worst case (USD)",
                    "savings vs all-strong"):  # fmt: skip
            table.add_column(col)
        for r in result["rows"]:
            table.add_row(
                r["policy"],
                str(r["strong_items"]),
                f"{100 * r['strong_share']:.1f}%",
                f"{r['cost_usd']:.6f}",
                f"{r['cost_low_usd']:.6f}-{r['cost_high_usd']:.6f}",
                f"{r['worst_case_usd']:.6f}",
                f"{r['savings_pct']:.1f}%",
            )
        con.print(table)
        con.print(escape(f"estimate basis: {strong_m}: {result['basis']['strong']}; {weak_m}: {result['basis']['weak']}"))
        con.print("max_tokens stays the reservation bound: the worst case column is what budget holds take.")
        batch_priced = [m for m, how in result["prices"].items() if how == "batch"]
        if batch_priced:
            con.print(escape(f"priced at batch-API rates (dispatch batch): {', '.join(batch_priced)}"))
        if "floor" in result:
            f = result["floor"]
            con.print(
                escape(
                    f"weak floor: ${f['weak_worst_case_usd']:.6f} (every item's weak answer, worst case) "
                    f"{'fits' if f['covered'] else 'does NOT fit'} the cap ${f['cap_usd']:g}"
                )
            )
        if "tiers" in result:
            t = result["tiers"]
            for r in t["rows"]:
                con.print(escape(f"{r['policy']}: est. ${r['cost_usd']:.6f} (worst case ${r['worst_case_usd']:.6f})"))
            if "allocation" in t:
                a = t["allocation"]
                spread = ", ".join(f"{m} {n}" for m, n in a["by_model"].items())
                con.print(
                    escape(
                        f"allocation across {len(t['models'])} models under ${a['cap_usd']:g}: {spread}; est. ${a['cost_usd']:.6f}"
                    )
                )
        if "adapt" in result:
            a = result["adapt"]
            if a.get("sample"):
                con.print(
                    escape(
                        f"--adapt: a sample of {a['sample']} items adds ${a['extra_usd']:.6f} on top of any row "
                        f"(weak twins ${micro_to_usd(a['twin_micro_usd']):.6f}, judge {a['judge']} "
                        f"${micro_to_usd(a['judge_micro_usd']):.6f})" + (f"; {a['note']}" if a.get("note") else "")
                    )
                )
            else:
                con.print(escape(f"--adapt: {a['note']}"))
        if "warning" in result:
            con.print(styled(("warning:", "bold yellow"), " ", result["warning"]))

    emit(result, as_json, render)


def _ledger_url(url: str, *, required: bool, as_json: bool) -> str | None:
    """The ledger to read answer lengths from (and write a pilot to); without one the plan
    falls back to ``max_tokens`` unless a pilot needs it."""
    from jobs.errors import RoutebatchError
    from jobs.ledger.migrate import ensure_schema
    from jobs.ledger.session import check_database

    try:
        check_database(url)
        ensure_schema(url)
    except RoutebatchError as exc:
        if required:
            fail(f"--pilot records its calls in the ledger: {exc}", as_json)
        return None
    return url


def _score_with_progress(work, show: bool):
    """Run ``work(progress)`` with a rich progress bar on stderr while the router scores."""
    if not show:
        return work(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from jobs.cli.output import console

    with Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("scoring", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return work(progress)
