"""What the migration tests share: looking at a database's schema on a connection of its own."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import metadata


def drift(conn: Connection) -> list[Any]:
    """How the schema differs from tables.py (empty when they agree)."""
    return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


def tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def on_connection(url: str, fn: Any) -> Any:
    """``await fn(conn)`` on a fresh connection, rolled back afterwards."""
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            result = await fn(conn)
            await conn.rollback()
            return result
    finally:
        await engine.dispose()


def version_columns(conn: Connection) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns("model_versions")}
