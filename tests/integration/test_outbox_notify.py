"""PostgreSQL: a commit that wrote outbox events wakes every listening worker (the statement
trigger of migration 0003); a rolled-back write and a write without events wake nobody."""

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
        # Three commits notify three times, and a late one must not pass for a wake-up below.
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
