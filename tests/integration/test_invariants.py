"""Invariants the database itself enforces, whatever code writes to it, and timestamps that come
back as aware UTC on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from registry.adapters.db.tables import audit_t, tokens_t
from registry.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from registry.bootstrap import Container
from registry.services import audit, models, versions
from registry.services.commands import CreateModel
from registry.services.tokens import CreateToken, create_token
from tests.conftest import unique
from tests.integration.helpers import (
    ALICE,
    execute,
    model_id,
    move,
    new_model,
    reader,
    register,
    stages,
    to_production,
)

INSERT_VERSION = """
    INSERT INTO model_versions (model_id, version, stage, source, description, tags, metrics,
                                inputs, revision, created_at, updated_at, created_by)
    VALUES (:model_id, :version, :stage, 's3://x', '', '{}', '{}', '[]', 1, CURRENT_TIMESTAMP,
            CURRENT_TIMESTAMP, 'sql')"""


async def _model_in_production(c: Container) -> tuple[str, int]:
    name = await new_model(c)
    await register(c, name, 2)
    await to_production(c, name, 1)
    return name, await model_id(c, name)


async def test_the_database_refuses_a_second_production_row_inserted_directly(
    container: Container,
) -> None:
    name, mid = await _model_in_production(container)
    with pytest.raises(IntegrityError):
        await execute(container, INSERT_VERSION, model_id=mid, version=99, stage="production")
    assert await stages(container, name) == {1: "production", 2: "none"}
    # The index is partial: other stages are not limited.
    await execute(container, INSERT_VERSION, model_id=mid, version=98, stage="archived")
    await execute(container, INSERT_VERSION, model_id=mid, version=99, stage="archived")
    assert await stages(container, name) == {1: "production", 2: "none", 98: "archived",
                                             99: "archived"}


async def test_the_database_refuses_an_update_to_a_second_production_row(
    container: Container,
) -> None:
    name, mid = await _model_in_production(container)
    with pytest.raises(IntegrityError):
        await execute(container, "UPDATE model_versions SET stage = 'production' "
                                 "WHERE model_id = :m AND version = 2", m=mid)
    with pytest.raises(IntegrityError):
        await execute(container, "UPDATE model_versions SET stage = 'production' "
                                 "WHERE model_id = :m", m=mid)
    assert await stages(container, name) == {1: "production", 2: "none"}


async def test_one_production_version_is_per_model_not_global(container: Container) -> None:
    first, _ = await _model_in_production(container)
    second = await new_model(container)
    await register(container, second, 1)
    await execute(container, "UPDATE model_versions SET stage = 'production' WHERE model_id = :m",
                  m=await model_id(container, second))
    assert await stages(container, second) == {1: "production"}
    assert await stages(container, first) == {1: "production", 2: "none"}


async def test_version_numbers_are_unique_per_model_in_the_database(container: Container) -> None:
    name, mid = await _model_in_production(container)
    with pytest.raises(IntegrityError):
        await execute(container, INSERT_VERSION, model_id=mid, version=2, stage="none")


def _event_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _is_utc(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == timedelta(0)


async def test_timestamps_come_back_aware_utc(container: Container) -> None:
    name = await new_model(container)
    (registered,) = await register(container, name)
    moved = await move(container, name, 1, "staging")
    await create_token(CreateToken("ci", "editor"), container.uow(ALICE))
    read = container.uow

    model = await models.get_model(name, read(ALICE, write=False))
    listed = (await models.list_models(None, None, None, read(ALICE, write=False))).items
    version = await versions.get_model_version(name, 1, read(ALICE, write=False))
    staged = await versions.versions_in_stage(name, "staging", read(ALICE, write=False))
    events = (await audit.list_events(name, None, None, read(ALICE, write=False))).items
    async with reader(container.engine).connect() as conn:
        audit_at = list((await conn.execute(select(audit_t.c.at))).scalars())
        token_at = (await conn.execute(select(tokens_t.c.created_at))).scalar_one()

    stamps = [model.created_at, model.updated_at, listed[0].created_at, version.created_at,
              version.updated_at, staged[0].updated_at, token_at, moved.transition.at,
              *[_event_time(e["at"]) for e in events], *audit_at]
    assert all(_is_utc(s) for s in stamps), [s.tzinfo for s in stamps]
    # Stored to the microsecond: what the write returned is what a read returns.
    assert version.created_at == registered.created_at
    assert version.updated_at == moved.version.updated_at == moved.transition.at
    assert _event_time(events[-1]["at"]) == moved.transition.at
    # Events carry their time as the audit log writes it: RFC 3339, UTC, microseconds, "Z".
    assert all(e["at"].endswith("Z") and len(e["at"]) == len("2026-01-01T00:00:00.000000Z") for e in events)


async def test_a_non_utc_clock_is_stored_as_the_same_instant(container: Container) -> None:
    """The instant survives, not the wall-clock digits: SQLite keeps no zone, so a +05:30 time
    must be converted to UTC before the zone is dropped."""
    instant = datetime(2026, 3, 1, 23, 45, 12, 345678, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    shifted = SqlUnitOfWorkFactory(container.engine, clock=lambda: instant)
    name = unique()
    await models.create_model(CreateModel(name=name + "-ist"), shifted(ALICE))

    model = await models.get_model(name + "-ist", container.uow(ALICE, write=False))
    assert model.created_at == instant and _is_utc(model.created_at)
    assert model.created_at.hour == 18 and model.created_at.minute == 15
    async with reader(container.engine).connect() as conn:
        raw = (await conn.execute(text("SELECT created_at FROM registered_models WHERE name = :n"),
                                  {"n": name + "-ist"})).scalar_one()
        entry = (await conn.execute(select(audit_t.c.canonical, audit_t.c.at)
                                    .where(audit_t.c.model == name + "-ist"))).one()
    if isinstance(raw, str):  # SQLite returns the stored text: it must be the UTC wall time
        raw = datetime.fromisoformat(raw)
    stored = raw if raw.tzinfo is not None else raw.replace(tzinfo=UTC)
    assert stored == instant
    assert entry.at == instant and '"at":"2026-03-01T18:15:12.345678Z"' in entry.canonical

