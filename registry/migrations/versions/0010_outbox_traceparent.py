"""Outbox events remember the trace of the request that wrote them
(``outbox_events.traceparent``, a W3C traceparent, nullable): their webhook and lineage deliveries,
perhaps sent later by another process, continue that trace. Existing events have none.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE on both backends (a nullable column without a default: no table
    # rewrite on PostgreSQL, no rebuild on SQLite, where a rebuild of outbox_events would have
    # to drop the table that deliveries reference).
    op.add_column('outbox_events', sa.Column('traceparent', sa.String(length=55), nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops an unindexed column in place, as PostgreSQL does.
    op.drop_column('outbox_events', 'traceparent')
