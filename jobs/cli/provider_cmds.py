"""``routebatch sim-provider``: run the simulated OpenAI-compatible provider in the foreground."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, console, emit, fail, styled


@app.command("sim-provider")
def sim_provider(
    port: int = typer.Option(8089, "--port", help="TCP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    latency_ms: float = typer.Option(20.0, "--latency-ms", help="Fixed latency, or the median/mean of a distribution."),
    latency: str = typer.Option("fixed", "--latency", help="fixed | uniform | lognormal"),
    seed: int = typer.Option(0, "--seed"),
    fault_rate: float = typer.Option(0.0, "--fault-rate", help="Total fraction of faults, split over all kinds."),
    fault: list[str] = typer.Option([], "--fault", help="KIND=FRACTION, e.g. 429=0.05 (repeatable)."),
    replay: Optional[Path] = typer.Option(None, "--replay", help="Labelled CSV to serve recorded answers from."),
    replay_model: list[str] = typer.Option([], "--replay-model", help="MODEL=CSV_COLUMN (repeatable)."),
    options: Optional[str] = typer.Option(None, "--options", help="Extra options as a JSON object."),
    as_json: bool = JsonOption,
) -> None:
    """Serve /v1/chat/completions and /v1/models until interrupted."""
    from jobs.providers.sim.options import SimOptions
    from jobs.providers.sim.server import SimulatedServer, _loop_factory

    opts: dict = {"latency_ms": latency_ms, "latency": latency, "seed": seed}
    try:
        if fault_rate:
            opts["fault_rate"] = fault_rate
        faults = {}
        for f in fault:
            kind, _, frac = f.partition("=")
            faults[kind] = float(frac)
        if faults:
            opts["faults"] = faults
        if replay is not None:
            opts["replay_file"] = str(replay)
            opts["replay_models"] = dict(m.split("=", 1) for m in replay_model)
        if options:
            opts.update(json.loads(options))
        server = SimulatedServer(SimOptions.from_dict(opts), host, port)
    except (ValueError, OSError) as exc:
        fail(str(exc), as_json)
    emit(
        {"base_url": server.base_url, "port": server.port, "options": opts},
        as_json,
        lambda c: c.print(styled("simulated provider on ", (server.base_url, "bold"), " (Ctrl+C to stop)")),
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(server.serve())
    except KeyboardInterrupt:
        console(stderr=True).print("stopped")
