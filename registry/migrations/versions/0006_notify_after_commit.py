"""The outbox's NOTIFY leaves the writers' transactions: the statement trigger is dropped, and
the service sends NOTIFY after commit (adapters/db/bell.py). A notifying transaction takes one
database-wide lock at commit and holds it through the WAL flush, so the trigger serialised the
commits of every writer.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
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
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS outbox_events_notify ON outbox_events")
        op.execute("DROP FUNCTION IF EXISTS outbox_events_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_NOTIFY_FUNCTION)
        op.execute("CREATE TRIGGER outbox_events_notify AFTER INSERT ON outbox_events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify()")
