"""Scoring through the job pipeline vs the bare forward pass, in one run.

End to end here is what a score worker does: `jobs.pipeline.score.score_chunk` reads a chunk's
prompts from the ledger, the router tokenises, embeds (cache miss: the prompts are new)
and scores them, and the scores are written back. Bare is the encoder's forward pass alone
on the same prompts, tokenised and padded beforehand, at the same batch size. Target (issue
6): end to end >= 80% of bare.

    .venv/bin/python bench/scoring_db.py [--prompts 1024] [--router mf] [--chunk 256] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from scoring import batched, synthetic_prompts, time_bare_forward

    from jobs.config import load_config
    from jobs.pipeline.score import score_chunk
    from jobs.pipeline.tasks import InlineQueue
    from jobs.runtime import Runtime
    from jobs.lifecycle.service import JobSpec, submit
    from jobs.settings import Settings
    from routing.embeddings import get_embedder

    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--router", default="mf")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64, help="the embedder's batch size (bare uses the same)")
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    os.environ["ROUTEBATCH_CACHE_DIR"] = str(tmp / "cache")  # a cold embedding cache: nothing is pre-embedded
    prompts = synthetic_prompts(args.prompts, seed=int(time.time()))
    data = tmp / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    url = args.database_url or f"sqlite:///{tmp / 'ledger.db'}"
    rt = Runtime(Settings(database_url=url, broker_url=None), load_config(None))

    embedder = get_embedder()
    router = rt.router(args.router)  # loaded before timing, as a worker holds it
    warm = synthetic_prompts(args.batch_size, seed=1)
    time_bare_forward(getattr(embedder, "inner", embedder), [warm])
    encoder = getattr(embedder, "inner", embedder)  # the model behind the disk cache
    bare = time_bare_forward(encoder, list(batched(prompts, args.batch_size)))

    job_id = submit(rt, JobSpec(input_file=str(data), router=args.router, chunk_size=args.chunk), InlineQueue())
    chunks = (args.prompts + args.chunk - 1) // args.chunk
    t0 = time.perf_counter()
    for chunk in range(chunks):
        score_chunk(rt, InlineQueue(), job_id, chunk)
    e2e_s = time.perf_counter() - t0
    rt.close()
    e2e = args.prompts / e2e_s
    out = {
        "router": args.router,
        "prompts": args.prompts,
        "batch_size": args.batch_size,
        "chunk": args.chunk,
        "database": url.split(":", 1)[0],
        "bare_prompts_per_s": round(bare["prompts_per_s"], 1),
        "end_to_end_prompts_per_s": round(e2e, 1),
        "ratio": round(e2e / bare["prompts_per_s"], 3),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"bare MiniLM forward (batch {args.batch_size}):        {out['bare_prompts_per_s']:8.1f} prompts/s")
        print(f"score_chunk end to end ({args.router}, DB {out['database']}): {out['end_to_end_prompts_per_s']:8.1f} prompts/s")
        print(f"ratio end-to-end / bare: {out['ratio']:.3f}  (target >= 0.8)")
    del router


if __name__ == "__main__":
    main()
