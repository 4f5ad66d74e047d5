"""initial ledger schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 14:23:44.139419
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import migrations._types


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('created_at', migrations._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('input_file', sa.Text(), nullable=False),
    sa.Column('input_format', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('router', sa.String(length=200), nullable=False),
    sa.Column('strong_model', sa.String(length=200), nullable=False),
    sa.Column('weak_model', sa.String(length=200), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('strong_share', sa.Float(), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('phase', sa.String(length=20), server_default='scoring', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('total', sa.Integer(), server_default='0', nullable=False),
    sa.Column('invalid', sa.Integer(), server_default='0', nullable=False),
    sa.Column('chunks', sa.Integer(), server_default='0', nullable=False),
    sa.Column('validating_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('in_progress_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finalizing_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failed_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelling_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expired_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_state'), ['state'], unique=False)

    op.create_table('prices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('valid_from', migrations._types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('input_micro_per_mtok', sa.BigInteger(), nullable=False),
    sa.Column('cached_input_micro_per_mtok', sa.BigInteger(), nullable=False),
    sa.Column('output_micro_per_mtok', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prices')),
    sa.UniqueConstraint('model', 'valid_from', name=op.f('uq_prices_model_valid_from'))
    )
    op.create_table('invalid_rows',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('custom_id', sa.String(length=512), nullable=True),
    sa.Column('field', sa.String(length=100), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_invalid_rows_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invalid_rows'))
    )
    with op.batch_alter_table('invalid_rows', schema=None) as batch_op:
        batch_op.create_index('ix_invalid_rows_job_line', ['job_id', 'line_no'], unique=False)

    op.create_table('items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('chunk', sa.Integer(), nullable=False),
    sa.Column('custom_id', sa.String(length=512), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('max_tokens', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('route', sa.String(length=10), nullable=True),
    sa.Column('route_reason', sa.String(length=40), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=True),
    sa.Column('response', sa.JSON(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('completion_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cost_micro_usd', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('attempts_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('lease_until', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_items_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_items')),
    sa.UniqueConstraint('job_id', 'custom_id', name=op.f('uq_items_job_id_custom_id'))
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_job_chunk', ['job_id', 'chunk'], unique=False)
        batch_op.create_index('ix_items_job_state', ['job_id', 'state'], unique=False)

    op.create_table('attempts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('attempt_no', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=200), nullable=False),
    sa.Column('is_fallback', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('request_id', sa.String(length=200), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error_class', sa.String(length=100), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), server_default='0', nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cached_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('completion_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('usage_estimated', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('cost_micro_usd', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('price_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('started_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', migrations._types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_attempts_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_attempts_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['price_id'], ['prices.id'], name=op.f('fk_attempts_price_id_prices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attempts'))
    )
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.create_index('ix_attempts_job_item', ['job_id', 'item_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_job_item')

    op.drop_table('attempts')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_job_state')
        batch_op.drop_index('ix_items_job_chunk')

    op.drop_table('items')
    with op.batch_alter_table('invalid_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_invalid_rows_job_line')

    op.drop_table('invalid_rows')
    op.drop_table('prices')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_state'))

    op.drop_table('jobs')
