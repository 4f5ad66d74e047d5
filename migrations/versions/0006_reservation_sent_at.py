"""reservations.sent_at: the call of this hold is about to reach the provider

Written (in group commits, before the call goes out) by the generate step for every hold
whose call it starts. Recovery after a crash settles at the reserved amount only the
holds that carry it, and releases the others to zero: an item admitted but never sent
costs nothing.

Holds that exist before this migration are treated as sent (``sent_at`` = ``created_at``
for open ones), the conservative reading they had until now.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import migrations._types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reservations", sa.Column("sent_at", migrations._types.UTCDateTime(timezone=True), nullable=True))
    op.execute("UPDATE reservations SET sent_at = created_at WHERE state = 'open'")


def downgrade() -> None:
    op.drop_column("reservations", "sent_at")
