"""savings view: an adapted job's all-strong baseline leaves out the adapting calls

A sampled item of an ``--adapt`` job carries the cost of its strong answer, its weak twin
and its judge calls. An all-strong job would have made only the first, so the baseline
counts a sampled item at its strong answer's cost (whichever answer the item kept). What
was spent still counts every call: the savings are net of what adapting cost.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SAVINGS = """
SELECT s.job_id, s.strong_model, s.cost_micro_usd, s.all_strong_micro_usd,
       s.all_strong_micro_usd - s.cost_micro_usd AS saved_micro_usd,
       CASE WHEN s.all_strong_micro_usd > 0
            THEN 100.0 * (s.all_strong_micro_usd - s.cost_micro_usd) / s.all_strong_micro_usd ELSE 0 END AS savings_pct
FROM (
SELECT j.id AS job_id, j.strong_model,
       COALESCE(SUM(it.cost_micro_usd), 0) AS cost_micro_usd,
       COALESCE(SUM(CASE
           WHEN it.state <> 'succeeded' THEN 0
           WHEN jg.id IS NOT NULL THEN it.cost_micro_usd - jg.weak_cost_micro_usd - jg.judge_cost_micro_usd
           WHEN it.model = j.strong_model THEN it.cost_micro_usd
           ELSE (it.prompt_tokens * p.input_micro_per_mtok + it.completion_tokens * p.output_micro_per_mtok + 999999) / 1000000
       END), 0) AS all_strong_micro_usd
FROM jobs j
LEFT JOIN items it ON it.job_id = j.id
LEFT JOIN judgements jg ON jg.item_id = it.id
LEFT JOIN prices p ON p.model = j.strong_model
     AND p.valid_from = (SELECT MAX(p2.valid_from) FROM prices p2 WHERE p2.model = j.strong_model)
GROUP BY j.id, j.strong_model
) s"""


def _ledger_views() -> ModuleType:
    """Migration 0003, where the view was first defined (its downgrade target)."""
    path = Path(__file__).with_name("0003_ledger_views.py")
    spec = importlib.util.spec_from_file_location("routebatch_migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS savings")
    op.execute(f"CREATE VIEW savings AS {SAVINGS}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS savings")
    op.execute(f"CREATE VIEW savings AS {_ledger_views()._views()['savings']}")
