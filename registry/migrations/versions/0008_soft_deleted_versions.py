"""Versions can be deleted softly (``model_versions.deleted_at``), as MLflow's API deletes them: a
deleted version is hidden from reads, lists and searches, its number is never handed out again (the
model's counter already guarantees that) and its audit entries stay. Nothing existing is deleted.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE on both backends, never a batch rebuild: on SQLite, dropping the old
    # model_versions would delete (cascading) the artifacts and uploads that reference it.
    op.add_column("model_versions", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later) for the same reason: no rebuild. The
    # versions deleted softly come back into view: the older schema has no way to hide them.
    op.drop_column("model_versions", "deleted_at")
