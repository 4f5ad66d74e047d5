"""Results export in the OpenAI Batch output format (JSONL) or as a flat Parquet table.

One line per item, in input order, with the routing decision in the body's ``metadata``
so that a consumer of OpenAI Batch files sees where each answer came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from jobs.errors import ConfigError, JobNotFound
from jobs.ledger.models import InvalidRow, Item, Job
from jobs.ledger.session import session_scope

EXPORT_FORMATS = ("openai", "parquet")
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
    return {
        "router": job.router,
        "score": item.score,
        "threshold": item.threshold,
        "route": item.route,
        "route_reason": item.route_reason,
        "model": item.model,
        "attempts": item.attempts_count,
        "cost_micro_usd": item.cost_micro_usd,
    }


def openai_line(item: Item, job: Job) -> dict:
    meta = routing_metadata(item, job)
    if item.state == "succeeded":
        body = dict(item.response or {})
        body["metadata"] = {**(body.get("metadata") or {}), "routebatch": meta}
        return {
            "id": f"batch_req_{item.id}",
            "custom_id": item.custom_id,
            "response": {"status_code": item.status_code or 200, "request_id": body.get("id"), "body": body},
            "error": None,
        }
    response = None
    if item.status_code is not None:
        response = {
            "status_code": item.status_code,
            "request_id": None,
            "body": {"error": item.response, "metadata": {"routebatch": meta}},
        }
    code = item.state if item.state != "failed" else "provider_error"
    return {
        "id": f"batch_req_{item.id}",
        "custom_id": item.custom_id,
        "response": response,
        "error": {"code": code, "message": item.error or f"item ended {item.state}"},
    }


def export_job(db_url: str, job_id: str, out: Path, errors: Path | None = None, fmt: str = "openai") -> dict:
    """Write the results (and optionally the errors file); returns line counts."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"results": 0, "errors": 0}
    if fmt == "openai":
        with out.open("w", encoding="utf-8") as fh:
            for item in _iter_items(db_url, job_id):
                fh.write(json.dumps(openai_line(item, job), ensure_ascii=False) + "\n")
                counts["results"] += 1
    else:
        counts["results"] = _write_parquet(db_url, job, out)
    if errors is not None:
        counts["errors"] = _write_errors(db_url, job, errors)
    return counts


def _write_parquet(db_url: str, job: Job, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

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
            content = None
            if item.response and item.state == "succeeded":
                choices = item.response.get("choices") or [{}]
                content = (choices[0].get("message") or {}).get("content")
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
    """Invalid input rows (line, field, reason), then items that did not succeed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh, session_scope(db_url) as s:
        for row in s.scalars(select(InvalidRow).where(InvalidRow.job_id == job.id).order_by(InvalidRow.line_no)):
            fh.write(
                json.dumps(
                    {
                        "type": "invalid_input",
                        "line": row.line_no,
                        "custom_id": row.custom_id,
                        "field": row.field,
                        "reason": row.reason,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
            n += 1
    with path.open("a", encoding="utf-8") as fh:
        for item in _iter_items(db_url, job.id):
            if item.state in ("failed", "skipped_budget", "cancelled"):
                line = openai_line(item, job)
                fh.write(json.dumps({"type": "item_error", "line": item.line_no, **line}, ensure_ascii=False) + "\n")
                n += 1
    return n
