"""ledger views: job_summary, daily_spend, item_audit, budget_status, savings

The ledger is queried in SQL by analysts; these views are part of the schema (and of its
migrations) so that every database, Postgres or SQLite, answers the same questions the same
way. Only the day truncation differs between the two dialects.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VIEWS = ("job_summary", "daily_spend", "item_audit", "budget_status", "savings")


def _day(column: str) -> str:
    if op.get_bind().dialect.name == "postgresql":
        return f"CAST(date_trunc('day', {column} AT TIME ZONE 'UTC') AS date)"
    return f"date({column})"


def _views() -> dict[str, str]:
    return {
        "job_summary": """
SELECT j.id AS job_id, j.state, j.created_at, j.completed_at, j.router, j.strong_model, j.weak_model,
       j.total, j.invalid,
       COALESCE(i.succeeded, 0) AS succeeded, COALESCE(i.failed, 0) AS failed,
       COALESCE(i.skipped_budget, 0) AS skipped_budget, COALESCE(i.cancelled, 0) AS cancelled,
       COALESCE(i.strong_answers, 0) AS strong_answers, COALESCE(i.weak_answers, 0) AS weak_answers,
       COALESCE(a.attempts, 0) AS attempts, COALESCE(a.cost_micro_usd, 0) AS cost_micro_usd,
       COALESCE(a.cost_micro_usd, 0) / 1000000.0 AS cost_usd
FROM jobs j
LEFT JOIN (
    SELECT it.job_id,
           SUM(CASE WHEN it.state = 'succeeded' THEN 1 ELSE 0 END) AS succeeded,
           SUM(CASE WHEN it.state = 'failed' THEN 1 ELSE 0 END) AS failed,
           SUM(CASE WHEN it.state = 'skipped_budget' THEN 1 ELSE 0 END) AS skipped_budget,
           SUM(CASE WHEN it.state = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
           SUM(CASE WHEN it.state = 'succeeded' AND it.model = jj.strong_model THEN 1 ELSE 0 END) AS strong_answers,
           SUM(CASE WHEN it.state = 'succeeded' AND it.model <> jj.strong_model THEN 1 ELSE 0 END) AS weak_answers
    FROM items it JOIN jobs jj ON jj.id = it.job_id
    GROUP BY it.job_id
) i ON i.job_id = j.id
LEFT JOIN (
    SELECT job_id, COUNT(*) AS attempts, SUM(cost_micro_usd) AS cost_micro_usd FROM attempts GROUP BY job_id
) a ON a.job_id = j.id""",
        "daily_spend": f"""
SELECT {_day('a.started_at')} AS day, a.provider, a.model,
       COUNT(*) AS requests,
       SUM(CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END) AS successes,
       SUM(a.prompt_tokens) AS prompt_tokens, SUM(a.completion_tokens) AS completion_tokens,
       SUM(a.prompt_tokens + a.completion_tokens) AS tokens,
       SUM(a.cost_micro_usd) AS cost_micro_usd, SUM(a.cost_micro_usd) / 1000000.0 AS cost_usd
FROM attempts a
GROUP BY {_day('a.started_at')}, a.provider, a.model""",
        "item_audit": """
SELECT it.job_id, it.custom_id, it.line_no, it.score, it.threshold, it.route AS decision, it.route_reason AS reason,
       it.model, it.state, it.status_code, it.error,
       COALESCE(a.attempts, 0) AS attempts, COALESCE(a.retries, 0) AS retries,
       it.prompt_tokens, it.completion_tokens, it.cost_micro_usd
FROM items it
LEFT JOIN (
    SELECT item_id, COUNT(*) AS attempts, SUM(CASE WHEN attempt_no > 1 THEN 1 ELSE 0 END) AS retries
    FROM attempts GROUP BY item_id
) a ON a.item_id = it.id""",
        "budget_status": """
SELECT b.name, b.kind, b.period, w.window_start, w.cap_micro_usd, w.spent_micro_usd, w.reserved_micro_usd,
       w.cap_micro_usd - w.spent_micro_usd - w.reserved_micro_usd AS available_micro_usd,
       w.overdraft_micro_usd,
       CASE WHEN w.cap_micro_usd > 0 THEN 100.0 * w.spent_micro_usd / w.cap_micro_usd ELSE 0 END AS used_pct
FROM budgets b JOIN budget_windows w ON w.budget_id = b.id""",
        "savings": """
SELECT s.job_id, s.strong_model, s.cost_micro_usd, s.all_strong_micro_usd,
       s.all_strong_micro_usd - s.cost_micro_usd AS saved_micro_usd,
       CASE WHEN s.all_strong_micro_usd > 0
            THEN 100.0 * (s.all_strong_micro_usd - s.cost_micro_usd) / s.all_strong_micro_usd ELSE 0 END AS savings_pct
FROM (
SELECT j.id AS job_id, j.strong_model,
       COALESCE(SUM(it.cost_micro_usd), 0) AS cost_micro_usd,
       COALESCE(SUM(CASE
           WHEN it.state <> 'succeeded' THEN 0
           WHEN it.model = j.strong_model THEN it.cost_micro_usd
           ELSE (it.prompt_tokens * p.input_micro_per_mtok + it.completion_tokens * p.output_micro_per_mtok + 999999) / 1000000
       END), 0) AS all_strong_micro_usd
FROM jobs j
LEFT JOIN items it ON it.job_id = j.id
LEFT JOIN prices p ON p.model = j.strong_model
     AND p.valid_from = (SELECT MAX(p2.valid_from) FROM prices p2 WHERE p2.model = j.strong_model)
GROUP BY j.id, j.strong_model
) s""",
    }


def upgrade() -> None:
    for name, sql in _views().items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
