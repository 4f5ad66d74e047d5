"""jobs.name / metadata / completion_window / expires_at: OpenAI Batch's job fields

* ``name``: ``--name``, indexed for ``list --name``;
* ``metadata``: ``--metadata k=v`` pairs (JSON object of strings, OpenAI's limits);
* ``completion_window``: ``--completion-window`` as given (``24h``);
* ``expires_at``: ``created_at`` + the window; when it passes with unfinished items the
  job ends ``expired`` and those items end ``expired``.

Jobs that exist before this migration have none of them (no deadline).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import migrations._types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): SQLite supports it, and the views over ``jobs`` stay valid.
    op.add_column("jobs", sa.Column("name", sa.String(length=256), nullable=True))
    op.add_column("jobs", sa.Column("metadata", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("completion_window", sa.String(length=20), nullable=True))
    op.add_column("jobs", sa.Column("expires_at", migrations._types.UTCDateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_name", "jobs", ["name"])


def downgrade() -> None:
    op.drop_index("ix_jobs_name", table_name="jobs")
    for name in ("expires_at", "completion_window", "metadata", "name"):
        op.drop_column("jobs", name)  # SQLite >= 3.35 drops columns in place
