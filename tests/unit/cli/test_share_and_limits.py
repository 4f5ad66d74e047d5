"""--strong-share holds on tied scores; absurd money values and config typos fail at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from jobs.errors import ConfigError
from tests.unit.cli.helpers import one_line_error, rb, write_jsonl


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("levels", [1, 2, 3, 7, 1000])
def test_share_is_exact_with_any_number_of_ties(share: float, levels: int) -> None:
    from routing.thresholds import cut_for_strong_share

    rng = np.random.default_rng(levels)
    scores = rng.integers(0, levels, size=200) / max(levels, 1)
    cut = cut_for_strong_share(scores, share)
    assert cut.strong.sum() == round(share * 200)
    assert np.array_equal(cut.strong, cut_for_strong_share(scores, share).strong), "deterministic"
    if cut.strong.any() and not cut.strong.all():
        assert scores[cut.strong].min() >= scores[~cut.strong].max(), "never a lower score strong over a higher one"


def test_ties_go_strong_in_input_order_and_are_flagged() -> None:
    from routing.thresholds import cut_for_strong_share, route_strong, threshold_for_strong_share

    scores = np.full(20, 0.4)
    cut = cut_for_strong_share(scores, 0.1)
    assert cut.strong.tolist() == [True, True] + [False] * 18
    assert cut.tie_broken and cut.tied == 20 and cut.tied_strong == 2 and cut.last_tied_strong == 1
    assert route_strong(scores, threshold_for_strong_share(scores, 0.1)).all(), "a threshold alone cannot hold the share"
    distinct = cut_for_strong_share(np.linspace(0, 1, 20), 0.1)
    assert not distinct.tie_broken and distinct.strong.sum() == 2


def test_job_on_tied_scores_keeps_the_share_and_records_why(sqlite_url: str, runtime_factory, tmp_path: Path) -> None:
    from jobs.ledger.models import Item, LedgerEvent
    from jobs.ledger.session import session_scope
    from jobs.lifecycle.service import JobSpec, run

    data = write_jsonl(tmp_path / "same.jsonl", [{"custom_id": f"c{i}", "prompt": "the same prompt"} for i in range(20)])
    rt = runtime_factory(sqlite_url)
    st = run(rt, JobSpec(input_file=str(data), router="length", strong_share=0.1))
    assert st.status == "completed"
    assert (st.strong_calls, st.weak_calls) == (2, 18)
    with session_scope(sqlite_url) as s:
        strong = s.scalars(select(Item.custom_id).where(Item.route == "strong").order_by(Item.id)).all()
        events = s.scalars(select(LedgerEvent).where(LedgerEvent.kind == "strong_share_tie_break")).all()
    assert strong == ["c0", "c1"]
    assert len(events) == 1 and events[0].job_id == st.job_id
    assert events[0].data["tied"] == 20 and events[0].data["strong"] == 2
    assert "breaking the tie" in events[0].message


@pytest.mark.parametrize("value", ["inf", "nan", "1e13"])
def test_absurd_budget_is_one_line(tmp_path: Path, value: str) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    line = one_line_error(rb(["run", "in.jsonl", "--budget-usd", value], tmp_path))
    assert "budget_usd" in line


def test_jobspec_rejects_non_finite_values() -> None:
    from jobs.lifecycle.service import JobSpec

    for bad in ({"budget_usd": float("inf")}, {"budget_usd": float("nan")}, {"threshold": float("nan")}):
        with pytest.raises(ValidationError):
            JobSpec(input_file="x.jsonl", **bad)
    assert JobSpec(input_file="x.jsonl", budget_usd=5.0).budget_usd == 5.0


def _config(**changes: object) -> dict:
    import copy

    from jobs.config import BUILTIN_CONFIG

    data = copy.deepcopy(BUILTIN_CONFIG)
    for key, value in changes.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("models.sim-strong.input_usd_per_mtok", float("inf"), "models.sim-strong.input_usd_per_mtok: Input should be a finite"),
        ("models.sim-strong.output_usd_per_mtok", 1e13, "models.sim-strong.output_usd_per_mtok: Input should be less than"),
        ("models.sim-weak.cached_input_usd_per_mtok", float("nan"), "cached_input_usd_per_mtok: Input should be a finite"),
        ("providers.sim.simulated", {"latncy_ms": 5}, "providers.sim: Value error, simulated: unknown option(s) latncy_ms"),
        ("providers.sim.simulated", {"fault_42": 0.1}, "unknown fault '42'"),
        ("providers.sim.base_url", "http://127.0.0.1:99999/v1", "bad port"),
    ],
)
def test_config_values_are_checked_when_loaded(key: str, value: object, message: str) -> None:
    from jobs.config import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config(_config(**{key: value}), "rb.toml")
    assert message in str(err.value)


def test_config_typo_is_reported_before_ingest(tmp_path: Path) -> None:
    cfg = tmp_path / "rb.toml"
    cfg.write_text(
        '[providers.sim]\nsimulated = { latency_ms = 1, fualt_rate = 0.1 }\n'
        '[models.s]\nprovider = "sim"\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n'
        '[models.w]\nprovider = "sim"\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n'
        '[defaults]\nstrong = "s"\nweak = "w"\n'
    )
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    done = rb(["run", "in.jsonl", "--router", "length", "--json"], tmp_path, ROUTEBATCH_CONFIG=str(cfg))
    assert done.returncode == 1
    assert "fualt_rate" in json.loads(done.stdout)["error"]
    assert json.loads(rb(["list", "--json"], tmp_path).stdout) == [], "no job was ingested"
