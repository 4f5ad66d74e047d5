"""items.dispatch: an item that must go out synchronously whatever its provider's dispatch

A poll step answers an ended batch's unanswered lines synchronously (``batch_retry =
"sync"``, ``auto`` near its deadline) only while its short time limit allows, and hands the
rest back to ``routed`` for the generate steps. Without a mark, a generate step would put
them in a new provider batch of round 1 where the provider dispatches ``batch``: against the
configured policy, and with a provider that expires every batch, a cycle without end.
NULL (every other item): decided by the configuration when the item is sent.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("dispatch", sa.String(length=10), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35 has one): a batch copy of ``items`` would break the
    # views over it on SQLite
    op.drop_column("items", "dispatch")
