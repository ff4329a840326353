"""Versions remember whether they last left production because a rollback replaced them
(``model_versions.left_by_rollback``): such a version is never a rollback target again, so a second
rollback walks one step further back instead of bringing back the version just rolled back.

Existing versions are marked from the audit log (never pruned, unlike the outbox): a version not in
production whose last exit from production (its latest ``model_version.stage_changed`` entry whose
``before.stage`` is production) was written by the same commit (same chain, request id and time)
as another version's move with trigger ``rollback``. Every other version starts unmarked.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A JSON member of an audit entry's canonical text (RFC 8785 JSON), per backend.
_MEMBER = {
    "postgresql": "(CAST({entry}.canonical AS json) -> '{outer}' ->> '{inner}')",
    "sqlite": "json_extract({entry}.canonical, '$.{outer}.{inner}')",
}

_MARK = """
UPDATE model_versions SET left_by_rollback = {true}
WHERE stage <> 'production' AND left_production_seq IS NOT NULL AND EXISTS (
  SELECT 1 FROM audit_log x JOIN audit_log r
    ON r.chain = x.chain AND r.request_id = x.request_id AND r.at = x.at
  WHERE x.chain = 'model:' || CAST(model_versions.model_id AS TEXT)
    AND x.version = model_versions.version
    AND x.action = 'model_version.stage_changed' AND {x_before} = 'production'
    AND x.seq = (SELECT max(l.seq) FROM audit_log l
                 WHERE l.chain = x.chain AND l.version = x.version
                   AND l.action = 'model_version.stage_changed' AND {l_before} = 'production')
    AND r.action = 'model_version.stage_changed' AND r.version <> x.version
    AND {r_trigger} = 'rollback')
"""


def upgrade() -> None:
    # A plain ALTER TABLE on both backends, never a batch rebuild: on SQLite, dropping the old
    # model_versions would delete (cascading) the artifacts and uploads that reference it.
    op.add_column('model_versions', sa.Column('left_by_rollback', sa.Boolean(),
                                              server_default=sa.false(), nullable=False))
    dialect = op.get_bind().dialect.name
    member = _MEMBER[dialect]
    op.execute(_MARK.format(
        true="true" if dialect == "postgresql" else "1",
        x_before=member.format(entry="x", outer="before", inner="stage"),
        l_before=member.format(entry="l", outer="before", inner="stage"),
        r_trigger=member.format(entry="r", outer="after", inner="trigger"),
    ))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later) for the same reason: no rebuild.
    op.drop_column('model_versions', 'left_by_rollback')
