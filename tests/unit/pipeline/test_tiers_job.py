"""Jobs over more than two models (issue 13 item 3): ``--models a,b,c --allocate budget``
chooses one model per item under the cap (``routing.tiers``), every item is answered, and
the ledger, status and export name the model each item went to."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from jobs.config import BUILTIN_CONFIG, parse_config
from jobs.errors import ConfigError
from jobs.ledger.export import export_job
from jobs.ledger.models import Attempt, Item
from jobs.ledger.session import session_scope
from jobs.lifecycle import service
from jobs.lifecycle.service import JobSpec
from jobs.pipeline.route import tier_quality
from jobs.runtime import Runtime
from jobs.settings import Settings

N = 240
TIERS = ["sim-strong", "sim-mid", "sim-weak"]


def _config():
    data = copy.deepcopy(BUILTIN_CONFIG)
    data["providers"]["sim"]["simulated"]["latency_ms"] = 0
    data["models"]["sim-mid"] = {"provider": "sim", "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 6.0}
    return parse_config(data)


def _run(tmp_path: Path, **spec: object):
    data = tmp_path / "in.jsonl"
    with data.open("w") as fh:
        for i in range(N):
            fh.write(json.dumps({"custom_id": f"q{i}", "prompt": f"question {i}: " + "explain " * (i % 17)}) + "\n")
    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", broker_url=None), _config())
    try:
        return rt.db_url, service.run(rt, JobSpec(input_file=str(data), router="length", **spec))
    finally:
        rt.close()


def test_three_tiers_under_a_budget_answer_every_item_and_use_the_middle_tier(tmp_path: Path) -> None:
    cap = 0.3
    db, st = _run(tmp_path, models=",".join(TIERS), allocate="budget", budget_usd=cap)  # type: ignore[arg-type]
    assert st.status == "completed" and st.succeeded == N and st.models == TIERS
    assert st.cost_usd <= cap
    used = st.succeeded_by_model
    assert set(used) <= set(TIERS) and sum(used.values()) == N and used.get("sim-mid", 0) > 0
    with session_scope(db) as s:
        routes = dict(s.execute(select(Item.route, func.count()).group_by(Item.route)).all())
        attempts = s.scalar(select(func.coalesce(func.sum(Attempt.cost_micro_usd), 0)))
        items = s.scalar(select(func.coalesce(func.sum(Item.cost_micro_usd), 0)))
    assert routes.get("tier2", 0) > 0 and attempts == items
    out = tmp_path / "out.jsonl"
    export_job(db, st.job_id, out, force=True)
    models = {json.loads(line)["routebatch"]["model"] for line in out.read_text().splitlines()}
    assert "sim-mid" in models


def test_more_than_two_models_need_a_budget_allocation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allocate budget"):
        _run(tmp_path, models=",".join(TIERS))


def test_models_and_strong_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="disagrees with --models"):
        _run(tmp_path, models="sim-strong,sim-weak", strong="sim-mid")


def test_tier_quality_interpolates_the_middle_model_by_log_price() -> None:
    p = np.array([0.0, 0.5, 1.0])
    costs = [np.full(3, 100.0), np.full(3, 10.0), np.full(3, 1.0)]
    q = tier_quality(p, costs)
    assert np.allclose(q[:, 0], 1.0) and np.allclose(q[:, 2], 1 - p)
    assert np.allclose(q[:, 1], 1 - 0.5 * p)  # halfway in log price: half the gap
