"""budgets, reservations, ledger events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:37:03.097550
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import migrations._types


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('budgets',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('cap_micro_usd', sa.BigInteger(), nullable=False),
    sa.Column('period', sa.String(length=10), nullable=False),
    sa.Column('created_at', migrations._types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budgets')),
    sa.UniqueConstraint('name', name=op.f('uq_budgets_name'))
    )
    op.create_table('budget_windows',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('budget_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('window_start', migrations._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cap_micro_usd', sa.BigInteger(), nullable=False),
    sa.Column('spent_micro_usd', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('reserved_micro_usd', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('overdraft_micro_usd', sa.BigInteger(), server_default='0', nullable=False),
    sa.CheckConstraint('spent_micro_usd + reserved_micro_usd <= cap_micro_usd', name=op.f('ck_budget_windows_within_cap')),
    sa.CheckConstraint('spent_micro_usd >= 0 AND reserved_micro_usd >= 0', name=op.f('ck_budget_windows_non_negative')),
    sa.ForeignKeyConstraint(['budget_id'], ['budgets.id'], name=op.f('fk_budget_windows_budget_id_budgets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budget_windows')),
    sa.UniqueConstraint('budget_id', 'window_start', name=op.f('uq_budget_windows_budget_id_window_start'))
    )
    op.create_table('ledger_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', migrations._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('budget_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('window_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('dedupe_key', sa.String(length=200), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['budget_id'], ['budgets.id'], name=op.f('fk_ledger_events_budget_id_budgets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['window_id'], ['budget_windows.id'], name=op.f('fk_ledger_events_window_id_budget_windows'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_events')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_ledger_events_dedupe_key'))
    )
    with op.batch_alter_table('ledger_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_events_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_events_kind'), ['kind'], unique=False)

    op.create_table('reservations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('amount_micro_usd', sa.BigInteger(), nullable=False),
    sa.Column('job_window_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('named_window_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('settled_micro_usd', sa.BigInteger(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', migrations._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', migrations._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('settled_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_reservations_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_reservations_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_window_id'], ['budget_windows.id'], name=op.f('fk_reservations_job_window_id_budget_windows')),
    sa.ForeignKeyConstraint(['named_window_id'], ['budget_windows.id'], name=op.f('fk_reservations_named_window_id_budget_windows')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservations'))
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservations_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reservations_job_id'), ['job_id'], unique=False)
        batch_op.create_index('ix_reservations_state_lease', ['state', 'lease_until'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('budget_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('job_budget_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('on_exhausted', sa.String(length=20), server_default='downgrade', nullable=False))
        batch_op.add_column(sa.Column('allocate', sa.String(length=20), server_default='threshold', nullable=False))
        batch_op.add_column(sa.Column('budget_exhausted_at', migrations._types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_jobs_job_budget_id_budgets'), 'budgets', ['job_budget_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_jobs_budget_id_budgets'), 'budgets', ['budget_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('budget_exhausted_at')
        batch_op.drop_constraint(batch_op.f('fk_jobs_budget_id_budgets'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_jobs_job_budget_id_budgets'), type_='foreignkey')
        batch_op.drop_column('allocate')
        batch_op.drop_column('on_exhausted')
        batch_op.drop_column('job_budget_id')
        batch_op.drop_column('budget_id')

    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index('ix_reservations_state_lease')
        batch_op.drop_index(batch_op.f('ix_reservations_job_id'))
        batch_op.drop_index(batch_op.f('ix_reservations_item_id'))

    op.drop_table('reservations')
    with op.batch_alter_table('ledger_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_events_kind'))
        batch_op.drop_index(batch_op.f('ix_ledger_events_job_id'))

    op.drop_table('ledger_events')
    op.drop_table('budget_windows')
    op.drop_table('budgets')
