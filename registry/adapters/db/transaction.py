"""One unit of work's connection and its transaction, on either backend.

SQLite: SQLAlchemy's transaction (its engine emits ``BEGIN IMMEDIATE`` for writers).

PostgreSQL: the connection comes from the engine's autocommit view, so SQLAlchemy itself never
emits BEGIN or COMMIT, and the transaction is asyncpg's own on the driver connection beneath it.
Every statement of the unit (prebuilt queries run on the driver, and Core statements run through
SQLAlchemy alike) goes over that one connection, so all of them are inside that one transaction.
That lets the hot paths run prepared statements on the driver (PERF.md: a quarter of the CPU of
the same statement through the Core layer) without a second connection or a second transaction.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from registry import metrics
from registry.adapters.db.statements import DRIVER_ERRORS, Db, driver_errors


class Transaction:
    def __init__(self, conn: AsyncConnection, driver: asyncpg.Connection | None) -> None:
        self.conn = conn
        self.driver = driver
        self.db = Db(conn, driver)
        self._top: asyncpg.transaction.Transaction | AsyncTransaction | None = None
        self._savepoint: asyncpg.transaction.Transaction | AsyncTransaction | None = None
        self._savepoint_active = False

    @classmethod
    async def open(cls, engine: AsyncEngine, *, write: bool) -> Transaction:
        """A connection from ``engine`` (PostgreSQL: an autocommit view), in a transaction if
        ``write``. Reads run in autocommit: one round trip a statement."""
        metrics.POOL.waiting += 1
        try:
            conn = await engine.connect()
        finally:
            metrics.POOL.waiting -= 1
        try:
            if conn.dialect.name == "sqlite":
                tx = cls(conn, None)
                if write:
                    tx._top = await conn.begin()
                return tx
            # Just checked out, so the pooled connection is there: no I/O (and no greenlet
            # hop, unlike get_raw_connection) to reach its driver.
            driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            tx = cls(conn, driver)
            if write:
                top = driver.transaction()
                with driver_errors("BEGIN"):
                    await top.start()
                tx._top = top
            return tx
        except BaseException:
            await conn.close()
            raise

    async def savepoint(self) -> None:
        if self.driver is None:
            self._savepoint = await self.conn.begin_nested()
        else:
            sp = self.driver.transaction()  # nested in the top one: a SAVEPOINT
            with driver_errors("SAVEPOINT"):
                await sp.start()
            self._savepoint = sp
        self._savepoint_active = True

    @property
    def in_savepoint(self) -> bool:
        if isinstance(self._savepoint, AsyncTransaction):
            return self._savepoint.is_active
        return self._savepoint_active

    async def rollback_savepoint(self) -> None:
        assert self._savepoint is not None
        self._savepoint_active = False
        with driver_errors("ROLLBACK TO SAVEPOINT"):
            await self._savepoint.rollback()

    async def release_savepoint(self) -> None:
        assert self._savepoint is not None
        self._savepoint_active = False
        with driver_errors("RELEASE SAVEPOINT"):
            await self._savepoint.commit()

    async def commit(self) -> None:
        if self.driver is None:
            await self.conn.commit()
        else:
            assert self._top is not None
            top, self._top = self._top, None
            with driver_errors("COMMIT"):
                await top.commit()

    async def close(self, *, broken: bool = False) -> None:
        """Roll back whatever did not commit and give the connection back (or drop it, if the
        rollback itself failed). A ``broken`` connection is dropped at once: after a timeout
        its statement may still be in flight, and a ROLLBACK would first wait for that."""
        if broken:
            self._top = None
            if self.driver is not None:
                self.driver.terminate()  # at once: a polite close would wait on the stalled socket
            await self.conn.invalidate()
        elif self.driver is not None:  # SQLite: closing the connection rolls back
            top, self._top = self._top, None
            try:
                if top is not None:
                    await top.rollback()
                elif self.driver.is_closed():
                    await self.conn.invalidate()
            except DRIVER_ERRORS:
                await self.conn.invalidate()
        await self.conn.close()
