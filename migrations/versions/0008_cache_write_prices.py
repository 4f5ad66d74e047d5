"""prices.cache_write_micro_per_mtok, attempts.cache_write_tokens

Anthropic bills input tokens written to a prompt cache at their own rate (1.25x input by
default). The ledger keeps that rate with each price version, so a charge can be
recomputed from the ledger alone and a price change of cache writes is a new version, and
keeps the count of cache-written tokens with each attempt. NULL rate: the plain input price.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prices", sa.Column("cache_write_micro_per_mtok", sa.BigInteger(), nullable=True))
    op.add_column("attempts", sa.Column("cache_write_tokens", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("attempts", "cache_write_tokens")
    op.drop_column("prices", "cache_write_micro_per_mtok")
