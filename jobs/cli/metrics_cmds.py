"""``routebatch metrics``: serve the ledger's Prometheus metrics without a worker."""

from __future__ import annotations

import time

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit


@app.command()
def metrics(
    port: int = typer.Option(9108, "--port", help="Port of /metrics."),
    addr: str = typer.Option("127.0.0.1", "--addr", help="Address to listen on."),
    as_json: bool = JsonOption,
) -> None:
    """Serve Prometheus metrics (items, attempts, tokens, spend, queue depth) until interrupted."""
    from jobs.metrics import serve_metrics
    from jobs.settings import get_settings

    settings = get_settings()
    backlog = None
    if settings.broker_url:
        from jobs.pipeline.tasks import queue_for

        queue = queue_for(settings)
        backlog = getattr(queue, "backlog", None)
    serve_metrics(port, settings.database_url, backlog, addr=addr)
    emit({"metrics": f"http://{addr}:{port}/metrics"}, as_json, lambda con: con.print(f"serving http://{addr}:{port}/metrics"))
    while True:
        time.sleep(3600)
