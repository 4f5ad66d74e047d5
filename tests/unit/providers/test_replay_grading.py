"""Replay mode serves recorded answers; grading turns them into a realised accuracy."""

from __future__ import annotations

import asyncio
import csv
import random
from pathlib import Path

import pytest

from jobs.config import parse_config
from jobs.reports.grading import grade, model_columns_from_config
from jobs.providers import ChatRequest, ProviderPool, start_simulated_provider

GSM8K = Path(__file__).resolve().parents[4] / "shared" / "data" / "routellm" / "gsm8k" / "gsm8k_responses.csv"
if not GSM8K.exists():
    GSM8K = Path("/work/shared/data/routellm/gsm8k/gsm8k_responses.csv")


def write_labels(path: Path) -> Path:
    rows = [
        ("What is 2+2?", "True", "False", "4", "5"),
        ("Capital of France?", "True", "True", "Paris", "Paris, France"),
        ("Sqrt of 81?", "False", "False", "8", "7"),
    ]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "big", "small", "big_response", "small_response"])
        w.writerows(rows)
    return path


def replay_config(labels: Path, concurrency: int = 16):
    sim = {"latency_ms": 0, "replay_file": str(labels), "replay_models": {"sim-strong": "big", "sim-weak": "small"}}
    return parse_config({
        "providers": {"sim": {"simulated": sim, "concurrency": concurrency}},
        "models": {"sim-strong": {"provider": "sim", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                   "sim-weak": {"provider": "sim", "input_usd_per_mtok": 1, "output_usd_per_mtok": 1}},
        "defaults": {"strong": "sim-strong", "weak": "sim-weak", "max_tokens": 4096},
    })


def serve(cfg, routed: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    sim = start_simulated_provider(cfg.providers["sim"].simulated)

    async def go():
        pool = ProviderPool(cfg, base_urls={"sim": sim.base_url})
        try:
            return await asyncio.gather(*(
                pool.complete(ChatRequest(str(i), m, [{"role": "user", "content": p}], 0)) for i, (p, m) in enumerate(routed)
            ))
        finally:
            await pool.aclose()

    try:
        results = asyncio.run(go())
    finally:
        sim.stop()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return [(p, r.model, r.text) for (p, _), r in zip(routed, results)]


def test_replay_serves_recorded_answers_and_grades(tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv")
    cfg = replay_config(labels)
    rows = serve(cfg, [("What is 2+2?", "sim-strong"), ("Capital of France?", "sim-weak"), ("Sqrt of 81?", "sim-weak")])
    assert [r[2] for r in rows] == ["4", "Paris, France", "7"]

    cols = model_columns_from_config(cfg)
    assert cols == {"sim-strong": "big", "sim-weak": "small"}
    rep = grade(rows, labels, cols)
    assert (rep.total, rep.graded, rep.exact_matches, rep.all_exact) == (3, 3, 3, True)
    assert rep.accuracy == pytest.approx(2 / 3)
    assert rep.reference["sim-strong"] == pytest.approx(2 / 3) and rep.reference["sim-weak"] == pytest.approx(1 / 3)
    assert rep.per_model["sim-weak"].accuracy == pytest.approx(0.5)
    assert rep.to_dict()["accuracy"] == pytest.approx(2 / 3)


def test_grading_flags_mismatches_and_unknowns(tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv")
    rows = [("What is 2+2?", "sim-strong", "four"), ("Unknown?", "sim-strong", "x"), ("What is 2+2?", "gpt-9", "4")]
    rep = grade(rows, labels, {"sim-strong": "big"})
    assert (rep.graded, rep.mismatches, rep.missing_prompt, rep.unmapped_model) == (1, 1, 1, 1)
    assert not rep.all_exact and rep.mismatched_examples == ["What is 2+2?"]


def test_replay_unknown_prompt_is_a_permanent_404(tmp_path: Path) -> None:
    cfg = replay_config(write_labels(tmp_path / "labels.csv"))
    sim = start_simulated_provider(cfg.providers["sim"].simulated)

    async def go():
        pool = ProviderPool(cfg, base_urls={"sim": sim.base_url})
        try:
            return await pool.complete(ChatRequest("x", "sim-strong", [{"role": "user", "content": "not there"}], 0))
        finally:
            await pool.aclose()

    try:
        res = asyncio.run(go())
    finally:
        sim.stop()
    assert not res.ok and res.status_code == 404 and len(res.attempts) == 1


@pytest.mark.skipif(not GSM8K.exists(), reason="shared GSM8K labels not present")
def test_gsm8k_random_half_strong_lands_between_the_two_models() -> None:
    from jobs.providers.sim.replay import load_replay_table

    table = load_replay_table(str(GSM8K))
    prompts = list(table.rows)
    rng = random.Random(0)
    routed = [(p, "sim-strong" if rng.random() < 0.5 else "sim-weak") for p in prompts]
    cfg = replay_config(GSM8K, concurrency=64)
    sim_opts = dict(cfg.providers["sim"].simulated)
    sim_opts["replay_models"] = {"sim-strong": "gpt-4-1106-preview", "sim-weak": "mistralai/Mixtral-8x7B-Instruct-v0.1"}
    cfg = parse_config({**cfg.model_dump(), "providers": {"sim": {"simulated": sim_opts, "concurrency": 64}}})
    rows = serve(cfg, routed)
    rep = grade(rows, GSM8K, model_columns_from_config(cfg))
    assert rep.graded == len(prompts) == 1319 and rep.all_exact
    weak, strong = rep.reference["sim-weak"], rep.reference["sim-strong"]
    assert weak == pytest.approx(0.638, abs=0.002) and strong == pytest.approx(0.857, abs=0.002)
    assert weak < rep.accuracy < strong
