"""The alias names on the hot reads cost no round trip (issue 13): a version read is still the
model's row and the version's row, the production read still one statement, and the alias
names come inside them, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.statements import Db
from registry.bootstrap import Container
from registry.services import aliases, versions
from registry.services.commands import SetAlias
from tests.integration.helpers import ALICE, new_model, register, to_production


@contextmanager
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement a repository sends: prebuilt ones (``Db``, which runs them through the Core
    connection on SQLite: counted once) and Core ones."""
    sent: list[str] = []
    inside = [0]
    prebuilt, execute = Db.all, AsyncConnection.execute

    async def all_(self: Db, q: Any, **params: Any) -> list[Any]:
        sent.append("statement")
        inside[0] += 1
        try:
            return await prebuilt(self, q, **params)
        finally:
            inside[0] -= 1

    async def counted(self: AsyncConnection, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if not inside[0]:
            sent.append("statement")
        return await execute(self, statement, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Db, "all", all_)
        m.setattr(AsyncConnection, "execute", counted)
        yield sent


async def test_version_and_production_reads_bring_alias_names_in_the_same_statements(
        container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    name = await new_model(container)
    await register(container, name, 2)
    await to_production(container, name, 1)
    for alias, number in (("champion", 1), ("Canary", 1), ("next", 2)):
        await aliases.set_alias(SetAlias(name, alias, number), container.uow(ALICE))

    with statements(monkeypatch) as sent:
        one = await versions.get_model_version(name, 1, container.uow(ALICE, write=False))
    assert (one.aliases, sent) == (["Canary", "champion"], ["statement"] * 2)
    with statements(monkeypatch) as sent:
        production = await versions.versions_in_stage(name, "production", container.uow(ALICE, write=False))
    assert ([v.aliases for v in production], sent) == ([["Canary", "champion"]], ["statement"])
    with statements(monkeypatch) as sent:
        found, _ = await aliases.get_alias(name, "next", container.uow(ALICE, write=False))
    assert (found.version, found.aliases, sent) == (2, ["next"], ["statement"])
