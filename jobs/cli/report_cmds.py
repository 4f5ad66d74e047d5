"""``routebatch report JOB``: what an adapted job learned on its judged sample."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit, fail


@app.command("report")
def report_cmd(
    job_id: str = typer.Argument(...),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the sample's quality-vs-cost curves here (PNG)."),
    points: int = typer.Option(21, "--points", min=3, help="Points per curve."),
    as_json: bool = JsonOption,
) -> None:
    """An --adapt job's sample: the chosen scorer and the quality-vs-cost curves of it, the
    prior and length, with the job's operating point and its 90% interval."""
    from jobs.cli.output import ledger_url
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.lookup import resolve_job_id
    from jobs.lifecycle.status import get_job
    from jobs.reports.adapt_curve import adapt_curve, plot_adapt_curve

    url = ledger_url()
    with session_scope(url) as s:
        full_id = resolve_job_id(s, job_id)
        record = dict((get_job(s, full_id).spec or {}).get("adaptation") or {})
    if record.get("stage") != "adapted":
        fail(f"job {full_id} was not adapted (run it with --adapt F)", as_json)
    try:
        curve = adapt_curve(record, points)
    except ValueError as exc:
        fail(f"job {full_id}: {exc}", as_json)
    if plot is not None:
        try:
            plot_adapt_curve(curve, plot, f"job {full_id}: {curve['judged']} judged items")
        except ImportError:
            fail("--plot needs matplotlib: pip install 'routebatch[eval]'", as_json)
    data = {"job_id": full_id, **curve, "plot": str(plot) if plot else None}

    def render(con) -> None:
        op = data["operating_point"]
        q = op.get("quality_vs_strong") or {}
        con.print(
            f"job {full_id}: {data['judged']} judged items; routed with {data['chosen']} at strong share {op['strong_share']}"
        )
        if q:
            con.print(f"quality vs all-strong: {q['estimate']:.3f} (90% interval {q['low']:.3f}-{q['high']:.3f})")
        if plot is not None:
            con.print(f"curves written to {plot}")

    emit(data, as_json, render)
