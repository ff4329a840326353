"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_chains',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('model_name', sa.String(length=256), nullable=True),
    sa.Column('audit_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('audit_hash', sa.String(length=64), nullable=False),
    sa.Column('event_seq', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chains')),
    sa.UniqueConstraint('model_id', name=op.f('uq_audit_chains_model_id'))
    )
    with op.batch_alter_table('audit_chains', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_chains_model_name'), ['model_name'], unique=False)

    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('canonical', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('chain', 'seq', name='uq_audit_log_chain_seq'),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_chain_version', ['chain', 'version'], unique=False)

    op.create_table('outbox_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=256), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('relayed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_events')),
    sa.UniqueConstraint('chain', 'sequence', name='uq_outbox_events_chain_sequence'),
    sa.UniqueConstraint('event_id', name=op.f('uq_outbox_events_event_id')),
    sqlite_autoincrement=True,
    )
    op.create_table('principals',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_principals')),
    sa.UniqueConstraint('name', name=op.f('uq_principals_name')),
    sqlite_autoincrement=True,
    )
    op.create_table('registered_models',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=256).with_variant(sa.String(length=256, collation='C'), 'postgresql'), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('last_version', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=256), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registered_models')),
    sa.UniqueConstraint('name', name=op.f('uq_registered_models_name')),
    sqlite_autoincrement=True,
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('principal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('models', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_api_tokens_principal_id_principals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_api_tokens_secret_hash')),
    sqlite_autoincrement=True,
    )
    op.create_table('model_aliases',
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('alias', sa.String(length=255), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_model_aliases_model_id_registered_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'alias', name=op.f('pk_model_aliases'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('run_id', sa.String(length=256), nullable=True),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('revision', sa.Integer(), server_default='1', nullable=False),
    sa.Column('left_production_seq', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=256), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_model_versions_model_id_registered_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model_id', 'version', name='uq_model_versions_model_id_version'),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index('ix_model_versions_model_id_run_id', ['model_id', 'run_id'], unique=False)
        batch_op.create_index('ix_model_versions_model_id_stage', ['model_id', 'stage'], unique=False)
        # At most one production version per model, checked by the database on both backends.
        batch_op.create_index('uq_model_versions_one_production', ['model_id'], unique=True, postgresql_where=sa.text("stage = 'production'"), sqlite_where=sa.text("stage = 'production'"))

    # The system chain (tokens, subscriptions, policies) exists from the start.
    chains = sa.table('audit_chains', sa.column('id', sa.String), sa.column('audit_seq', sa.BigInteger),
                      sa.column('audit_hash', sa.String), sa.column('event_seq', sa.BigInteger),
                      sa.column('created_at', sa.DateTime(timezone=True)))
    op.bulk_insert(chains, [{'id': 'system', 'audit_seq': 0, 'audit_hash': '0' * 64, 'event_seq': 0,
                             'created_at': datetime(2026, 1, 1, tzinfo=UTC)}])


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index('uq_model_versions_one_production', postgresql_where=sa.text("stage = 'production'"), sqlite_where=sa.text("stage = 'production'"))
        batch_op.drop_index('ix_model_versions_model_id_stage')
        batch_op.drop_index('ix_model_versions_model_id_run_id')

    op.drop_table('model_versions')
    op.drop_table('model_aliases')
    op.drop_table('api_tokens')
    op.drop_table('registered_models')
    op.drop_table('principals')
    op.drop_table('outbox_events')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_chain_version')

    op.drop_table('audit_log')
    with op.batch_alter_table('audit_chains', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_chains_model_name'))

    op.drop_table('audit_chains')
