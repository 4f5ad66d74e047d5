"""Results export in the OpenAI Batch output format (JSONL) or as a flat Parquet table.

One line per item, in input order, with the routing decision in the line's ``routebatch``
object so that a consumer of OpenAI Batch files sees where each answer came from. Every
answer body is a ``chat.completion``, whichever provider's protocol produced it (an
Anthropic Message is mapped by :mod:`jobs.ledger.anthropic_export`); ``native_bodies``
exports the provider's own bodies instead.

An export never destroys data: each file is written to a temporary file in its own
directory and renamed over the target only when complete; the ledger database (with its
``-wal``/``-shm``/``-journal`` files), the job's input file and the other output of the
same export are refused as targets, and an existing file needs ``force``. A job that is
not in a terminal state is exported only with ``partial``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jobs.errors import ConfigError, ExportRefused, JobNotFound
from jobs.ledger.anthropic_export import openai_body
from jobs.ledger.models import InvalidRow, Item, Job
from jobs.ledger.session import session_scope

EXPORT_FORMATS = ("openai", "parquet")
UNANSWERED = ("failed", "skipped_budget", "cancelled", "expired")
_BATCH = 2000


def _iter_items(db_url: str, job_id: str) -> Iterator[Item]:
    last = 0
    while True:
        with session_scope(db_url) as s:
            rows = s.scalars(
                select(Item).where(Item.job_id == job_id, Item.line_no > last).order_by(Item.line_no).limit(_BATCH)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].line_no


def routing_metadata(item: Item, job: Job) -> dict:
    """What routebatch decided and charged for one item: beside the provider's body, never in it."""
    return {
        "line": item.line_no,
        "state": item.state,
        "router": job.router,
        "score": item.score,
        "threshold": item.threshold,
        "route": item.route,
        "route_reason": item.route_reason,
        "model": item.model,
        "attempts": item.attempts_count,
        "cost_micro_usd": item.cost_micro_usd,
        "calibration_sample": False,
    }


ERROR_CODES = {
    "failed": "provider_error",
    "skipped_budget": "budget_exhausted",
    "cancelled": "cancelled",
    "expired": "batch_expired",
}


def _provider_error_body(item: Item) -> dict[str, Any]:
    """The provider's error body once (``{"error": {...}}``), whatever shape was stored."""
    stored = item.response
    if isinstance(stored, dict) and isinstance(stored.get("error"), dict):
        return stored
    message = stored if isinstance(stored, str) else (item.error or "provider error")
    return {"error": {"message": str(message), "type": "provider_error", "param": None, "code": None}}


def _created(item: Item, job: Job) -> int:
    """Unix seconds for a ``chat.completion`` made from a Message (which has no timestamp):
    the item's last update (the call's send or answer), else the job's creation."""
    when = item.updated_at or job.created_at
    return int(when.timestamp()) if when is not None else 0


def answer_body(item: Item, job: Job, *, native_bodies: bool = False) -> Any:
    """The exported body of an answered item: a ``chat.completion`` whatever the provider
    spoke (an Anthropic Message is mapped, :mod:`jobs.ledger.anthropic_export`), or with
    ``native_bodies`` exactly what the provider returned."""
    body = item.response or {}
    return body if native_bodies else openai_body(body, _created(item, job))


def openai_line(item: Item, job: Job, *, native_bodies: bool = False) -> dict:
    """One line of an OpenAI Batch output (or error) file for ``item``.

    The body of an answer is a ``chat.completion``, so
    ``openai.types.chat.ChatCompletion.model_validate(line["response"]["body"])`` accepts
    every line, whichever provider answered: an OpenAI-compatible body as returned (secrets
    were redacted before it was stored), an Anthropic Message mapped. With ``native_bodies``
    the body is the provider's own (for Anthropic, ``anthropic.types.Message``). Routing data
    is the line's own ``routebatch`` object.
    """
    meta = routing_metadata(item, job)
    if item.state == "succeeded":
        body = answer_body(item, job, native_bodies=native_bodies)
        return {
            "id": f"batch_req_{item.id}",
            "custom_id": item.custom_id,
            "response": {"status_code": item.status_code or 200, "request_id": body.get("id"), "body": body},
            "error": None,
            "routebatch": meta,
        }
    response = None
    if item.status_code is not None:
        response = {"status_code": item.status_code, "request_id": None, "body": _provider_error_body(item)}
    return {
        "id": f"batch_req_{item.id}",
        "custom_id": item.custom_id,
        "response": response,
        "error": {"code": ERROR_CODES.get(item.state, item.state), "message": item.error or f"item ended {item.state}"},
        "routebatch": meta,
    }


_TERMINAL_JOB_STATES = ("completed", "failed", "cancelled", "expired", "budget_exhausted")


def ledger_files(db_url: str) -> list[Path]:
    """The files of a SQLite ledger (database, WAL, shared memory, journal); none for a server."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db_url)
    except Exception:
        return []
    if not url.get_backend_name().startswith("sqlite") or not url.database or url.database == ":memory:":
        return []
    db = url.database
    if db.startswith("file:"):  # uri=true form
        db = db[len("file:") :].split("?", 1)[0]
    base = _resolved(Path(db))
    return [base, *(base.with_name(base.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser())).resolve()


def _same_file(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def check_targets(
    db_url: str, job: Job, out: Path, errors: Path | None = None, *, force: bool = False, partial: bool = False
) -> None:
    """Raise ``ExportRefused`` for an export that would destroy data or read a running job."""
    if not partial and job.state not in _TERMINAL_JOB_STATES:
        raise ExportRefused(f"job {job.id} is {job.state}, not finished; wait for it or pass --partial to export it as is")
    check_paths(db_url, job.input_file, out, errors, force=force)


def check_paths(db_url: str, input_file: str | None, out: Path, errors: Path | None = None, *, force: bool = False) -> None:
    """Raise ``ExportRefused`` for targets that would overwrite the ledger, the input, each
    other, or (without ``force``) an existing file. ``run --out`` checks this at submit."""
    targets = [("--out", out)] + ([("--errors", errors)] if errors is not None else [])
    if errors is not None and _same_file(out, errors):
        raise ExportRefused(f"--out and --errors are the same file ({out}); give two different paths")
    for flag, path in targets:
        if path.exists() and path.is_dir():
            raise ExportRefused(f"{flag} {path} is a directory; give a file name")
        for ledger in ledger_files(db_url):
            if _same_file(path, ledger):
                raise ExportRefused(f"{flag} {path} is the ledger database ({ledger.name}); refusing to overwrite it")
        if input_file and _same_file(path, Path(input_file)):
            raise ExportRefused(f"{flag} {path} is the job's input file; refusing to overwrite it")
        if path.exists() and not force:
            raise ExportRefused(f"{flag} {path} already exists; pass --force to replace it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path``; renamed over it only if the block completes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; the export gets the usual mode
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_job_outputs(db_url: str, job_id: str) -> dict[str, int] | None:
    """``run/submit --out``: write the results (and errors) of a job that just ended.

    Called once by the caller that closed the job. Overwrites its own earlier output (a
    resumed job writes again); never raises for an output problem: the job's outcome stands,
    and the failure is a ledger event and a log line.
    """
    import logging

    from jobs.money.budgets import add_event

    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        spec = (job.spec or {}) if job is not None else {}
    if not spec.get("out"):
        return None
    out = Path(spec["out"])
    errors = Path(spec["errors_out"]) if spec.get("errors_out") else None
    fmt = "parquet" if out.suffix == ".parquet" else "openai"
    try:
        return export_job(db_url, job_id, out, errors, fmt, force=True)
    except (OSError, ConfigError) as exc:
        message = f"cannot write the results of {job_id} to {out}: {exc}"
        logging.getLogger(__name__).warning(message)
        with session_scope(db_url) as s:
            add_event(s, "output_failed", message, job_id=job_id)
        return None


def export_job(
    db_url: str,
    job_id: str,
    out: Path,
    errors: Path | None = None,
    fmt: str = "openai",
    *,
    force: bool = False,
    partial: bool = False,
    errors_in_results: bool = False,
    native_bodies: bool = False,
) -> dict:
    """Write the results (and optionally the errors file); returns line counts.

    As in OpenAI's Batch API, the results hold the answered items and the errors file the
    rest (invalid input rows, failed, skipped and cancelled items), each once;
    ``errors_in_results`` also lists every unanswered item in the results (one line per
    input item, the behaviour before 0.2). Answers are ``chat.completion`` bodies whatever
    the provider; ``native_bodies`` writes the provider's own body instead (an Anthropic
    Message), in JSONL and in Parquet's ``response_body``.

    Refuses (``ExportRefused``) to write onto the ledger, the job's input or the other
    output, onto an existing file without ``force``, and a job still running without
    ``partial``. Both files appear only once both are complete.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    out, errors = Path(out), (Path(errors) if errors is not None else None)
    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
    check_targets(db_url, job, out, errors, force=force, partial=partial)
    counts = {"results": 0, "errors": 0}
    with contextlib.ExitStack() as stack:
        tmp_out = stack.enter_context(_atomic(out))
        if fmt == "openai":
            with tmp_out.open("w", encoding="utf-8") as fh:
                for item in _iter_items(db_url, job_id):
                    if item.state == "succeeded" or (errors_in_results and item.state in UNANSWERED):
                        line = openai_line(item, job, native_bodies=native_bodies)
                        fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                        counts["results"] += 1
        else:
            counts["results"] = _write_parquet(db_url, job, tmp_out, native_bodies=native_bodies)
        renames: list[Callable[[], None]] = [lambda: os.replace(tmp_out, out)]
        if errors is not None:
            tmp_err = stack.enter_context(_atomic(errors))
            counts["errors"] = _write_errors(db_url, job, tmp_err)
            renames.append(lambda: os.replace(tmp_err, errors))
        for rename in renames:
            rename()
    return counts


def _write_parquet(db_url: str, job: Job, out: Path, *, native_bodies: bool = False) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.providers.answers import answer_text  # OpenAI choices or Anthropic text blocks

    schema = pa.schema(
        [
            ("custom_id", pa.string()),
            ("line_no", pa.int64()),
            ("state", pa.string()),
            ("route", pa.string()),
            ("model", pa.string()),
            ("score", pa.float64()),
            ("threshold", pa.float64()),
            ("content", pa.string()),
            ("response_body", pa.string()),
            ("status_code", pa.int64()),
            ("error", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_micro_usd", pa.int64()),
        ]
    )
    n = 0
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[dict] = []
        for item in _iter_items(db_url, job.id):
            content = answer_text(item.response) if item.state == "succeeded" else None
            body = answer_body(item, job, native_bodies=native_bodies) if item.state == "succeeded" else item.response
            batch.append(
                {
                    "custom_id": item.custom_id,
                    "line_no": item.line_no,
                    "state": item.state,
                    "route": item.route,
                    "model": item.model,
                    "score": item.score,
                    "threshold": item.threshold,
                    "content": content,
                    "response_body": json.dumps(body, ensure_ascii=False) if body is not None else None,
                    "status_code": item.status_code,
                    "error": item.error,
                    "prompt_tokens": item.prompt_tokens,
                    "completion_tokens": item.completion_tokens,
                    "cost_micro_usd": item.cost_micro_usd,
                }
            )
            if len(batch) >= _BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema))
                n += len(batch)
                batch.clear()
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema))
            n += len(batch)
    return n


def _write_errors(db_url: str, job: Job, path: Path) -> int:
    """Invalid input rows, then items that were not answered, as OpenAI Batch error lines.

    An invalid row has no request id: its ``error`` is OpenAI's ``BatchError`` shape
    (code ``invalid_input``, ``line``, ``param`` = the field, ``message``).
    """
    n = 0
    with path.open("w", encoding="utf-8") as fh, session_scope(db_url) as s:
        for row in s.scalars(select(InvalidRow).where(InvalidRow.job_id == job.id).order_by(InvalidRow.line_no)):
            line = {
                "id": f"invalid_line_{row.line_no}",
                "custom_id": row.custom_id,
                "response": None,
                "error": {"code": "invalid_input", "message": row.reason, "line": row.line_no, "param": row.field},
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    with path.open("a", encoding="utf-8") as fh:
        for item in _iter_items(db_url, job.id):
            if item.state in UNANSWERED:
                fh.write(json.dumps(openai_line(item, job), ensure_ascii=False) + "\n")
                n += 1
    return n
