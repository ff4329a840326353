"""Composition root: builds the engine, the unit-of-work factory and the authenticator."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.adapters.db.engine import create_engine
from registry.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from registry.config import Settings
from registry.services.tokens import Authenticator


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    uow: SqlUnitOfWorkFactory
    authenticator: Authenticator

    async def database_ready(self) -> bool:
        try:
            async with self.uow.read_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # any failure to reach the database means not ready
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()


def migrate(settings: Settings) -> None:
    """Apply pending migrations (outside any event loop)."""
    from registry.adapters.db.migrate import upgrade

    if settings.is_sqlite:
        settings.ensure_data_dir()
    upgrade(settings.database_url)


def ensure_schema(settings: Settings) -> None:
    """The embedded default migrates itself; PostgreSQL is migrated by `python -m registry migrate`
    (once, by the schema's owner), so replicas never race and the service can run as a non-owner."""
    from registry.adapters.db.migrate import is_current

    if settings.is_sqlite:
        migrate(settings)
    elif not is_current(settings.database_url):
        raise SchemaNotCurrentError(
            "the database is not at the latest schema revision: run `python -m registry migrate`")


class SchemaNotCurrentError(RuntimeError):
    """The PostgreSQL schema needs `python -m registry migrate` first."""


def build(settings: Settings) -> Container:
    if settings.is_sqlite:
        settings.ensure_data_dir()
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    uow = SqlUnitOfWorkFactory(engine)
    return Container(settings, engine, uow, Authenticator(uow))
