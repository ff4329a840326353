"""Engines for both backends, with SQLite made safe for concurrent writers.

SQLite: WAL, a busy timeout, foreign keys on, and ``BEGIN IMMEDIATE`` for every write transaction
(so two writers never both read and then fail to upgrade their lock). Reads run in autocommit on
both backends: a single-statement read then costs one round trip, not three.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from registry import metrics

SQLITE_BUSY_TIMEOUT_MS = 30_000
log = structlog.get_logger("registry.db")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: opening a connection, waiting for a pooled one, one answer (client side), and
    PostgreSQL's own ``statement_timeout``. None leaves the driver's or server's default."""

    connect: float | None = None
    pool: float | None = None
    command: float | None = None
    statement: float | None = None


def create_engine(url: str, *, pool_size: int = 20, null_pool: bool = False,
                  timeouts: Timeouts = Timeouts()) -> AsyncEngine:
    """``pool_size``: PostgreSQL connections at most, opened on demand and kept. No overflow:
    an overflow connection is closed when it comes back, so under steady load past the pool
    every request paid for a new server process (reads at 32 clients fell by a third).

    ``timeouts`` bound every wait on PostgreSQL, so a stalled database (packets unanswered,
    sockets open) ends each wait in an error the unit of work turns into 503, instead of a
    request that hangs until the pool's default 30 s and then fails as a bug."""
    sqlite = is_sqlite(url)
    kwargs: dict[str, Any] = {} if sqlite else {"connect_args": _asyncpg_args(timeouts)}
    if null_pool:
        kwargs["poolclass"] = NullPool
    elif not sqlite:
        kwargs.update(pool_size=pool_size, max_overflow=0, pool_pre_ping=False)
        if timeouts.pool is not None:
            kwargs["pool_timeout"] = timeouts.pool
    if sqlite:
        _create_private(make_url(url).database)
    engine = create_async_engine(url, **kwargs)
    if sqlite:
        _configure_sqlite(engine)
    else:
        _refuse_open_transactions(engine)
        if not null_pool:
            metrics.POOL_SIZE.set(pool_size)
    metrics.watch_pool(engine.sync_engine.pool)
    return engine


def _refuse_open_transactions(engine: AsyncEngine) -> None:
    """Never hand out a connection still inside a transaction. Units of work run their
    transactions on asyncpg directly, which SQLAlchemy's reset-on-return does not see; a
    connection that came back without its ROLLBACK (a bug on an error path, or one the garbage
    collector returned) would make the next writer's BEGIN a mere SAVEPOINT, and its COMMIT a
    release of it: a 2xx for a write that is never committed. The pool drops such a connection
    and hands out another (DisconnectionError); the check reads a flag, with no round trip."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_in_transaction():
            log.error("pooled_connection_in_transaction", detail="dropped; a fresh one is used")
            raise DisconnectionError("a pooled connection was still inside a transaction")


def _create_private(database: str | None) -> None:
    """Create the embedded database file readable by its owner only, as the secret key beside
    it: it holds token hashes and encrypted webhook secrets. SQLite gives its -wal and -shm
    files the main file's mode. An existing file keeps the mode its operator gave it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # e.g. a missing folder: SQLite will report it with its own words


async def connect_driver(url: str, timeout: float) -> Any:
    """A plain asyncpg connection to the database of a SQLAlchemy URL, outside the pool (the
    workers' LISTEN, the readiness probe). Its query parameters are SQLAlchemy's, not asyncpg's."""
    import asyncpg

    u = make_url(url)
    return await asyncpg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                                 database=u.database, timeout=timeout)


def _asyncpg_args(timeouts: Timeouts) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if timeouts.connect is not None:
        args["timeout"] = timeouts.connect
    if timeouts.command is not None:
        args["command_timeout"] = timeouts.command
    if timeouts.statement is not None:
        args["server_settings"] = {"statement_timeout": str(max(1, round(timeouts.statement * 1000)))}
    return args


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver, so that BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
