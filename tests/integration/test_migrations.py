"""Alembic revisions against a fresh database on each backend: they upgrade, downgrade to nothing
and upgrade again, and the schema they build is exactly the one the tables declare, so a change
to ``tables.py`` without a migration fails here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Index, Integer, MetaData, inspect, select, text
from sqlalchemy.engine import Connection

from registry.adapters.db import migrate
from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import chains_t, metadata
from tests.support import create_pg_database, drop_pg_database, sqlite_url

TABLES = {"registered_models", "audit_chains", "model_versions", "model_aliases", "audit_log",
          "outbox_events", "principals", "api_tokens", "transition_requests", "comments", "ui_sessions"}


@pytest.fixture
async def empty_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database no migration has touched."""
    url = sqlite_url(tmp_path) if backend == "sqlite" else await create_pg_database()
    yield url
    if backend == "postgresql":
        await drop_pg_database(url)


def _drift(conn: Connection, target: MetaData = metadata) -> list[Any]:
    # The same comparison options env.py uses for `migrate revision --autogenerate`.
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(context, target)


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _production_index(conn: Connection) -> dict[str, Any] | None:
    found = [ix for ix in inspect(conn).get_indexes("model_versions")
             if ix["name"] == "uq_model_versions_one_production"]
    return found[0] if found else None


async def _inspect(url: str) -> tuple[set[str], list[Any], dict[str, Any] | None, list[str]]:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            if not TABLES <= tables:
                return tables, [], None, []
            drift = await conn.run_sync(_drift)
            index = await conn.run_sync(_production_index)
            chains = list((await conn.execute(select(chains_t.c.id))).scalars())
            await conn.rollback()
            return tables, drift, index, chains
    finally:
        await engine.dispose()


async def _revision(url: str) -> str | None:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            if "alembic_version" not in await conn.run_sync(_tables):
                return None
            value = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            await conn.rollback()
            return value
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade_leaves_the_declared_schema(empty_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_url)
    tables, drift, index, chains = await _inspect(empty_url)
    assert TABLES <= tables
    assert drift == [], f"tables.py and the migrations disagree: {drift}"
    assert index is not None and index["unique"], "the one-production index is missing or not unique"
    assert chains == ["system"]
    head = await _revision(empty_url)
    assert head is not None

    await asyncio.to_thread(migrate.downgrade, empty_url, "base")
    tables, *_ = await _inspect(empty_url)
    assert tables & TABLES == set(), f"downgrade to base left {tables & TABLES}"
    assert await _revision(empty_url) is None

    await asyncio.to_thread(migrate.upgrade, empty_url)
    tables, drift, index, chains = await _inspect(empty_url)
    assert TABLES <= tables
    assert drift == [], f"tables.py and the migrations disagree after a round trip: {drift}"
    assert index is not None and index["unique"]
    assert chains == ["system"], "the system chain must be seeded exactly once"
    assert await _revision(empty_url) == head


async def test_upgrade_twice_is_a_no_op(empty_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_url)
    await asyncio.to_thread(migrate.upgrade, empty_url)
    tables, drift, _, chains = await _inspect(empty_url)
    assert TABLES <= tables and drift == [] and chains == ["system"]


async def test_the_drift_check_notices_a_table_change_without_a_migration(empty_url: str) -> None:
    """Control: the comparison above is not vacuous. A column and an index declared in the
    tables but absent from the migrations are reported."""
    await asyncio.to_thread(migrate.upgrade, empty_url)
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    versions = changed.tables["model_versions"]
    versions.append_column(Column("popularity", Integer, nullable=True))
    Index("ix_model_versions_popularity", versions.c.popularity)
    engine = create_engine(empty_url, null_pool=True)
    try:
        async with engine.connect() as conn:
            drift = await conn.run_sync(_drift, changed)
            await conn.rollback()
    finally:
        await engine.dispose()
    kinds = {(d[0], getattr(d[3] if d[0] == "add_column" else d[1], "name", None))
             for d in drift if isinstance(d, tuple)}
    assert ("add_column", "popularity") in kinds, drift
    assert ("add_index", "ix_model_versions_popularity") in kinds, drift
