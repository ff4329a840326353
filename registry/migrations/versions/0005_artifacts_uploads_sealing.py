"""Artifact files and presigned uploads; when a version's artifacts were sealed and their
manifest's digest. Versions that ever left ``none`` (withdrawn ones too) are sealed as holding no
files: they moved before artifacts existed, and a version that left ``none`` must never gain files.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('artifact_uploads',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('path', sa.String(length=1024).with_variant(sa.String(length=1024, collation='C'), 'postgresql'), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=256), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_artifact_uploads_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifact_uploads')),
    sa.UniqueConstraint('version_id', 'path', name='uq_artifact_uploads_version_id_path'),
    sqlite_autoincrement=True
    )
    op.create_table('artifacts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('version_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('path', sa.String(length=1024).with_variant(sa.String(length=1024, collation='C'), 'postgresql'), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=1200), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('uploaded_by', sa.String(length=256), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_artifacts_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifacts')),
    sa.UniqueConstraint('version_id', 'path', name='uq_artifacts_version_id_path'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sealed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('manifest_digest', sa.String(length=71), nullable=True))
    # Versions that ever left none (now past it, or withdrawn back: their audit chain has a stage
    # change) are sealed holding no files. The digest is that of {"files":[]} in canonical JSON.
    op.execute(
        "UPDATE model_versions SET sealed_at = updated_at, manifest_digest = "
        "'sha256:602e35a92eec4bc0a2ec6ae113f07bfc6933322fb69fe8dee416e5a67217e2a2' "
        "WHERE stage <> 'none' OR EXISTS (SELECT 1 FROM audit_log a "
        "WHERE a.chain = 'model:' || CAST(model_versions.model_id AS TEXT) "
        "AND a.version = model_versions.version AND a.action = 'model_version.stage_changed')")


def downgrade() -> None:
    # The children first: on SQLite, rebuilding model_versions drops it, and with foreign keys on
    # that deletes (cascading) whatever still references it.
    op.drop_table('artifacts')
    op.drop_table('artifact_uploads')
    # Rebuilt on SQLite: keep AUTOINCREMENT, so version row ids are never reused.
    with op.batch_alter_table('model_versions', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_column('manifest_digest')
        batch_op.drop_column('sealed_at')
