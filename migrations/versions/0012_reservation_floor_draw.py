"""reservations.floor_draw_micro_usd: how much of an item's hold came from the job's weak floor

An item hold released unsent (a claim never sent, a batch line with no answer, a
downgrade to a model sent synchronously), or settled because its call was lost in flight,
leaves its item to be admitted again. Its weak share went back to the windows' free room
(or was spent), and the floor then no longer covered that item. With the draw recorded,
the job's next admission puts the shares of such holds back into the floor before it buys
any upgrade. A hold settled with its item's outcome owes nothing (its draw is zeroed), so
the partial index holds only the few closed holds that may still owe their share.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

OWED = sa.text("state <> 'open' AND floor_draw_micro_usd > 0")


def upgrade() -> None:
    op.add_column("reservations", sa.Column("floor_draw_micro_usd", sa.BigInteger(), server_default="0", nullable=False))
    op.create_index("ix_reservations_floor_owed", "reservations", ["job_id"], postgresql_where=OWED, sqlite_where=OWED)


def downgrade() -> None:
    op.drop_index("ix_reservations_floor_owed", table_name="reservations")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("floor_draw_micro_usd")
