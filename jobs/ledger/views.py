"""Reading the ledger through its SQL views (defined in migration 0003).

The CLI asks the same views an analyst would, so ``routebatch ledger`` and a hand-written
query never disagree.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import text

from jobs.ledger.session import get_engine

GROUPINGS = ("job", "model", "day")


def ledger_rows(db_url: str, *, job: str | None = None, since: date | None = None, by: str = "job") -> list[dict]:
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}")
    params: dict = {}
    since_ts = datetime(since.year, since.month, since.day) if since else None
    if by == "job":
        sql = (
            "SELECT s.job_id, s.state, s.created_at, s.router, s.total, s.succeeded, s.failed, s.skipped_budget, "
            "s.strong_answers, s.weak_answers, s.attempts, s.cost_micro_usd, v.all_strong_micro_usd, v.savings_pct "
            "FROM job_summary s JOIN savings v ON v.job_id = s.job_id WHERE 1=1"
        )
        if job:
            sql += " AND s.job_id = :job"
        if since_ts:
            sql += " AND s.created_at >= :since"
        sql += " ORDER BY s.created_at"
    elif by == "model":
        sql = (
            "SELECT a.provider, a.model, COUNT(*) AS requests, SUM(a.prompt_tokens) AS prompt_tokens, "
            "SUM(a.completion_tokens) AS completion_tokens, SUM(a.cost_micro_usd) AS cost_micro_usd "
            "FROM attempts a WHERE 1=1"
        )
        if job:
            sql += " AND a.job_id = :job"
        if since_ts:
            sql += " AND a.started_at >= :since"
        sql += " GROUP BY a.provider, a.model ORDER BY cost_micro_usd DESC"
    else:
        if job:
            raise ValueError("--by day sums over all jobs; use --by model with --job")
        sql = "SELECT day, provider, model, requests, tokens, cost_micro_usd FROM daily_spend WHERE 1=1"
        if since:
            sql += " AND day >= :since_day"
            params["since_day"] = since
        sql += " ORDER BY day, provider, model"
    params.update({"job": job, "since": since_ts})
    with get_engine(db_url).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})]
    for r in rows:
        for key in list(r):
            if key.endswith("micro_usd") and r[key] is not None:
                r[key] = int(r[key])
                r[key.replace("micro_usd", "usd")] = r[key] / 1_000_000
            elif hasattr(r[key], "isoformat"):
                r[key] = r[key].isoformat()
            elif r[key] is not None and type(r[key]).__name__ == "Decimal":
                r[key] = float(r[key])
    return rows


def grant_readonly(db_url: str, role: str) -> list[str]:
    """Create (if needed) a Postgres role that can read the ledger and nothing else."""
    engine = get_engine(db_url)
    if engine.dialect.name != "postgresql":
        raise ValueError("grant-readonly needs Postgres (SQLite has no roles)")
    if not role.replace("_", "").isalnum():
        raise ValueError("role names may contain letters, digits and underscores only")
    database = engine.url.database
    statements = [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} NOLOGIN; END IF; END $$",
        f'REVOKE ALL ON DATABASE "{database}" FROM {role}',
        f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
        f"REVOKE ALL ON SCHEMA public FROM {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
    ]
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    return statements
