"""PostgreSQL: a commit that wrote outbox events wakes every listening worker: the process sends
NOTIFY after its commit (adapters/db/bell.py; the statement trigger of migration 0003 is gone
since 0006, so no writer's transaction notifies); a rolled-back write and a write without
events wake nobody; a process that relays its own events rings its own relay instead."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from registry.adapters.db.outbox import listen
from registry.bootstrap import Container
from registry.domain.errors import AlreadyExistsError
from tests.integration.helpers import new_model, register


async def _woken(event: asyncio.Event, within: float = 1.0) -> bool:
    try:
        await asyncio.wait_for(event.wait(), within)
    except TimeoutError:
        return False
    event.clear()
    return True


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_listeners_wake_on_committed_events_only(container: Container) -> None:
    url = container.settings.database_url
    first, second = asyncio.Event(), asyncio.Event()
    async with listen(url, first.set), listen(url, second.set):
        name = await new_model(container)
        assert await _woken(first) and await _woken(second)

        await register(container, name, count=3)
        assert await _woken(first)
        # Commits in quick succession ring at least once more; drain any late one.
        while await _woken(first, within=0.3):
            pass

        with pytest.raises(AlreadyExistsError):  # refused: rolled back, no event
            await new_model(container, name)
        async with container.engine.begin() as conn:  # a write that is no event
            await conn.execute(text("UPDATE registered_models SET description = 'x' WHERE name = :n"),
                               {"n": name})
        assert not await _woken(first, within=0.5)

        async with container.engine.connect() as conn:  # inserted, then rolled back
            await conn.begin()
            await conn.execute(text(
                "INSERT INTO outbox_events (event_id, chain, sequence, type, actor, request_id, at, data)"
                " VALUES ('00000000-0000-0000-0000-000000000001', 'system', 999999, 'webhook.ping',"
                " 't', 't', now(), '{}')"))
            await conn.rollback()
        assert not await _woken(first, within=0.5)


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_no_writer_transaction_notifies(container: Container) -> None:
    """Inserting an event commits without a NOTIFY of its own (it would serialise every
    writer's commit on PostgreSQL's notify lock): only the bell, after the commit, tells."""
    url = container.settings.database_url
    woken = asyncio.Event()
    async with listen(url, woken.set):
        async with container.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO outbox_events (event_id, chain, sequence, type, actor, request_id, at, data)"
                " VALUES ('00000000-0000-0000-0000-000000000002', 'system', 999998, 'webhook.ping',"
                " 't', 't', now(), '{}')"))
        assert not await _woken(woken, within=0.5)
        triggers = (await _scalar(container, "SELECT count(*) FROM pg_trigger "
                                             "WHERE tgname = 'outbox_events_notify'"))
        assert triggers == 0


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_process_that_relays_rings_its_own_relay_and_notifies_nobody(
    container: Container,
) -> None:
    url = container.settings.database_url
    others, own = asyncio.Event(), asyncio.Event()
    container.uow.on_events = own.set
    try:
        async with listen(url, others.set):
            await new_model(container)
            assert own.is_set()
            assert not await _woken(others, within=0.5)
    finally:
        container.uow.on_events = None


async def _scalar(container: Container, sql: str) -> object:
    async with container.engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()
