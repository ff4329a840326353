"""Whether the database answers, within a deadline whatever it does (``/readyz``).

PostgreSQL is asked over one connection of the probe's own, not the pool's: a stalled database
can hold every pooled connection, and a readiness check that queues behind them answers late or
never. However many callers ask at once, one probe is in flight and they share its answer.
"""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.adapters.db.engine import connect_driver


class ReadinessProbe:
    def __init__(self, engine: AsyncEngine, deadline: float = 1.5) -> None:
        self._engine = engine
        self._deadline = deadline
        self._conn: asyncpg.Connection | None = None
        self._inflight: asyncio.Future[bool] | None = None

    async def ready(self) -> bool:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._probe())
        return await asyncio.shield(self._inflight)

    async def _probe(self) -> bool:
        try:
            async with asyncio.timeout(self._deadline):
                if self._engine.dialect.name == "sqlite":
                    async with self._engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                    return True
                if self._conn is None or self._conn.is_closed():
                    url = self._engine.url.render_as_string(hide_password=False)
                    self._conn = await connect_driver(url, self._deadline)
                await self._conn.fetchval("SELECT 1")
            return True
        except Exception:  # any failure to reach the database means not ready
            await self.close()
            return False

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # never waits on a stalled socket
