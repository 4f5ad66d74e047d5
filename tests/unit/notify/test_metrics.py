"""/metrics is scraped over real HTTP and its counters move with the ledger."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from jobs.lifecycle.service import JobSpec, run
from jobs.metrics import serve_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in samples.items() if n == name and all((k, val) in lab for k, val in labels.items()))


def _prompts(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"q{i} " + "word " * (i % 7)}) + "\n")
    return path


def test_counters_move_as_jobs_run(tmp_path: Path, sqlite_url: str, runtime_factory) -> None:
    rt = runtime_factory(sqlite_url)
    queue = {"score": 3, "generate": 0}
    port = _free_port()
    server = serve_metrics(port, sqlite_url, backlog=lambda q: queue[q], addr="127.0.0.1")
    try:
        first = run(rt, JobSpec(input_file=str(_prompts(tmp_path / "a.jsonl", 30)), router="length"))
        before = _scrape(port)
        assert before[("routebatch_ledger_up", ())] == 1
        assert _total(before, "routebatch_attempts_total") == first.attempts
        assert _total(before, "routebatch_spend_micro_usd_total") == first.cost_micro_usd
        assert _total(before, "routebatch_items_scored_total") == 30
        assert _total(before, "routebatch_jobs", state="completed") == 1
        assert _total(before, "routebatch_queue_depth", queue="score") == 3
        second = run(rt, JobSpec(input_file=str(_prompts(tmp_path / "b.jsonl", 20)), router="length"))
        after = _scrape(port)
        assert _total(after, "routebatch_attempts_total") == first.attempts + second.attempts
        assert _total(after, "routebatch_spend_micro_usd_total") == first.cost_micro_usd + second.cost_micro_usd
        assert _total(after, "routebatch_tokens_total", kind="completion") > _total(before, "routebatch_tokens_total", kind="completion")
        assert _total(after, "routebatch_items_scored_total") == 50
    finally:
        server.shutdown()


def test_scrape_answers_when_the_ledger_is_unreachable() -> None:
    port = _free_port()
    server = serve_metrics(port, "postgresql+psycopg://nobody@127.0.0.1:1/none", addr="127.0.0.1")
    try:
        assert _scrape(port)[("routebatch_ledger_up", ())] == 0
    finally:
        server.shutdown()
