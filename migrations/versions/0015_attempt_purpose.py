"""attempts.purpose: an --adapt sample's twin and judge calls are told from the item's answer

The ``savings`` view counted a sampled item's all-strong baseline as what the item cost
minus the twin and judge costs recorded in ``judgements``. A twin or judge call the reaper
charged as lost in flight, or one bought twice after a crash, is in the item's cost but
not in ``judgements``, so it went into the baseline and the savings looked better than
they were. Each attempt now says what it was for, and the baseline of a sampled item is
what its ``answer`` attempts cost. Items recorded before this column (no attempt of theirs
is a twin or judge call) keep the earlier rule.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ATTEMPTS_OF_ITEM = "FROM attempts a WHERE a.job_id = it.job_id AND a.item_id = it.id"

SAVINGS = f"""
SELECT s.job_id, s.strong_model, s.cost_micro_usd, s.all_strong_micro_usd,
       s.all_strong_micro_usd - s.cost_micro_usd AS saved_micro_usd,
       CASE WHEN s.all_strong_micro_usd > 0
            THEN 100.0 * (s.all_strong_micro_usd - s.cost_micro_usd) / s.all_strong_micro_usd ELSE 0 END AS savings_pct
FROM (
SELECT j.id AS job_id, j.strong_model,
       COALESCE(SUM(it.cost_micro_usd), 0) AS cost_micro_usd,
       COALESCE(SUM(CASE
           WHEN it.state <> 'succeeded' THEN 0
           WHEN EXISTS (SELECT 1 {_ATTEMPTS_OF_ITEM} AND a.purpose <> 'answer')
               THEN (SELECT COALESCE(SUM(a.cost_micro_usd), 0) {_ATTEMPTS_OF_ITEM} AND a.purpose = 'answer')
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


def _savings_0011() -> ModuleType:
    """Migration 0011, whose view this one replaces (its downgrade target)."""
    path = Path(__file__).with_name("0011_savings_without_adapting.py")
    spec = importlib.util.spec_from_file_location("routebatch_migration_0011", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.add_column("attempts", sa.Column("purpose", sa.String(length=20), server_default="answer", nullable=False))
    op.execute("DROP VIEW IF EXISTS savings")
    op.execute(f"CREATE VIEW savings AS {SAVINGS}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS savings")
    op.execute(f"CREATE VIEW savings AS {_savings_0011().SAVINGS}")
    # a plain DROP COLUMN (SQLite >= 3.35 has one): a batch copy of ``attempts`` would break
    # the views over it on SQLite
    op.drop_column("attempts", "purpose")
