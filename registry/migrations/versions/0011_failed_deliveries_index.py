"""A partial index on failed deliveries (``ix_deliveries_failed``): each metrics scrape counts
them, and without it that count read every delivery kept (a scan of the whole delivered history,
in every process, at every scrape interval).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_deliveries_failed', 'deliveries', ['id'], unique=False,
                    postgresql_where=sa.text("state = 'failed'"), sqlite_where=sa.text("state = 'failed'"))


def downgrade() -> None:
    op.drop_index('ix_deliveries_failed', table_name='deliveries')
