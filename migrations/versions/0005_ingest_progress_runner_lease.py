"""ingest progress, input fingerprint, runner lease, enqueued flag on jobs

* ``ingest_line`` / ``ingest_offset`` / ``ingest_bytes`` / ``ingest_seq`` / ``ingest_complete``:
  how far ingest got, written in the same transaction as each committed batch, so ``resume`` of a job
  killed while ``validating`` continues from the last committed row;
* ``input_size`` / ``input_mtime_ns`` / ``input_seekable`` / ``input_changed``: the input's
  fingerprint at ingest start, and whether it changed before the end;
* ``runner_id`` / ``runner_host`` / ``runner_pid`` / ``runner_since`` / ``lease_until``: the
  one runner that holds the job (renewed by a heartbeat);
* ``enqueued``: the job's messages reached a broker; the reaper only re-enqueues these.

Jobs that exist before this migration keep their behaviour: ingest counts as complete
(except for jobs still ``validating``) and they count as enqueued.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import migrations._types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): SQLite supports it, and the views over ``jobs`` stay valid.
    op.add_column("jobs", sa.Column("ingest_line", sa.Integer(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("ingest_offset", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("ingest_bytes", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("ingest_seq", sa.Integer(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("ingest_complete", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("jobs", sa.Column("input_size", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("input_mtime_ns", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("input_seekable", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("jobs", sa.Column("input_changed", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("jobs", sa.Column("runner_id", sa.String(length=100), nullable=True))
    op.add_column("jobs", sa.Column("runner_host", sa.String(length=255), nullable=True))
    op.add_column("jobs", sa.Column("runner_pid", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("runner_since", migrations._types.UTCDateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("lease_until", migrations._types.UTCDateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("enqueued", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.execute("UPDATE jobs SET ingest_complete = false WHERE state = 'validating'")


def downgrade() -> None:
    for name in (
        "enqueued",
        "lease_until",
        "runner_since",
        "runner_pid",
        "runner_host",
        "runner_id",
        "input_changed",
        "input_seekable",
        "input_mtime_ns",
        "input_size",
        "ingest_complete",
        "ingest_seq",
        "ingest_bytes",
        "ingest_offset",
        "ingest_line",
    ):
        op.drop_column("jobs", name)  # SQLite >= 3.35 drops columns in place
