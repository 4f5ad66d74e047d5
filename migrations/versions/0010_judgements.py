"""judgements: the judged sample of an adapting job (``--adapt F``), and its memory (``--memory NAME``)

Each sampled item gets a row: the weak twin's answer (the strong answer is the item's own
outcome), the judge's verdict, and whether the weak answer is as good. The calls are
attempts of the item like any other; this table is the sample's membership and labels.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import migrations._types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = migrations._types.UTCDateTime(timezone=True)
    bigid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "judgements",
        sa.Column("id", bigid, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("item_id", bigid, nullable=False),
        sa.Column("judge", sa.String(length=200), nullable=False),
        sa.Column("memory", sa.String(length=200), nullable=True),
        sa.Column("strong_model", sa.String(length=200), nullable=False),
        sa.Column("weak_model", sa.String(length=200), nullable=False),
        sa.Column("weak_response", sa.JSON(), nullable=True),
        sa.Column("weak_error", sa.Text(), nullable=True),
        sa.Column("verdict", sa.String(length=20), nullable=True),
        sa.Column("weak_good", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("weak_cost_micro_usd", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("judge_cost_micro_usd", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("judged_at", ts, nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_judgements_job_id_jobs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_judgements_item_id_items", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_judgements"),
        sa.UniqueConstraint("item_id", name="uq_judgements_item_id"),
    )
    op.create_index("ix_judgements_job_id", "judgements", ["job_id"])
    op.create_index("ix_judgements_memory", "judgements", ["memory"])


def downgrade() -> None:
    op.drop_index("ix_judgements_memory", table_name="judgements")
    op.drop_index("ix_judgements_job_id", table_name="judgements")
    op.drop_table("judgements")
