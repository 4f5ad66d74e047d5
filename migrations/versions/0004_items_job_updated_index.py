"""index items (job_id, updated_at) for the reaper's stall check

The reaper asks, per open job, when an item last changed; without this index that is a
scan of the job's items (0.7 s on a 1M-item job), with it one index lookup.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_job_updated", "items", ["job_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_items_job_updated", table_name="items")
