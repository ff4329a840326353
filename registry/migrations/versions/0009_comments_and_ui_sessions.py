"""Comments on versions and on their transition requests (edited in place, deleted softly), and
the web UI's sign-in sessions (each acting with one API token, and gone with it). Two new tables;
nothing existing changes.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('comments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('author', sa.String(length=256), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_comments_model_id_registered_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['request_id'], ['transition_requests.id'], name=op.f('fk_comments_request_id_transition_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_comments')),
    sqlite_autoincrement=True
    )
    op.create_index('ix_comments_model_id_version', 'comments', ['model_id', 'version', 'id'], unique=False)
    op.create_index('ix_comments_request_id', 'comments', ['request_id', 'id'], unique=False)

    op.create_table('ui_sessions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_ui_sessions_token_id_api_tokens'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ui_sessions')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_ui_sessions_secret_hash')),
    sqlite_autoincrement=True
    )
    op.create_index(op.f('ix_ui_sessions_expires_at'), 'ui_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    # Plain drops on both backends: no other table references these two.
    op.drop_index(op.f('ix_ui_sessions_expires_at'), table_name='ui_sessions')
    op.drop_table('ui_sessions')
    op.drop_index('ix_comments_request_id', table_name='comments')
    op.drop_index('ix_comments_model_id_version', table_name='comments')
    op.drop_table('comments')
