"""Version checks, stage policies, transition requests, idempotency keys; when a version entered
its stage (backfilled from updated_at: never longer than the truth, so a time-in-staging gate errs
on the safe side)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key_hash', name=op.f('pk_idempotency_keys'))
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_keys_created_at'), ['created_at'], unique=False)

    op.create_table('stage_policies',
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('rules', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=256), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_stage_policies_model_id_registered_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'stage', name=op.f('pk_stage_policies'))
    )
    op.create_table('transition_requests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('to_stage', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('requested_by', sa.String(length=256), nullable=False),
    sa.Column('requester_principal', sa.String(length=256), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('approvals', sa.JSON(), nullable=False),
    sa.Column('decided_by', sa.String(length=256), nullable=True),
    sa.Column('decision_comment', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_transition_requests_model_id_registered_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transition_requests')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('transition_requests', schema=None) as batch_op:
        batch_op.create_index('ix_transition_requests_model_id', ['model_id', 'id'], unique=False)
        batch_op.create_index('uq_transition_requests_open', ['model_id', 'version', 'to_stage'], unique=True, postgresql_where=sa.text("state IN ('pending', 'approved')"), sqlite_where=sa.text("state IN ('pending', 'approved')"))

    op.create_table('version_checks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('details_url', sa.Text(), nullable=True),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.Column('reported_by', sa.String(length=256), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_version_checks_model_id_registered_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_version_checks')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('version_checks', schema=None) as batch_op:
        batch_op.create_index('ix_version_checks_version_name', ['model_id', 'version', 'name', 'id'], unique=False)

    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage_since', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE model_versions SET stage_since = updated_at")


def downgrade() -> None:
    # Rebuilt on SQLite: keep AUTOINCREMENT, so version row ids are never reused.
    with op.batch_alter_table('model_versions', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_column('stage_since')

    with op.batch_alter_table('version_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_version_checks_version_name')

    op.drop_table('version_checks')
    with op.batch_alter_table('transition_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_transition_requests_open', postgresql_where=sa.text("state IN ('pending', 'approved')"), sqlite_where=sa.text("state IN ('pending', 'approved')"))
        batch_op.drop_index('ix_transition_requests_model_id')

    op.drop_table('transition_requests')
    op.drop_table('stage_policies')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_created_at'))

    op.drop_table('idempotency_keys')
