"""``python -m registry restore FILE``: an archive into an empty database, on either backend.

All rows go in within one transaction, checked against the archive's trailer (row counts and
SHA-256) before it commits: a damaged, truncated or refused archive leaves the database as it was.
The target must hold no registry data (a database that has only been migrated); one with no
tables at all is migrated first. Ids are kept (audit chains are named by model ids), and each
table's id counter is moved past every id the source ever handed out.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, func, insert, inspect, literal, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import chains_t, metadata
from registry.backup import archive, scope
from registry.backup.archive import ArchiveError
from registry.backup.export import BATCH, head_revision

SYSTEM_CHAIN = "system"
# What restore stores in a column the archive leaves out (scope.OMITTED).
FILLERS: dict[str, dict[str, Callable[[], Any]]] = {
    # Random, in the format of a SHA-256 hex digest: no secret hashes to it, so a restored token
    # cannot authenticate; the operator makes new ones (`token create --bootstrap`).
    "api_tokens": {"secret_hash": lambda: secrets.token_hex(32)},
}


class RestoreError(RuntimeError):
    """The archive cannot be restored into this database (nothing was written)."""


@dataclass
class RestoreSummary:
    path: Path
    schema_revision: str
    source_backend: str
    created_at: str
    migrated: bool = False  # the database had no tables and was migrated first
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def restore_archive(url: str, path: Path, *, batch: int = BATCH) -> RestoreSummary:
    """Restore ``path`` into the database at ``url``. Runs outside any event loop (migrating a
    blank database runs Alembic's own)."""
    from registry.adapters.db.migrate import upgrade

    started = time.monotonic()
    reader = archive.Reader(path)
    head = reader.header()
    revision = head_revision(url)
    if head["schema_revision"] != revision:
        raise RestoreError(
            f"{path} was written at schema revision {head['schema_revision']}, this release is "
            f"at {revision}: restore it with the release that wrote it, then upgrade that "
            "database with `python -m registry migrate`")
    summary = RestoreSummary(path, revision, str(head.get("source_backend")), str(head.get("created_at")))
    state = asyncio.run(_schema_state(url, revision))
    if state == "blank":
        upgrade(url)
        summary.migrated = True
    elif state != "current":
        raise RestoreError(f"the database is at schema revision {state}, the archive at {revision}: "
                           "restore into a new, empty database")
    asyncio.run(_load(url, reader, head, summary, batch))
    summary.seconds = time.monotonic() - started
    return summary


async def _schema_state(url: str, revision: str) -> str:
    """"blank" (no tables at all), "current" (at ``revision``), or the revision found."""
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            if not tables:
                return "blank"
            if "alembic_version" not in tables:
                return "none (it holds other tables)"
            found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
            return "current" if found == [revision] else ", ".join(found) or "none"
    finally:
        await engine.dispose()


async def _load(url: str, reader: archive.Reader, head: dict[str, Any], summary: RestoreSummary,
                batch: int) -> None:
    tables = scope.exported_tables()
    if head.get("tables") != [t.name for t in tables]:
        raise ArchiveError(f"{reader.path} lists the tables {head.get('tables')}, this release "
                           f"exports {[t.name for t in tables]}")
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE
            await _check_empty(conn)
            # The migration's genesis head of the system chain: the archive brings the real one.
            await conn.execute(delete(chains_t).where(chains_t.c.id == SYSTEM_CHAIN))
            last_ids = {}
            for table in tables:
                summary.rows[table.name], last_ids[table.name] = await _load_table(
                    conn, reader, table, batch)
            trailer = reader.next(hashed=False)
            if not isinstance(trailer, dict) or trailer.get("trailer") is not True:
                raise ArchiveError(f"{reader.path} has no trailer after its last table")
            reader.check_trailer(trailer, summary.rows)
            for table in tables:
                await _advance_counter(conn, table, last_ids[table.name])
    finally:
        await engine.dispose()


async def _check_empty(conn: AsyncConnection) -> None:
    """Refuse a database with registry data in any table (the migration's genesis system chain
    is the only row allowed)."""
    holding = []
    for table in metadata.sorted_tables:
        query = select(literal(1)).select_from(table).limit(1)
        if table is chains_t:
            query = query.where((chains_t.c.id != SYSTEM_CHAIN) | (chains_t.c.audit_seq != 0)
                                | (chains_t.c.event_seq != 0))
        if (await conn.execute(query)).first() is not None:
            holding.append(table.name)
    if holding:
        raise RestoreError(f"the database is not empty (rows in {', '.join(holding)}): restore "
                           "only into a new database that has been migrated, never served")


async def _load_table(conn: AsyncConnection, reader: archive.Reader, table: Table,
                      batch: int) -> tuple[int, int | None]:
    section = reader.next()
    columns = scope.archived_columns(table)
    if not isinstance(section, dict) or section.get("table") != table.name:
        raise ArchiveError(f"{reader.path}: expected the table {table.name}, found {str(section)[:80]}")
    if section.get("columns") != columns:
        raise ArchiveError(f"{reader.path}: {table.name} has the columns {section.get('columns')}, "
                           f"this release {columns}")
    decode = archive.decoder([table.c[name] for name in columns])
    fill = FILLERS.get(table.name, {})
    rows: list[dict[str, Any]] = []
    count = 0
    while True:
        line = reader.next()
        if isinstance(line, dict):
            break
        rows.append(decode(line) | {name: make() for name, make in fill.items()})
        if len(rows) >= batch:
            count += await _insert(conn, table, rows)
    count += await _insert(conn, table, rows)
    if line != {"end": table.name, "rows": count}:
        raise ArchiveError(f"{reader.path}: {table.name} ends with {str(line)[:80]} after {count} rows")
    last_id = section.get("last_id")
    return count, last_id if isinstance(last_id, int) and not isinstance(last_id, bool) else None


async def _insert(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert and empty ``rows``; returns how many there were."""
    if not rows:
        return 0
    await conn.execute(insert(table), rows)
    n = len(rows)
    rows.clear()
    return n


async def _advance_counter(conn: AsyncConnection, table: Table, last_id: int | None) -> None:
    """Make the table's next id follow every id the source handed out (its rows' included)."""
    column = table.autoincrement_column
    if column is None:
        return
    largest = (await conn.execute(select(func.max(column)))).scalar() or 0
    value = max(last_id or 0, largest)
    if conn.dialect.name == "sqlite":
        # AUTOINCREMENT's counter: set, or made when no row was inserted yet.
        params = {"t": table.name, "v": value}
        done = await conn.execute(text("UPDATE sqlite_sequence SET seq = :v WHERE name = :t"), params)
        if done.rowcount == 0 and value > 0:
            await conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"), params)
        return
    await conn.execute(text("SELECT setval(pg_get_serial_sequence(:t, :c), :v, :called)"),
                       {"t": table.name, "c": column.name, "v": max(value, 1), "called": value > 0})
