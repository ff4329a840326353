"""Revision 0007 (``model_versions.left_by_rollback``) on a database that already holds a production
history. The history is written by the service itself (so the audit entries are exactly what it
writes), the column is then taken away by the downgrade to 0006, and the upgrade must mark again,
from the audit log alone, the versions whose last exit from production was a rollback; a version
that left by a rollback and later left normally is unmarked. The downgrade keeps every version row
and its files (no rebuild of model_versions cascading into artifacts on SQLite)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, select, text

from registry.adapters.db import migrate
from registry.adapters.db.tables import artifacts_t, models_t, versions_t
from registry.bootstrap import Container, build
from registry.config import Settings
from registry.services import transitions
from registry.services.commands import RollbackModel
from tests.integration.helpers import ALICE, move, new_model, register, to_production
from tests.integration.migration_helpers import drift as _drift
from tests.integration.migration_helpers import on_connection as _run
from tests.integration.migration_helpers import version_columns

HEAD = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()


def _container(url: str, tmp_path: Path) -> Container:
    return build(Settings.from_env({"REGISTRY_DATABASE_URL": url, "REGISTRY_DATA_DIR": str(tmp_path),
                                    "REGISTRY_LOG_FORMAT": "json"}))


async def _rollback(c: Container, name: str) -> int:
    result = await transitions.rollback_model(RollbackModel(name, "incident"), c.uow(ALICE))
    return result.version.version


async def _history(c: Container) -> tuple[str, str]:
    """Two models whose versions left production in every way there is; returns their names."""
    name = await new_model(c)
    await register(c, name, 5)
    for v in (1, 2, 3):
        await to_production(c, name, v)          # v1, v2 leave production normally
    assert await _rollback(c, name) == 2         # v3 leaves by a rollback
    await move(c, name, 3, "staging")            # ... is restored and archived from staging:
    await move(c, name, 3, "archived")           # its last exit from production stays the rollback
    assert await _rollback(c, name) == 1         # v2 leaves by a rollback
    await to_production(c, name, 4)              # v1 leaves normally
    assert await _rollback(c, name) == 1         # v4 leaves by a rollback
    await to_production(c, name, 4)              # ... returns through staging; v1 leaves normally
    await move(c, name, 4, "archived", "retired")  # v4 leaves normally: a target again
    await to_production(c, name, 5)              # in production, no incumbent

    other = await new_model(c)                   # a chain of its own: v2 left normally there
    await register(c, other, 2)
    for v in (1, 2):
        await to_production(c, other, v)
    await move(c, other, 2, "archived", "retired")
    return name, other


async def _flags(url: str) -> dict[tuple[str, int], tuple[str, bool]]:
    async def read(conn: Any) -> dict[tuple[str, int], tuple[str, bool]]:
        rows = await conn.execute(
            select(models_t.c.name, versions_t.c.version, versions_t.c.stage, versions_t.c.left_by_rollback)
            .join(models_t, models_t.c.id == versions_t.c.model_id))
        return {(r.name, r.version): (r.stage, bool(r.left_by_rollback)) for r in rows}
    return await _run(url, read)


async def _versions(url: str) -> list[tuple[Any, ...]]:
    """Every version row without the new column."""
    # The columns a 0006 database has too (0007 adds left_by_rollback, 0008 deleted_at).
    cols = [c for c in versions_t.c if c.name not in ("left_by_rollback", "deleted_at")]
    return await _run(url, lambda conn: _all(conn, select(*cols).order_by(versions_t.c.id)))


async def _all(conn: Any, stmt: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.execute(stmt)]


async def _schema(url: str) -> tuple[str | None, set[str], list[Any]]:
    async def read(conn: Any) -> tuple[str | None, set[str], list[Any]]:
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        return (revision, await conn.run_sync(version_columns),
                await conn.run_sync(_drift) if revision == HEAD else [])
    return await _run(url, read)


async def test_downgrade_then_upgrade_marks_the_versions_a_rollback_archived(
    url: str, backend: str, tmp_path: Path,
) -> None:
    await asyncio.to_thread(migrate.upgrade, url)
    c = _container(url, tmp_path)
    try:
        name, other = await _history(c)
    finally:
        await c.close()
    marked = await _flags(url)
    assert marked == {
        (name, 1): ("archived", False), (name, 2): ("archived", True), (name, 3): ("archived", True),
        (name, 4): ("archived", False), (name, 5): ("production", False),
        (other, 1): ("archived", False), (other, 2): ("archived", False),
    }, "the service marks what the migration must find"

    async def add_file(conn: Any) -> None:  # a file of a version: the downgrade must keep it
        version_id = (await conn.execute(select(versions_t.c.id).limit(1))).scalar_one()
        await conn.execute(insert(artifacts_t).values(
            version_id=version_id, path="model.onnx", size=3, sha256="a" * 64, key="k/model.onnx",
            uploaded_at=datetime(2026, 1, 1, tzinfo=UTC), uploaded_by="alice"))
        await conn.commit()
    await _run(url, add_file)
    kept = await _versions(url)

    await asyncio.to_thread(migrate.downgrade, url, "0006")

    revision, columns, _ = await _schema(url)
    assert revision == "0006" and "left_by_rollback" not in columns
    assert await _versions(url) == kept, "the downgrade changed versions"
    files = await _run(url, lambda conn: _all(conn, select(func.count()).select_from(artifacts_t)))
    assert files == [(1,)], "the downgrade lost a version's files"

    await asyncio.to_thread(migrate.upgrade, url)

    revision, columns, drift = await _schema(url)
    assert revision == HEAD and "left_by_rollback" in columns
    assert drift == [], f"tables.py and the migrations disagree: {drift}"
    assert await _versions(url) == kept, "the upgrade changed versions"
    assert await _flags(url) == marked

    # The service walks back from there: v4 (left last, normally), then v1; v2 and v3 never.
    c = _container(url, tmp_path)
    try:
        assert await _rollback(c, name) == 4
        assert await _rollback(c, name) == 1
        assert await _flags(url) == {**marked, (name, 5): ("archived", True), (name, 4): ("archived", True),
                                     (name, 1): ("production", False)}
    finally:
        await c.close()
