"""``python -m registry export FILE``: the whole registry into one archive (registry.backup.archive).

Read from one snapshot (PostgreSQL: a read-only REPEATABLE READ transaction; SQLite: one read
transaction over WAL), so the archive is consistent while the service keeps running: chain heads,
audit entries and the rows they describe are of one instant. Tables are read in primary-key order,
a batch at a time, never whole into memory.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry.adapters.db.engine import create_engine, is_sqlite
from registry.adapters.db.tables import deliveries_t, metadata
from registry.backup import archive, scope

BATCH = 1000


class ExportError(RuntimeError):
    """The registry cannot be exported as asked (nothing was written)."""


@dataclass
class ExportSummary:
    path: Path
    schema_revision: str
    backend: str
    rows: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)  # rows left out, per excluded table
    unfinished_deliveries: int = 0
    seconds: float = 0.0


def head_revision(url: str) -> str:
    """The latest schema revision this release knows."""
    from alembic.script import ScriptDirectory

    from registry.adapters.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


async def export_archive(url: str, path: Path, *, force: bool = False,
                         batch: int = BATCH) -> ExportSummary:
    """Write the registry at ``url`` to ``path`` (a new file, or replaced with ``force``). The
    archive appears at ``path`` only once complete."""
    if path.exists() and not force:
        raise ExportError(f"{path} exists: choose another name, or pass --force to replace it")
    started = time.monotonic()
    summary = ExportSummary(path, head_revision(url), "sqlite" if is_sqlite(url) else "postgresql")
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    engine = create_engine(url, null_pool=True)
    try:
        async with _snapshot(engine) as conn:
            await _check_revision(conn, summary.schema_revision)
            with archive.open_for_writing(partial) as out:
                await _write(conn, archive.Writer(out), summary, batch)
            await _count_left_out(conn, summary)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        await engine.dispose()
    summary.seconds = time.monotonic() - started
    return summary


@contextlib.asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Autocommit, so the engine does not BEGIN IMMEDIATE (a writer's lock): a plain BEGIN
            # takes a read snapshot at the first SELECT and blocks no writer under WAL.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("BEGIN")
        else:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ",
                                                postgresql_readonly=True)
        try:
            yield conn
        finally:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("ROLLBACK")
            else:
                await conn.rollback()


async def _check_revision(conn: AsyncConnection, head: str) -> None:
    try:
        found = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    except Exception:
        found = []
    if found != [head]:
        raise ExportError(f"the database is at schema revision {found or 'none'}, this release at "
                          f"{head}: run `python -m registry migrate` first (with this release)")


async def _write(conn: AsyncConnection, writer: archive.Writer, summary: ExportSummary,
                 batch: int) -> None:
    tables = scope.exported_tables()
    writer.write({"format": archive.FORMAT, "version": archive.VERSION,
                  "schema_revision": summary.schema_revision,
                  "created_at": datetime.now(UTC).isoformat(), "source_backend": summary.backend,
                  "tables": [t.name for t in tables]})
    for table in tables:
        summary.rows[table.name] = await _write_table(conn, writer, table, batch)
    writer.finish(summary.rows)


async def _write_table(conn: AsyncConnection, writer: archive.Writer, table: Table, batch: int) -> int:
    columns = [table.c[name] for name in scope.archived_columns(table)]
    writer.write({"table": table.name, "columns": [c.name for c in columns],
                  "last_id": await _last_id(conn, table)})
    encode = archive.encoder(columns)
    count = 0
    async for rows in _batches(conn, table, columns, batch):
        for row in rows:
            writer.write(encode(row))
        count += len(rows)
    writer.write({"end": table.name, "rows": count})
    return count


async def _batches(conn: AsyncConnection, table: Table, columns: list[Any],
                   batch: int) -> AsyncIterator[list[Any]]:
    """The rows in primary-key order, ``batch`` at a time (keyset paging: constant memory, and
    each query as cheap as the first)."""
    key = list(table.primary_key.columns)
    query = select(*columns).order_by(*key).limit(batch)
    after: list[Any] | None = None
    while True:
        page = query if after is None else query.where(_after(key, after))
        rows = (await conn.execute(page)).all()
        if rows:
            yield rows
        if len(rows) < batch:
            return
        after = [rows[-1]._mapping[c.name] for c in key]


def _after(key: list[Any], values: list[Any]) -> Any:
    """Rows whose key sorts after ``values`` ((a, b) > (x, y), spelled out for both backends)."""
    return or_(*[and_(*[key[j] == values[j] for j in range(i)], key[i] > values[i])
                 for i in range(len(key))])


async def _last_id(conn: AsyncConnection, table: Table) -> int | None:
    """The highest id the table's counter has handed out (None: no counter)."""
    column = table.autoincrement_column
    if column is None:
        return None
    if conn.dialect.name == "sqlite":
        seq = (await conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"),
                                  {"t": table.name})).scalar()
    else:
        # As pg_sequences reads it: USAGE on the sequence is enough (the service role that
        # `migrate --grant-to` sets up has no SELECT on it); NULL before the first nextval.
        seq = (await conn.execute(
            text("SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence(:t, :c) AS regclass))"),
            {"t": table.name, "c": column.name})).scalar()
    largest = (await conn.execute(select(func.max(column)))).scalar()
    return max(seq or 0, largest or 0)


async def _count_left_out(conn: AsyncConnection, summary: ExportSummary) -> None:
    for name in scope.EXCLUDED:
        summary.excluded[name] = (await conn.execute(
            select(func.count()).select_from(metadata.tables[name]))).scalar_one()
    summary.unfinished_deliveries = (await conn.execute(
        select(func.count()).select_from(deliveries_t).where(deliveries_t.c.state != "delivered"))
    ).scalar_one()
