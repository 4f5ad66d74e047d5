"""provider_batches, attempts.provider_batch_id: dispatch through the providers' batch APIs

A job may send its routed items through OpenAI's Batch API or Anthropic's Message Batches
(half price, results within 24 hours). Each provider batch is recorded before it is
uploaded (``preparing``, with the item ids it carries), so a crash between upload and
record is reconciled with the provider instead of uploading the same requests twice; an
attempt settled from a batch's results names its batch.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import migrations._types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = migrations._types.UTCDateTime(timezone=True)
    op.create_table(
        "provider_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("remote_id", sa.String(length=200), nullable=True),
        sa.Column("remote_status", sa.String(length=40), nullable=True),
        sa.Column("input_file_id", sa.String(length=200), nullable=True),
        sa.Column("output_file_id", sa.String(length=200), nullable=True),
        sa.Column("error_file_id", sa.String(length=200), nullable=True),
        sa.Column("item_ids", sa.JSON(), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("done_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("submitted_at", ts, nullable=True),
        sa.Column("ended_at", ts, nullable=True),
        sa.Column("settled_at", ts, nullable=True),
        sa.Column("next_poll_at", ts, nullable=True),
        sa.Column("poll_interval_s", sa.Float(), server_default="30", nullable=False),
        sa.Column("lease_until", ts, nullable=True),
        sa.Column("items_lease", ts, nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("retry_round", sa.Integer(), server_default="1", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_provider_batches_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_provider_batches"),
    )
    op.create_index("ix_provider_batches_job_id_state", "provider_batches", ["job_id", "state"])
    op.add_column("attempts", sa.Column("provider_batch_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.drop_column("attempts", "provider_batch_id")
    op.drop_index("ix_provider_batches_job_id_state", table_name="provider_batches")
    op.drop_table("provider_batches")
