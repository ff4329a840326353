"""The audit table is append-only in the database itself (migration 0002): triggers refuse UPDATE
and DELETE of ``audit_log`` rows on both backends, and TRUNCATE on PostgreSQL, whoever connects.
An attacker who owns the tables can still switch the triggers off (``tests.support.tamper``
does); then verify reports the edited row."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from registry.adapters.db import migrate
from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import audit_t
from registry.bootstrap import Container
from registry.services import audit
from tests.integration.helpers import ALICE, BOB, audit_rows, chain_of, move, new_model, reader, register
from tests.support import tamper

TRIGGER_REVISION = "0002"


async def _model_with_history(c: Container) -> tuple[str, str]:
    """Five entries: created, two versions, a submit by bob, a promote by alice."""
    name = await new_model(c)
    await register(c, name, 2)
    await move(c, name, 1, "staging", actor=BOB)
    await move(c, name, 1, "production", comment="ship")
    return name, await chain_of(c, name)


async def _all_audit_rows(c: Container) -> list[tuple[Any, ...]]:
    async with reader(c.engine).connect() as conn:
        return [tuple(r) for r in await conn.execute(select(audit_t).order_by(audit_t.c.id))]


async def _refused(url: str, sql: str, **params: Any) -> DBAPIError:
    """Run ``sql`` as any client would, on a connection of its own; the database must refuse."""
    engine = create_engine(url, null_pool=True)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with engine.begin() as conn:
                await conn.execute(text(sql), params)
    finally:
        await engine.dispose()
    assert caught.value.orig is not None, "the refusal must come from the database driver"
    return caught.value


async def _allowed(url: str, sql: str, **params: Any) -> int:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.begin() as conn:
            return (await conn.execute(text(sql), params)).rowcount
    finally:
        await engine.dispose()


async def _verify(c: Container, name: str | None) -> audit.Verification:
    return await audit.verify_audit(name, c.uow(ALICE, write=False))


UPDATES = [
    "UPDATE audit_log SET actor = 'mallory' WHERE chain = :chain AND seq = :seq",
    "UPDATE audit_log SET canonical = replace(canonical, '\"ship\"', '\"yolo\"') "
    "WHERE chain = :chain AND seq = :seq",
    "UPDATE audit_log SET hash = prev_hash WHERE chain = :chain AND seq = :seq",
]


@pytest.mark.parametrize("sql", UPDATES, ids=["actor", "canonical", "hash"])
async def test_update_of_an_audit_row_is_refused(container: Container, database_url: str,
                                                 sql: str) -> None:
    _, chain = await _model_with_history(container)
    before = await _all_audit_rows(container)

    await _refused(database_url, sql, chain=chain, seq=5)

    assert await _all_audit_rows(container) == before, "a refused UPDATE changed the audit log"
    assert await _verify(container, None) == audit.Verification(True, len(before), None)


async def test_update_of_every_audit_row_is_refused(container: Container, database_url: str) -> None:
    await _model_with_history(container)
    before = await _all_audit_rows(container)
    await _refused(database_url, "UPDATE audit_log SET actor = 'mallory'")
    assert await _all_audit_rows(container) == before


async def test_delete_of_an_audit_row_is_refused(container: Container, database_url: str) -> None:
    name, chain = await _model_with_history(container)
    before = await _all_audit_rows(container)

    await _refused(database_url, "DELETE FROM audit_log WHERE chain = :chain AND seq = :seq",
                   chain=chain, seq=3)
    await _refused(database_url, "DELETE FROM audit_log WHERE chain = :chain AND seq = :seq",
                   chain=chain, seq=5)

    assert await _all_audit_rows(container) == before, "a refused DELETE changed the audit log"
    assert [r["seq"] for r in await audit_rows(container, chain)] == [1, 2, 3, 4, 5]
    assert (await _verify(container, name)).ok


async def test_emptying_the_audit_table_with_delete_is_refused(container: Container,
                                                               database_url: str) -> None:
    """A DELETE without WHERE (which SQLite would otherwise run as a truncate) is refused too."""
    await _model_with_history(container)
    before = await _all_audit_rows(container)
    await _refused(database_url, "DELETE FROM audit_log")
    assert await _all_audit_rows(container) == before


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_truncate_of_the_audit_table_is_refused_on_postgresql(container: Container,
                                                                    database_url: str) -> None:
    name, _ = await _model_with_history(container)
    before = await _all_audit_rows(container)

    await _refused(database_url, "TRUNCATE audit_log")
    await _refused(database_url, "TRUNCATE TABLE audit_log RESTART IDENTITY CASCADE")

    assert await _all_audit_rows(container) == before, "a refused TRUNCATE emptied the audit log"
    assert (await _verify(container, name)).ok


async def test_appending_still_works(container: Container) -> None:
    """The triggers guard the rows already written, not the writing of new ones."""
    name, chain = await _model_with_history(container)
    await register(container, name)
    await move(container, name, 1, "archived")
    rows = await audit_rows(container, chain)
    assert [r["seq"] for r in rows] == list(range(1, 8))
    assert await _verify(container, name) == audit.Verification(True, 7, None)


async def test_a_bypassed_edit_is_reported_by_verify(container: Container, database_url: str) -> None:
    name, chain = await _model_with_history(container)
    other, _ = await _model_with_history(container)

    assert await tamper(database_url, "UPDATE audit_log SET actor = 'mallory' "
                                      "WHERE chain = :chain AND seq = 4", chain=chain) == [1]
    assert [r["actor"] for r in await audit_rows(container, chain)][3] == "mallory", "not bypassed"

    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_chain, verdict.first_bad_seq, verdict.checked) == (
        False, chain, 4, 5)
    assert (await _verify(container, other)).ok, "another model's chain is unaffected"
    everything = await _verify(container, None)
    assert (everything.ok, everything.first_bad_chain, everything.first_bad_seq) == (False, chain, 4)


async def test_a_bypassed_delete_is_reported_by_verify(container: Container, database_url: str) -> None:
    name, chain = await _model_with_history(container)
    assert await tamper(database_url, "DELETE FROM audit_log WHERE chain = :chain AND seq = 3",
                        chain=chain) == [1]
    assert [r["seq"] for r in await audit_rows(container, chain)] == [1, 2, 4, 5], "not bypassed"
    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_chain, verdict.first_bad_seq, verdict.checked) == (
        False, chain, 4, 4)


async def test_a_bypassed_tail_delete_is_reported_by_verify(container: Container,
                                                            database_url: str) -> None:
    """Removing the newest entries leaves the chain's head pointing past its last row."""
    name, chain = await _model_with_history(container)
    assert await tamper(database_url, "DELETE FROM audit_log WHERE chain = :chain AND seq >= 4",
                        chain=chain) == [2]
    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_chain, verdict.first_bad_seq) == (False, chain, 4)


async def test_the_bypass_puts_the_triggers_back(container: Container, database_url: str) -> None:
    """The bypass lasts one transaction: afterwards the same edits are refused again."""
    _, chain = await _model_with_history(container)
    triggers = await _triggers(database_url)
    assert triggers, "no triggers on audit_log"

    assert await tamper(database_url, "UPDATE audit_log SET actor = 'mallory' "
                                      "WHERE chain = :chain AND seq = 2", chain=chain) == [1]

    assert await _triggers(database_url) == triggers, "the bypass did not restore the triggers"
    before = await _all_audit_rows(container)
    await _refused(database_url, UPDATES[0], chain=chain, seq=5)
    await _refused(database_url, "DELETE FROM audit_log WHERE chain = :chain AND seq = 5", chain=chain)
    assert await _all_audit_rows(container) == before


async def test_a_failed_bypass_leaves_the_triggers_and_rows_as_they_were(
    container: Container, database_url: str,
) -> None:
    _, chain = await _model_with_history(container)
    triggers = await _triggers(database_url)
    before = await _all_audit_rows(container)

    with pytest.raises(DBAPIError):
        await tamper(database_url,
                     "DELETE FROM audit_log WHERE chain = :chain AND seq = 5",
                     "UPDATE audit_log SET no_such_column = 1", chain=chain)

    assert await _triggers(database_url) == triggers
    assert await _all_audit_rows(container) == before
    await _refused(database_url, "DELETE FROM audit_log WHERE chain = :chain AND seq = 5", chain=chain)


async def test_the_triggers_come_with_revision_0002(container: Container, database_url: str) -> None:
    """Downgrading below the trigger migration makes the table writable again; upgrading guards
    it again. The rows themselves are untouched either way."""
    _, chain = await _model_with_history(container)
    await container.engine.dispose()  # no pooled connection holds the schema while it changes
    assert TRIGGER_REVISION in await _revisions(database_url)
    before = await _all_audit_rows(container)

    await asyncio.to_thread(migrate.downgrade, database_url, "0001")
    assert await _triggers(database_url) == []
    assert await _all_audit_rows(container) == before
    assert await _allowed(database_url, "UPDATE audit_log SET actor = actor "
                                        "WHERE chain = :chain AND seq = 5", chain=chain) == 1

    await container.engine.dispose()
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await _triggers(database_url), "upgrading again did not reinstall the triggers"
    await _refused(database_url, UPDATES[0], chain=chain, seq=5)
    await _refused(database_url, "DELETE FROM audit_log WHERE chain = :chain AND seq = 5", chain=chain)
    assert await _all_audit_rows(container) == before


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_postgresql_triggers_cover_update_delete_and_truncate(database_url: str) -> None:
    """Row-level BEFORE UPDATE and DELETE, statement-level BEFORE TRUNCATE, all enabled."""
    kinds = await _pg_trigger_kinds(database_url)
    assert kinds["row"] >= {"UPDATE", "DELETE"}, kinds
    assert "TRUNCATE" in kinds["statement"], kinds
    assert kinds["timing"] == {"BEFORE"}, kinds
    assert kinds["enabled"] <= {"O", "A"}, kinds


# -- catalog reads ----------------------------------------------------------------------------------


async def _triggers(url: str) -> list[tuple[Any, ...]]:
    """The user triggers on audit_log with their definition (and, on PostgreSQL, enabled state)."""
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                rows = await conn.execute(text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND lower(tbl_name) = 'audit_log' ORDER BY name"))
            else:
                rows = await conn.execute(text(
                    "SELECT tgname, CAST(tgenabled AS text), pg_get_triggerdef(oid) FROM pg_trigger "
                    "WHERE tgrelid = to_regclass('audit_log') AND NOT tgisinternal ORDER BY tgname"))
            result = [tuple(str(v) for v in r) for r in rows]
            await conn.rollback()
            return result
    finally:
        await engine.dispose()


async def _pg_trigger_kinds(url: str) -> dict[str, set[str]]:
    """From pg_trigger.tgtype (information_schema.triggers leaves TRUNCATE triggers out)."""
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT tgtype, CAST(tgenabled AS text) FROM pg_trigger "
                "WHERE tgrelid = to_regclass('audit_log') AND NOT tgisinternal"))).all()
            await conn.rollback()
    finally:
        await engine.dispose()
    row, before, insert, delete, update, truncate = 1, 2, 4, 8, 16, 32  # pg_trigger.h TRIGGER_TYPE_*
    kinds: dict[str, set[str]] = {"row": set(), "statement": set(), "timing": set(), "enabled": set()}
    for tgtype, enabled in rows:
        events = {name for bit, name in ((insert, "INSERT"), (delete, "DELETE"), (update, "UPDATE"),
                                         (truncate, "TRUNCATE")) if tgtype & bit}
        kinds["row" if tgtype & row else "statement"] |= events
        kinds["timing"].add("BEFORE" if tgtype & before else "AFTER/INSTEAD OF")
        kinds["enabled"].add(enabled)
    return kinds


async def _revisions(url: str) -> set[str]:
    """The revision the database is at, and every revision below it."""
    from alembic.script import ScriptDirectory

    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            await conn.rollback()
    finally:
        await engine.dispose()
    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    return {rev.revision for rev in script.iterate_revisions(head, "base")}

