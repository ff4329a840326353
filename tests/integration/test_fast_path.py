"""The fast data path on both backends: prebuilt statements on the driver (PostgreSQL) share the
unit of work's one transaction with Core statements; driver errors surface as the same domain
errors; rows hold what the Core path gives; the commit's one statement refuses what the columns
refuse (it never truncates)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from registry.adapters.db.changes import write_changes
from registry.adapters.db.engine import create_engine
from registry.adapters.db.repository import _ADD_VERSION, _GET_VERSION
from registry.adapters.db.tables import models_t, versions_t
from registry.bootstrap import Container, build
from registry.config import Settings
from registry.domain.errors import NotFoundError, TransientConflictError
from registry.domain.stages import Stage
from tests.integration.helpers import ALICE, audit_rows, chain_of, move, new_model, reader, register

AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _version_row(model_id: int, number: int) -> dict[str, object]:
    return {"model_id": model_id, "version": number, "stage": "none", "source": "s3://x", "run_id": None,
            "description": "", "tags": {"k": "v"}, "metrics": {"auc": 0.5}, "inputs": [],
            "revision": 1, "left_production_seq": None, "stage_since": AT, "created_at": AT,
            "updated_at": AT, "created_by": "alice"}


async def _count(c: Container, table: object) -> int:
    async with reader(c.engine).connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()  # type: ignore[arg-type]


async def test_driver_and_core_statements_roll_back_together_when_the_unit_does_not_commit(
    container: Container
) -> None:
    name = await new_model(container)
    versions_before = await _count(container, versions_t)
    models_before = await _count(container, models_t)
    with pytest.raises(RuntimeError):
        async with container.uow(ALICE) as uow:
            model = await uow.repo.lock_model(name)  # prebuilt, on the driver
            await uow.repo.db.scalar(_ADD_VERSION, **_version_row(model.id, 1))  # prebuilt
            await uow.repo.conn.execute(insert(models_t).values(  # Core, through SQLAlchemy
                name=name + "-core", description="", tags={}, last_version=0, created_at=AT,
                updated_at=AT, created_by="alice"))
            raise RuntimeError("leave without committing")
    assert await _count(container, versions_t) == versions_before
    assert await _count(container, models_t) == models_before


async def test_driver_and_core_statements_commit_together(container: Container) -> None:
    name = await new_model(container)
    async with container.uow(ALICE) as uow:
        model = await uow.repo.lock_model(name)
        await uow.repo.db.scalar(_ADD_VERSION, **_version_row(model.id, 1))
        await uow.repo.conn.execute(insert(models_t).values(
            name=name + "-core", description="", tags={}, last_version=0, created_at=AT, updated_at=AT,
            created_by="alice"))
        await uow.commit()
    async with container.uow(ALICE, write=False) as uow:
        assert await uow.repo.get_model(name + "-core") is not None
        model = await uow.repo.get_model(name)
        assert model is not None
        row = await uow.repo.db.first(_GET_VERSION, model_id=model.id, number=1)
    # Values come back as the Core path gives them: JSON decoded, times aware and in UTC.
    assert (row.tags, row.metrics, row.inputs, row.created_at) == ({"k": "v"}, {"auc": 0.5}, [], AT)
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset().total_seconds() == 0


async def test_a_unique_violation_on_the_driver_is_an_integrity_error_and_a_409_conflict(
    container: Container
) -> None:
    name = await new_model(container)
    [v1] = await register(container, name)
    async with container.uow(ALICE) as uow:
        model = await uow.repo.lock_model(name)
        with pytest.raises(IntegrityError):  # as the Core path raises it
            await uow.repo.db.scalar(_ADD_VERSION, **_version_row(model.id, v1.version))
    with pytest.raises(TransientConflictError):  # and out of a unit of work: 409 conflict
        async with container.uow(ALICE) as uow:
            model = await uow.repo.lock_model(name)
            await uow.repo.db.scalar(_ADD_VERSION, **_version_row(model.id, v1.version))


async def test_the_unit_of_work_is_usable_after_a_refused_driver_statement(container: Container) -> None:
    """A failed statement aborts the transaction; the connection goes back clean to the pool."""
    name = await new_model(container)
    await register(container, name)
    for _ in range(3):  # more than once: the same pooled connection is handed out again
        with pytest.raises(TransientConflictError):
            async with container.uow(ALICE) as uow:
                model = await uow.repo.lock_model(name)
                await uow.repo.db.scalar(_ADD_VERSION, **_version_row(model.id, 1))
    await move(container, name, 1, "staging")  # and a real move still works afterwards


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite does not enforce VARCHAR(n)
async def test_the_commit_statement_refuses_a_value_longer_than_its_column(container: Container) -> None:
    """PostgreSQL's one commit statement casts its arrays to unbounded types: a value too long
    for its column is an error, never cut to fit (a cast to VARCHAR(n) truncates silently)."""
    name = await new_model(container)
    chain = await chain_of(container, name)
    entries_before = len(await audit_rows(container, chain))
    with pytest.raises(DBAPIError):
        async with container.uow(ALICE) as uow:
            head = await uow.repo.lock_chain(chain)
            row = {"chain": chain, "seq": head.audit_seq + 1, "at": AT, "actor": "a" * 257,
                   "request_id": "r", "action": "model.updated", "model": name, "version": None,
                   "canonical": "{}", "prev_hash": head.audit_hash, "hash": "0" * 64}
            await write_changes(uow.repo.db, [row], [], [
                {"id": chain, "audit_seq": head.audit_seq + 1, "audit_hash": "0" * 64,
                 "event_seq": head.event_seq}])
    assert len(await audit_rows(container, chain)) == entries_before


async def test_a_locked_model_carries_its_stage_policies_and_they_follow_changes_in_the_unit(
    container: Container
) -> None:
    name = await new_model(container)
    async with container.uow(ALICE) as uow:
        model = await uow.repo.lock_model(name)
        assert await uow.repo.policy_rules(model, Stage.PRODUCTION) is None
        await uow.repo.put_policy(model, Stage.PRODUCTION, {"required_approvals": 1}, "alice", AT)
        # Set in this unit: read again, not from what the lock saw.
        assert await uow.repo.policy_rules(model, Stage.PRODUCTION) == {"required_approvals": 1}
        await uow.commit()
    async with container.uow(ALICE) as uow:
        model = await uow.repo.lock_model(name)
        assert uow.repo.locked_policies[(model.id, "production")] == {"required_approvals": 1}
        assert uow.repo.locked_policies[(model.id, "staging")] is None


async def test_a_lock_of_a_missing_model_is_not_found_and_leaves_nothing_open(
    container: Container
) -> None:
    name = await new_model(container)
    with pytest.raises(NotFoundError):
        async with container.uow(ALICE) as uow:
            await uow.repo.lock_model("no-such-model")
    # The refused unit gave its connection back rolled back: a writer of a real model is not
    # held up (on SQLite, the writers' queue was released).
    async with asyncio.timeout(5):
        [registered] = await register(container, name)
    assert registered.version == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_connection_returned_inside_a_transaction_is_never_handed_out_again(
    database_url: str, tmp_path: Path
) -> None:
    """A connection that came back to the pool with its asyncpg transaction still open (an error
    path that skipped the ROLLBACK) would turn the next writer's BEGIN into a SAVEPOINT and its
    COMMIT into a release of it: a 2xx for a write never committed. The pool must drop it."""
    settings = Settings.from_env({"REGISTRY_DATABASE_URL": database_url, "REGISTRY_DATA_DIR": str(tmp_path),
                                  "REGISTRY_DB_POOL_SIZE": "1"})  # one connection: the next writer gets it
    c = build(settings)
    try:
        conn = await c.engine.connect()
        leaked = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        await leaked.transaction().start()
        await conn.close()  # back to the pool, still inside the transaction
        name = await new_model(c)
        assert leaked.is_closed()  # dropped, not reused
    finally:
        await c.close()
    other = create_engine(database_url, null_pool=True)
    try:
        async with other.connect() as check:
            found = await check.execute(select(models_t.c.name).where(models_t.c.name == name))
            assert found.scalar_one_or_none() == name  # committed for everyone to see
    finally:
        await other.dispose()
