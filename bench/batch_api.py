"""Batch dispatch vs sync dispatch: the same routed job, through the providers' batch APIs.

Runs one job of N prompts (default 20,000) twice in the embedded default against the
simulated provider — once ``--dispatch sync`` (one call per item, 20 ms latency), once
``--dispatch batch`` (the simulator's OpenAI Batch API: files, batches, output and error
files) — and prints, side by side from the two ledgers:

* items answered, and calls per item (exactly one: no item answered twice);
* the cost in the ledger and the ratio batch / sync (target: 0.50, per-call rounding up
  aside), and whether every batch attempt is charged exactly at its ``@batch`` price
  version for its tokens;
* requests uploaded and uploaded twice (the simulator's own counters);
* the provider batches ``status`` shows, with their states;
* wall time (the simulated batches take ``--complete-s`` to finish).

    .venv/bin/python bench/batch_api.py [--prompts 20000] [--router length] [--complete-s 3]
        [--kind openai|anthropic] [--database-url sqlite:///...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def config(kind: str, base_url: str, dispatch: str):
    """The built-in simulated setup (its models and prices), pointed at ``base_url``."""
    import copy

    from jobs.config import BUILTIN_CONFIG, parse_config

    data = copy.deepcopy(BUILTIN_CONFIG)
    prov = {"base_url": base_url, "dispatch": dispatch, "concurrency": 64, "timeout_s": 30, "batch_poll_s": 0.5}
    data["providers"]["sim"] = {**prov, "batch_poll_max_s": 2.0, **({"kind": "anthropic"} if kind == "anthropic" else {})}
    data["defaults"]["router"] = "length"
    return parse_config(data)


def write_prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {"custom_id": f"p{i}", "prompt": f"Question {i}: explain item {i * 7919 % 10007} " + "in detail " * (i % 11)}
                )
                + "\n"
            )
    return path


def run_once(kind: str, dispatch: str, data: Path, db_url: str, router: str, complete_s: float) -> dict:
    import httpx
    from sqlalchemy import func, select

    from jobs.ledger.models import Attempt, Item, Price
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.service import JobSpec, run
    from jobs.providers.sim.server import start_simulated_provider
    from jobs.runtime import Runtime
    from jobs.settings import Settings

    server = start_simulated_provider({"latency_ms": 20, "seed": 7, "batch_complete_s": complete_s})
    rt = Runtime(Settings(database_url=db_url, broker_url=None), config(kind, server.base_url, dispatch))
    t0 = time.perf_counter()
    try:
        st = run(rt, JobSpec(input_file=str(data), router=router, strong_share=0.3, dispatch=dispatch))  # type: ignore[arg-type]
    finally:
        rt.close()
    wall = time.perf_counter() - t0
    stats = httpx.get(server.base_url.removesuffix("/v1") + "/_sim/stats").json()
    server.stop()
    with session_scope(db_url) as s:
        prices = {p.id: p for p in s.scalars(select(Price))}
        exact = True
        batch_attempts = 0
        for a in s.scalars(select(Attempt).where(Attempt.job_id == st.job_id)):
            p = prices[a.price_id]
            if a.provider_batch_id:
                batch_attempts += 1
                want = -(-(a.prompt_tokens * p.input_micro_per_mtok + a.completion_tokens * p.output_micro_per_mtok) // 10**6)
                exact &= p.model.endswith("@batch") and a.cost_micro_usd == want
        per_item = (
            s.execute(select(func.count()).select_from(Attempt).where(Attempt.job_id == st.job_id).group_by(Attempt.item_id))
            .scalars()
            .all()
        )
        items_cost = s.scalar(select(func.sum(Item.cost_micro_usd)).where(Item.job_id == st.job_id))
    return {
        "dispatch": dispatch,
        "status": str(st.status),
        "succeeded": st.succeeded,
        "total": st.total,
        "max_calls_per_item": max(per_item) if per_item else 0,
        "cost_micro_usd": st.cost_micro_usd,
        "items_cost_micro_usd": int(items_cost or 0),
        "batch_attempts": batch_attempts,
        "batch_prices_exact": exact,
        "uploaded": stats["batch_requests_uploaded"],
        "uploaded_twice": stats["requests_uploaded_twice"],
        "provider_batches": [
            (pb["remote_id"], pb["model"], pb["state"], pb["remote_status"], pb["requests"]) for pb in st.provider_batches
        ],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=20000)
    ap.add_argument("--router", default="length")
    ap.add_argument("--complete-s", type=float, default=3.0)
    ap.add_argument("--kind", choices=["openai", "anthropic"], default="openai")
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file per run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rb-batch-bench-"))
    data = write_prompts(tmp / "prompts.jsonl", args.prompts)
    rows = []
    for dispatch in ("sync", "batch"):
        db = args.database_url or f"sqlite:///{tmp / f'{dispatch}.db'}"
        rows.append(run_once(args.kind, dispatch, data, db, args.router, args.complete_s))
        print(json.dumps(rows[-1]), flush=True)
    sync, batch = rows
    ratio = batch["cost_micro_usd"] / sync["cost_micro_usd"] if sync["cost_micro_usd"] else float("nan")
    print(f"\n{args.prompts} prompts, {args.kind} batch API, router {args.router}, strong share 0.3")
    print(f"{'':24}{'sync':>16}{'batch':>16}")
    for key in (
        "succeeded",
        "max_calls_per_item",
        "cost_micro_usd",
        "items_cost_micro_usd",
        "uploaded",
        "uploaded_twice",
        "wall_s",
    ):
        print(f"{key:24}{sync[key]!s:>16}{batch[key]!s:>16}")
    print(
        f"cost ratio batch/sync: {ratio:.5f} (target 0.50; every batch attempt at its @batch price: {batch['batch_prices_exact']})"
    )
    print("provider batches:", batch["provider_batches"])


if __name__ == "__main__":
    main()
