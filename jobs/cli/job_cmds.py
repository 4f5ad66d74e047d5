"""Job commands: run, submit, status, list, cancel, resume, export, and db upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from jobs.cli.app import app

if TYPE_CHECKING:
    from jobs.lifecycle.status import JobStatus
from jobs.cli.output import JsonOption, emit, fail

db_app = typer.Typer(help="Ledger database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _runtime():
    """The process runtime, after checking that the ledger database can be reached.

    An unreachable or misnamed database is an ``InfrastructureError`` here, which the app
    prints as one line (``{"error": ...}`` with ``--json``).
    """
    from jobs.ledger.session import check_database
    from jobs.runtime import Runtime

    rt = Runtime.from_settings()
    check_database(rt.db_url)
    return rt


def _job_id(rt, job_id: str) -> str:
    """The full id for ``job_id`` or a unique prefix of it (``JobNotFound`` otherwise)."""
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.lookup import resolve_job_id

    with session_scope(rt.db_url) as s:
        return resolve_job_id(s, job_id)


def _summary_table(st: dict) -> Table:
    table = Table(title=f"job {st['job_id']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("status", st["status"] + (f"  ({st['error']})" if st.get("error") else ""))
    if st.get("name"):
        table.add_row("name", st["name"])
    if st.get("metadata"):
        table.add_row("metadata", ", ".join(f"{k}={v}" for k, v in st["metadata"].items()))
    if st.get("completion_window"):
        table.add_row("completion window", f"{st['completion_window']}, expires {_when(st.get('expires_at'))}")
    table.add_row("router", f"{st['router']}  threshold={st['threshold']}")
    table.add_row("items", f"{st['total']} valid, {st['invalid']} invalid")
    if not st.get("ingest_complete", True):
        size = f" of {st['input_size']:,} bytes" if st.get("input_size") else ""
        read = f"{st['ingest_bytes']:,}" if st.get("ingest_bytes") is not None else "?"
        table.add_row("ingest", f"read to line {st['ingest_line']:,}: {read} bytes{size}")
    if st.get("input_changed"):
        table.add_row("warning", "the input changed while it was read")
    if st.get("runner"):
        table.add_row("runner", st["runner"])
    table.add_row("succeeded / failed", f"{st['succeeded']} / {st['failed']}")
    counts = ", ".join(f"{k}={v}" for k, v in st["counts"].items() if v)
    table.add_row("by state", counts or "-")
    table.add_row("strong / weak calls", f"{st['strong_calls']} ({st['strong_model']}) / {st['weak_calls']} ({st['weak_model']})")
    if len(st.get("models") or []) > 2:
        by_model = st.get("succeeded_by_model") or {}
        table.add_row("answered by model", ", ".join(f"{m}: {by_model.get(m, 0)}" for m in st["models"]))
    table.add_row("attempts", str(st["attempts"]))
    table.add_row("cost", f"${st['cost_usd']:.6f}")
    table.add_row("all-strong cost", f"${st['all_strong_cost_usd']:.6f}")
    table.add_row("savings", f"{st['savings_pct']:.1f}%")
    for key, b in (st.get("budgets") or {}).items():
        table.add_row(
            f"budget ({key})", f"{b['name']}: ${b['spent_usd']:.6f} of ${b['cap_usd']:.6f} spent, ${b['reserved_usd']:.6f} held"
        )
    if st.get("skipped_budget"):
        table.add_row("skipped (budget)", str(st["skipped_budget"]))
    adapt_rows(table, st)
    if "grade" in st:
        g = st["grade"]
        table.add_row("realised quality", f"{g.get('accuracy')} over {g.get('n')} graded items")
    for i, pb in enumerate(st.get("provider_batches") or []):
        table.add_row(
            "provider batches" if i == 0 else "",
            f"{pb['remote_id'] or pb['id']} ({pb['provider']}, {pb['model']}): {pb['state']}"
            + (f"/{pb['remote_status']}" if pb.get("remote_status") else "")
            + f", {pb['completed']}/{pb['requests']} done, {pb['failed']} failed",
        )
    for i, note in enumerate(st.get("notes") or []):
        table.add_row("notes" if i == 0 else "", note)
    return table


def adapt_rows(table: Table, st: dict) -> None:
    """What an ``--adapt`` job measured, next to its cost: the estimate is the point of it."""
    record = st.get("adaptation") or {}
    if record.get("stage") == "skipped":  # said, so a user who asked for --adapt knows why there is no estimate
        table.add_row("adapting", f"not adapted: {record.get('reason')}; routed as usual")
    if record.get("stage") != "adapted":
        return
    cv = (record.get("cv_apgr") or {}).get(record.get("chosen"))
    table.add_row(
        "adapted scorer",
        f"{record.get('chosen')} (APGR {cv:.3f} on {record.get('judged')} judged items)"
        if cv is not None
        else f"{record.get('chosen')} ({record.get('judged')} judged items)",
    )
    q = st.get("quality_vs_strong")
    if q:
        table.add_row("quality vs strong", f"{q['estimate']:.3f}  (90% interval {q['low']:.3f}–{q['high']:.3f})")
    elif record.get("quality_error"):
        table.add_row("quality vs strong", f"not estimated: {record['quality_error']}")
    if st.get("adapt_cost_share") is not None:
        table.add_row("adapting cost", f"{100 * st['adapt_cost_share']:.1f}% of the job's cost (weak twins and judge)")


def _when(unix: int | None) -> str:
    """A Unix timestamp as UTC ISO text (``-`` when unset)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if unix else "-"


def _print_status(status: JobStatus, as_json: bool) -> None:
    st = status.to_json()

    def render(con) -> None:
        con.print(_summary_table(st))
        if st.get("invalid_rows"):
            bad = Table(title=f"invalid rows (first {len(st['invalid_rows'])} of {st['invalid']})")
            for col in ("line", "field", "reason"):
                bad.add_column(col)
            for r in st["invalid_rows"]:
                bad.add_row(str(r["line"]), r["field"] or "-", r["reason"])
            con.print(bad)

    emit(st, as_json, render)


# The options that describe a job, shared by `run` and `submit`: (parameter, type, option).
# JobSpec field names, except `input_file` (an argument) and `fmt` (JobSpec.format).
SPEC_OPTIONS: list[tuple[str, object, object]] = [
    ("input_file", Path, typer.Argument(..., help="Dataset: .jsonl (prompt/messages or OpenAI Batch lines), .csv or .parquet.")),
    ("fmt", Optional[str], typer.Option(None, "--format", help="jsonl | csv | parquet (default: from the file name).")),
    ("prompt_column", str, typer.Option("prompt", "--prompt-column", help="CSV/Parquet column holding the prompt.")),
    (
        "router",
        Optional[str],
        typer.Option(None, "--router", help="Router spec, e.g. blend, mf, length, random:seed=1 (default from config)."),
    ),
    (
        "models",
        Optional[str],
        typer.Option(
            None,
            "--models",
            help="a,b,c: the job's models most capable first (strong first, weak last); more than two need "
            "--allocate budget and a budget.",
        ),
    ),
    ("strong", Optional[str], typer.Option(None, "--strong", help="Strong model key from the config.")),
    ("weak", Optional[str], typer.Option(None, "--weak", help="Weak model key from the config.")),
    ("threshold", Optional[float], typer.Option(None, "--threshold", help="Route strong when score >= this.")),
    (
        "strong_share",
        Optional[float],
        typer.Option(None, "--strong-share", help="Fraction of items for the strong model (default 0.5)."),
    ),
    (
        "share_from_sample",
        Optional[int],
        typer.Option(
            None,
            "--share-from-sample",
            help="With --strong-share: fix the threshold on the first N scored items and hold it, "
            "so chunks are generated as they are scored.",
        ),
    ),
    ("max_tokens", Optional[int], typer.Option(None, "--max-tokens", help="Default max_tokens for items that set none.")),
    ("chunk_size", Optional[int], typer.Option(None, "--chunk-size", help="Items per task chunk.")),
    ("budget_usd", Optional[float], typer.Option(None, "--budget-usd", help="Cap this job's spend (USD); never exceeded.")),
    ("budget", Optional[str], typer.Option(None, "--budget", help="Named budget to draw from (routebatch budget create).")),
    (
        "on_exhausted",
        str,
        typer.Option("downgrade", "--on-exhausted", help="When the strong call is unaffordable: downgrade | skip | stop."),
    ),
    (
        "allocate",
        str,
        typer.Option("threshold", "--allocate", help="threshold | budget (budget-optimal strong set under the cap)."),
    ),
    (
        "out",
        Optional[str],
        typer.Option(
            None, "--out", help="Write the results here when the job ends (.parquet: Parquet, else OpenAI Batch JSONL)."
        ),
    ),
    ("errors_out", Optional[str], typer.Option(None, "--errors", help="With --out: write the errors file here too.")),
    ("force", bool, typer.Option(False, "--force", help="Replace --out/--errors if they exist.")),
    ("name", Optional[str], typer.Option(None, "--name", help="A name for the job (list --name finds it).")),
    (
        "metadata",
        Optional[list[str]],
        typer.Option(None, "--metadata", help="key=value, repeatable (at most 16; keys <= 64, values <= 512 characters)."),
    ),
    (
        "completion_window",
        Optional[str],
        typer.Option(
            None,
            "--completion-window",
            help="e.g. 24h, 90m, 2d: items unfinished by then end expired (batch_expired in the errors file).",
        ),
    ),
    (
        "adapt",
        Optional[float],
        typer.Option(
            None,
            "--adapt",
            help="F, e.g. 0.05: judge a stratified sample of F of the items on both models, fit a router for this "
            "job on the verdicts, route the rest with what the sample says is best.",
        ),
    ),
    ("adapt_min", int, typer.Option(100, "--adapt-min", help="With --adapt: at least this many sampled items.")),
    (
        "adapt_max_cost",
        Optional[float],
        typer.Option(
            None,
            "--adapt-max-cost",
            help="With --adapt: S, e.g. 0.25: adapt only if the sample's weak twins and judge calls are estimated at "
            "most S of the job's cost; else route as usual before making them.",
        ),
    ),
    (
        "judge",
        Optional[str],
        typer.Option(None, "--judge", help="With --adapt: llm (the [judge] model, default) | labels:FILE | sim."),
    ),
    (
        "memory",
        Optional[str],
        typer.Option(
            None,
            "--memory",
            help="With --adapt: keep the judged pairs under NAME; the next job of that name learns from them and "
            "samples less (routebatch memory list|show|drop).",
        ),
    ),
    (
        "dispatch",
        Optional[str],
        typer.Option(
            None,
            "--dispatch",
            help="sync | batch | auto: send through the providers' batch APIs at batch prices (default: each "
            "provider's dispatch in the config).",
        ),
    ),
]


def with_job_spec(command):
    """Give ``command`` the job options and call it with ``spec=JobSpec(...)`` instead.

    Typer reads the parameters from ``__signature__``, so `run` and `submit` declare the
    job options once, here, and can never drift apart.
    """
    import functools
    import inspect

    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "spec"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann) for name, ann, opt in SPEC_OPTIONS
    ]

    @functools.wraps(command)
    def wrapper(**kwargs):
        options = {name: kwargs.pop(name) for name, _, _ in SPEC_OPTIONS}
        return command(spec=_spec(options, as_json=kwargs.get("as_json", False)), **kwargs)

    keyword_only = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    wrapper.__signature__ = inspect.Signature(shared + keyword_only)  # type: ignore[attr-defined]
    return wrapper


def _spec(options: dict, as_json: bool = False):
    from pydantic import ValidationError

    from jobs.lifecycle.service import JobSpec

    fields = {k: v for k, v in options.items() if k not in ("fmt", "input_file")}
    try:
        return JobSpec(input_file=str(options["input_file"]), format=options["fmt"], **fields)
    except ValidationError as exc:
        fail("; ".join(_problem(e) for e in exc.errors()), as_json)


def _problem(error: Any) -> str:
    """One validation error as ``field: what is wrong`` (the JobSpec field, as the Python API names it)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message  # a rule across options (--errors needs --out)
    return f"{'.'.join(map(str, error['loc']))}: {message}"


@app.command()
@with_job_spec
def run(
    spec: Any = None,  # a JobSpec: with_job_spec always passes it
    grade: Optional[Path] = typer.Option(
        None, "--grade", help="Labelled file (e.g. gsm8k_responses.csv): report realised quality."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Validate, score, route and generate a dataset in this process, then print a summary."""
    from jobs.lifecycle.service import IngestProgress
    from jobs.lifecycle.service import run as run_job

    rt = _runtime()
    try:
        if as_json:
            st = run_job(rt, spec)
        else:
            from rich.live import Live

            from jobs.cli.output import console
            from jobs.cli.watch import JobView

            con = console(stderr=True)
            view = JobView(con)
            with Live(console=con, transient=True, refresh_per_second=4) as live:

                def progress(p: IngestProgress | JobStatus) -> None:
                    live.update(view.update(_ingest_status(p) if isinstance(p, IngestProgress) else p.to_json()))

                st = run_job(rt, spec, progress)
        if grade is not None:
            st.grade = _grade(rt, st.job_id, grade)
    except KeyboardInterrupt as exc:
        _interrupted(getattr(exc, "job_id", None), as_json)
    finally:
        rt.close()
    _finish(st, as_json)


def _ingest_status(p: Any) -> dict:
    """What the watch view needs of a job still validating, from ingest's progress report."""
    return {
        "job_id": p.job_id,
        "status": "validating",
        "total": p.valid,
        "counts": {},
        "ingest_bytes": p.bytes_read,
        "input_size": p.size,
        "ingest_line": p.valid + p.invalid,
        "cost_usd": 0.0,
    }


def _warn_input_changed(st: JobStatus) -> None:
    if st.input_changed:
        from rich.markup import escape

        from jobs.cli.output import console

        console(stderr=True).print(
            f"[yellow]warning:[/] {escape(st.input_file)} changed while it was read (still being written?): "
            "rows added after ingest passed them were not read"
        )


def _finish(st: JobStatus, as_json: bool) -> None:
    """Print the status; exit 1 unless the outcome is one a script may trust (``outcome_ok``)."""
    _warn_input_changed(st)
    _print_status(st, as_json)
    if not st.outcome_ok:
        raise typer.Exit(1)


def _interrupted(job_id: str | None, as_json: bool) -> None:
    """Ctrl-C: say which job was left and how to continue it; exit 130 (like a shell)."""
    import json
    import sys

    if job_id is None:
        print("interrupted before a job was created", file=sys.stderr)
    elif as_json:
        print(json.dumps({"interrupted": True, "job_id": job_id, "resume": f"routebatch resume {job_id}"}))
    else:
        print(
            f"interrupted: job {job_id} stopped; calls in flight are recorded as maybe-sent. "
            f"Continue it with: routebatch resume {job_id}",
            file=sys.stderr,
        )
    raise typer.Exit(130)


def _grade(rt, job_id: str, labels: Path) -> dict:
    from jobs.reports.job_grading import grade_job

    return grade_job(rt, job_id, labels)


@app.command()
@with_job_spec
def submit(spec: Any = None, as_json: bool = JsonOption) -> None:
    """Validate and ingest a dataset and enqueue it for workers (or for `resume` without a broker)."""
    from jobs.lifecycle.service import status
    from jobs.lifecycle.service import submit as submit_job
    from jobs.pipeline.tasks import queue_for

    rt = _runtime()
    job_id = submit_job(rt, spec, queue_for(rt.settings))
    st = status(rt, job_id)
    _warn_input_changed(st)
    _print_status(st, as_json)
    if st.status == "failed":
        raise typer.Exit(1)


@app.command("status")
def status_cmd(
    job_id: str = typer.Argument(...),
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Live progress bars per state and the spend so far, until the job ends."
    ),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between refreshes with --watch."),
    as_json: bool = JsonOption,
) -> None:
    """State, item counts by state, invalid rows, calls, cost and savings of a job.

    With ``--watch``, exits 1 when the job ends failed, cancelled, out of budget or with every item failed.
    """
    from jobs.ledger.migrate import ensure_schema
    from jobs.lifecycle.service import status

    rt = _runtime()
    ensure_schema(rt.db_url)
    job_id = _job_id(rt, job_id)
    st = status(rt, job_id)
    if watch:
        from jobs.cli.watch import watch as watch_job

        final = watch_job(lambda: status(rt, job_id).to_json(), interval, as_json)
        st = status(rt, job_id) if final else st
        if as_json:
            if st.terminal and not st.outcome_ok:
                raise typer.Exit(1)
            return
        _print_status(st, as_json)
        if st.terminal and not st.outcome_ok:
            raise typer.Exit(1)
        return
    _print_status(st, as_json)


@app.command("list")
def list_cmd(
    limit: int = typer.Option(20, "--limit"),
    name: Optional[str] = typer.Option(None, "--name", help="Only jobs with this --name (exact)."),
    state: Optional[str] = typer.Option(None, "--state", help="Only jobs in this state (e.g. in_progress, expired)."),
    as_json: bool = JsonOption,
) -> None:
    """The most recent jobs, newest first."""
    from jobs.lifecycle.service import list_jobs

    jobs = list_jobs(_runtime(), limit, name=name, state=state)

    def render(con) -> None:
        table = Table(title="jobs")
        # The id is what people copy: never shortened (other columns give way first).
        table.add_column("job_id", no_wrap=True, min_width=max((len(str(j["job_id"])) for j in jobs), default=6))
        columns = ("name", "status", "created_at", "total", "invalid", "router", "input_file")
        for col in columns:
            table.add_column(col)
        for j in jobs:
            table.add_row(*(str(j[c]) if j[c] is not None else "-" for c in ("job_id", *columns)))
        con.print(table)

    emit(jobs, as_json, render)


@app.command()
def cancel(job_id: str = typer.Argument(...), as_json: bool = JsonOption) -> None:
    """Stop new provider calls for a job; calls already in flight are recorded."""
    from jobs.lifecycle.service import cancel as cancel_job

    rt = _runtime()
    _print_status(cancel_job(rt, _job_id(rt, job_id)), as_json)


@app.command()
def resume(
    job_id: str = typer.Argument(...),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Send failed items again too."),
    force: bool = typer.Option(False, "--force", help="Treat every in-flight item as lost (no worker is running)."),
    reopen: bool = typer.Option(False, "--reopen", help="Reopen a cancelled or expired job: send its unsent items again."),
    as_json: bool = JsonOption,
) -> None:
    """Re-enqueue every unfinished item; without a broker, run them here.

    A cancelled or expired job is final: refused unless ``--reopen``. Refused (exit 1,
    naming host, pid and since when) while another live process runs the job.
    """
    from jobs.ledger.migrate import ensure_schema
    from jobs.lifecycle.service import drain_inline, hold, status
    from jobs.lifecycle.service import resume as resume_job
    from jobs.pipeline.tasks import InlineQueue, queue_for

    rt = _runtime()
    ensure_schema(rt.db_url)
    job_id = _job_id(rt, job_id)
    try:
        queue = queue_for(rt.settings)
        if isinstance(queue, InlineQueue):
            # This process holds the job from the first read to the last call: no one else runs it.
            with hold(rt, job_id) as lease:
                resume_job(rt, job_id, queue, retry_failed=retry_failed, force=True, reopen=reopen, lease=lease)
                drain_inline(rt, queue, job_id, runner_id=lease.runner_id)
            st = status(rt, job_id)
        else:
            st = resume_job(rt, job_id, queue, retry_failed=retry_failed, force=force, reopen=reopen)
    except KeyboardInterrupt:
        _interrupted(job_id, as_json)
    finally:
        rt.close()
    _finish(st, as_json)


@app.command()
def export(
    job_id: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", help="Results file."),
    errors: Optional[Path] = typer.Option(None, "--errors", help="Also write invalid rows and failed items here."),
    fmt: str = typer.Option("openai", "--format", help="openai (Batch output JSONL) | parquet."),
    force: bool = typer.Option(False, "--force", help="Replace --out/--errors if they exist (never the ledger or the input)."),
    partial: bool = typer.Option(False, "--partial", help="Export a job that has not finished yet, as it is now."),
    errors_in_results: bool = typer.Option(
        False, "--errors-in-results", help="Also list unanswered items in the results (one line per item, as before 0.2)."
    ),
    native_bodies: bool = typer.Option(
        False,
        "--native-bodies",
        help="Write each provider's own answer body (an Anthropic Message) instead of a chat.completion.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write answered items in the OpenAI Batch output format (or Parquet); the rest go to --errors.

    Files are written next to their target and renamed when complete; the ledger, the
    job's input and an existing file (without --force) are never overwritten.
    """
    from jobs.lifecycle.service import export as export_job

    rt = _runtime()
    job_id = _job_id(rt, job_id)
    counts = export_job(
        rt,
        job_id,
        out,
        errors,
        fmt,
        force=force,
        partial=partial,
        errors_in_results=errors_in_results,
        native_bodies=native_bodies,
    )
    data = {"job_id": job_id, "out": str(out), "errors": str(errors) if errors else None, **counts}
    emit(
        data,
        as_json,
        lambda con: con.print(
            f"wrote {counts['results']} results to {out}" + (f", {counts['errors']} errors to {errors}" if errors else "")
        ),
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head"), as_json: bool = JsonOption) -> None:
    """Apply the Alembic migrations to ROUTEBATCH_DATABASE_URL."""
    from jobs.ledger.migrate import upgrade
    from jobs.settings import get_settings

    url = get_settings().database_url
    try:
        rev = upgrade(url, revision)
    except Exception as exc:  # connection refused, bad URL: one line, no traceback
        fail(f"cannot upgrade {_safe_url(url)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", as_json)
    emit({"database": _safe_url(url), "revision": rev}, as_json, lambda con: con.print(f"{_safe_url(url)} is at revision {rev}"))


def _safe_url(url: str) -> str:
    """The database URL without its password."""
    from jobs.ledger.session import safe_url

    return safe_url(url)
