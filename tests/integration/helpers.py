"""Helpers for the integration suite: drive the services as a caller would, and read the rows
they wrote straight from the database (bypassing the repository), so assertions check what was
stored, not what the code believes it stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.adapters.db.tables import audit_t, chains_t, models_t, outbox_t, versions_t
from registry.bootstrap import Container
from registry.domain.model import ModelVersion
from registry.services import models, transitions, versions
from registry.services.commands import (
    MISSING,
    CreateModel,
    RegisterModelVersion,
    TransitionModelVersion,
)
from registry.services.ports import Actor
from registry.services.transitions import TransitionResult
from tests.conftest import unique

ALICE = Actor("alice", "req-alice")
BOB = Actor("bob", "req-bob")


def reader(engine: AsyncEngine) -> AsyncEngine:
    """Reads in autocommit: on SQLite a plain connection would BEGIN IMMEDIATE and queue behind
    (or block) writers."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def new_model(c: Container, name: str | None = None, actor: Actor = ALICE) -> str:
    name = name or unique()
    await models.create_model(CreateModel(name=name), c.uow(actor))
    return name


async def register(c: Container, name: str, count: int = 1, actor: Actor = ALICE,
                   **fields: Any) -> list[ModelVersion]:
    return [await versions.register_model_version(
        RegisterModelVersion(model=name, source=f"s3://bucket/{name}", **fields), c.uow(actor))
        for _ in range(count)]


async def move(c: Container, name: str, version: int, to_stage: str, comment: str | None = None,
               actor: Actor = ALICE, expected_stage: str | None = None,
               expected_production_version: Any = MISSING,
               if_match: str | None = None) -> TransitionResult:
    cmd = TransitionModelVersion(model=name, version=version, to_stage=to_stage, comment=comment,
                                 expected_stage=expected_stage,
                                 expected_production_version=expected_production_version,
                                 if_match=if_match)
    return await transitions.transition_model_version(cmd, c.uow(actor))


async def to_production(c: Container, name: str, version: int, comment: str | None = None,
                        actor: Actor = ALICE) -> TransitionResult:
    await move(c, name, version, "staging", actor=actor)
    return await move(c, name, version, "production", comment=comment, actor=actor)


async def model_id(c: Container, name: str) -> int:
    async with reader(c.engine).connect() as conn:
        return (await conn.execute(select(models_t.c.id).where(models_t.c.name == name))).scalar_one()


async def chain_of(c: Container, name: str) -> str:
    return f"model:{await model_id(c, name)}"


async def stages(c: Container, name: str) -> dict[int, str]:
    """{version: stage} as stored."""
    mid = await model_id(c, name)
    async with reader(c.engine).connect() as conn:
        rows = await conn.execute(select(versions_t.c.version, versions_t.c.stage)
                                  .where(versions_t.c.model_id == mid))
        return {r.version: r.stage for r in rows}


async def audit_rows(c: Container, chain: str) -> list[dict[str, Any]]:
    async with reader(c.engine).connect() as conn:
        rows = await conn.execute(select(audit_t).where(audit_t.c.chain == chain)
                                  .order_by(audit_t.c.seq))
        return [r._asdict() for r in rows]


async def outbox_rows(c: Container, chain: str) -> list[dict[str, Any]]:
    async with reader(c.engine).connect() as conn:
        rows = await conn.execute(select(outbox_t).where(outbox_t.c.chain == chain)
                                  .order_by(outbox_t.c.sequence))
        return [r._asdict() for r in rows]


async def execute(c: Container, sql: str, **params: Any) -> int:
    """Run one write statement directly in its own transaction (tampering, bypassing services).
    ``audit_log`` is append-only in the database: edit it through ``tests.support.tamper``."""
    async with c.engine.begin() as conn:
        return (await conn.execute(text(sql), params)).rowcount


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused or failed write must leave untouched."""

    audit: int
    outbox: int
    version_rows: list[tuple[Any, ...]]
    model_rows: list[tuple[Any, ...]]
    chain_heads: list[tuple[Any, ...]]


async def snapshot(c: Container) -> Snapshot:
    async with reader(c.engine).connect() as conn:
        async def count(table: Any) -> int:
            return (await conn.execute(select(func.count()).select_from(table))).scalar_one()

        async def rows(table: Any, *order: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.execute(select(table).order_by(*order))]

        return Snapshot(
            audit=await count(audit_t),
            outbox=await count(outbox_t),
            version_rows=await rows(versions_t, versions_t.c.id),
            model_rows=await rows(models_t, models_t.c.id),
            chain_heads=await rows(chains_t, chains_t.c.id),
        )
