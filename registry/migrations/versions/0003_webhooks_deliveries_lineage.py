"""Webhook subscriptions, deliveries and their attempts, lineage events; outbox events without a
model (webhook.*), addressed to one subscription, and an index of the ones not yet relayed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_PG_NOTIFY_FUNCTION = """
CREATE FUNCTION outbox_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('registry_outbox', '');
  RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table('lineage_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lineage_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_lineage_events_event_id')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('lineage_events', schema=None) as batch_op:
        batch_op.create_index('ix_lineage_events_chain_version', ['chain', 'version', 'id'], unique=False)

    op.create_table('webhook_subscriptions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('event_types', sa.JSON(), nullable=False),
    sa.Column('models', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('previous_secret', sa.Text(), nullable=True),
    sa.Column('previous_secret_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=256), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_subscriptions')),
    sqlite_autoincrement=True
    )
    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('outbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('subscription_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('ordered', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('round_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('first_failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox_events.id'], name=op.f('fk_deliveries_outbox_id_outbox_events')),
    sa.ForeignKeyConstraint(['subscription_id'], ['webhook_subscriptions.id'], name=op.f('fk_deliveries_subscription_id_webhook_subscriptions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('outbox_id', 'target', name='uq_deliveries_outbox_id_target'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_due', ['next_attempt_at'], unique=False, postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.create_index('ix_deliveries_finished', ['finished_at'], unique=False)
        batch_op.create_index('ix_deliveries_order', ['target', 'chain', 'sequence'], unique=False, postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.create_index('ix_deliveries_subscription_id', ['subscription_id', 'id'], unique=False)
        batch_op.create_index('ix_deliveries_target', ['target', 'id'], unique=False)

    op.create_table('delivery_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivery_attempts_delivery_id_deliveries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_attempts_delivery_id', ['delivery_id', 'number'], unique=False)

    # SQLite recreates the table for alter_column: keep AUTOINCREMENT (tables.AUTOINCREMENT).
    with op.batch_alter_table('outbox_events', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.add_column(sa.Column('target', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.alter_column('model',
               existing_type=sa.VARCHAR(length=256),
               nullable=True)
        batch_op.create_index('ix_outbox_events_unrelayed', ['id'], unique=False, postgresql_where=sa.text('relayed_at IS NULL'), sqlite_where=sa.text('relayed_at IS NULL'))
        batch_op.create_index('ix_outbox_events_unrelayed_chain', ['chain', 'sequence'], unique=False, postgresql_where=sa.text('relayed_at IS NULL'), sqlite_where=sa.text('relayed_at IS NULL'))
    # Events from before this revision had nobody to go to: the relay starts after them.
    op.execute(sa.text("UPDATE outbox_events SET relayed_at = CURRENT_TIMESTAMP WHERE relayed_at IS NULL"))
    if op.get_bind().dialect.name == "postgresql":
        # Wakes every worker's relay when a transaction that wrote events commits, inside the
        # INSERT itself (no extra round trip on the request path); PostgreSQL folds the
        # notifications of one transaction into one.
        op.execute(_PG_NOTIFY_FUNCTION)
        op.execute("CREATE TRIGGER outbox_events_notify AFTER INSERT ON outbox_events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS outbox_events_notify ON outbox_events")
        op.execute("DROP FUNCTION IF EXISTS outbox_events_notify()")
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_attempts_delivery_id')

    op.drop_table('delivery_attempts')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_subscription_id')
        batch_op.drop_index('ix_deliveries_target')
        batch_op.drop_index('ix_deliveries_order', postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))
        batch_op.drop_index('ix_deliveries_finished')
        batch_op.drop_index('ix_deliveries_due', postgresql_where=sa.text("state = 'pending'"), sqlite_where=sa.text("state = 'pending'"))

    op.drop_table('deliveries')
    op.drop_table('webhook_subscriptions')
    with op.batch_alter_table('lineage_events', schema=None) as batch_op:
        batch_op.drop_index('ix_lineage_events_chain_version')

    op.drop_table('lineage_events')
    op.execute(sa.text("DELETE FROM outbox_events WHERE model IS NULL"))
    with op.batch_alter_table('outbox_events', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_index('ix_outbox_events_unrelayed_chain', postgresql_where=sa.text('relayed_at IS NULL'), sqlite_where=sa.text('relayed_at IS NULL'))
        batch_op.drop_index('ix_outbox_events_unrelayed', postgresql_where=sa.text('relayed_at IS NULL'), sqlite_where=sa.text('relayed_at IS NULL'))
        batch_op.alter_column('model',
               existing_type=sa.VARCHAR(length=256),
               nullable=False)
        batch_op.drop_column('target')
