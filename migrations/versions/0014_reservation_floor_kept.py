"""reservations.floor_kept_micro_usd: a released hold's floor share stays reserved

A hold released unsent while its job still admits (a claim never sent, a batch line with
no answer, a move to a model sent synchronously) used to give its whole amount back to
the windows' free room, floor share included, and the job's next admission reserved that
share again. In between, another job on a shared named budget could take it, and the
item it was kept for ended skipped. The release now leaves the share reserved on the
windows and records it here; the job's next admission moves it into its floor without
reserving anew, and a job that ends (or the reaper, for a release that raced the end)
gives it back.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reservations", sa.Column("floor_kept_micro_usd", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("floor_kept_micro_usd")
