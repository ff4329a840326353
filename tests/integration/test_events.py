"""Outbox events as DESIGN.md's event table defines them: one per change, per-model sequence
gap-free from 1, stage changes carrying from/to/trigger/comment, one per version that moved."""

from __future__ import annotations

import uuid
from datetime import datetime

from registry.bootstrap import Container
from registry.services import aliases, audit, models, versions
from registry.services.commands import DeleteAlias, SetAlias, UpdateModel, UpdateModelVersion
from tests.integration.helpers import (
    ALICE,
    BOB,
    audit_rows,
    chain_of,
    move,
    new_model,
    register,
    to_production,
)


async def _events(c: Container, name: str, after: int | None = None,
                  limit: int | None = 1000) -> list[dict]:
    return (await audit.list_events(name, after, limit, c.uow(ALICE, write=False))).items


async def test_every_change_is_one_event_in_a_gap_free_sequence(container: Container) -> None:
    name = await new_model(container)
    await models.update_model(UpdateModel(name=name, description="fraud scorer"), container.uow(BOB))
    await models.update_model(UpdateModel(name=name, description="fraud scorer"), container.uow(BOB))
    await register(container, name, 2)
    await versions.update_model_version(UpdateModelVersion(model=name, version=1,
                                                           tags={"team": "risk"}), container.uow(ALICE))
    await aliases.set_alias(SetAlias(model=name, alias="champion", version=1), container.uow(ALICE))
    await aliases.set_alias(SetAlias(model=name, alias="champion", version=2), container.uow(ALICE))
    await aliases.delete_alias(DeleteAlias(model=name, alias="champion"), container.uow(ALICE))
    await to_production(container, name, 1)

    events = await _events(container, name)
    assert [e["type"] for e in events] == [
        "model.created",
        "model.updated",  # the repeated, unchanged update wrote nothing
        "model_version.created",
        "model_version.created",
        "model_version.updated",
        "model_version.alias_set",
        "model_version.alias_set",
        "model_version.alias_deleted",
        "model_version.stage_changed",
        "model_version.stage_changed",
    ]
    assert [e["sequence"] for e in events] == list(range(1, 11))
    assert len({e["id"] for e in events}) == 10
    assert all(uuid.UUID(e["id"]) for e in events)
    assert all(e["model"] == name for e in events)
    assert [e["actor"] for e in events[:2]] == ["alice", "bob"]
    assert events[1]["request_id"] == "req-bob"
    # RFC 3339 in UTC with microseconds, as the audit log and the webhooks write it (so the
    # text order is the time order).
    assert all(e["at"].endswith("Z") and datetime.fromisoformat(e["at"]).utcoffset().total_seconds() == 0
               for e in events)
    ats = [e["at"] for e in events]
    assert ats == sorted(ats)

    updated = events[1]["data"]
    assert (updated["before"], updated["after"]) == ({"description": ""},
                                                     {"description": "fraud scorer"})
    assert events[4]["version"] == 1 and events[4]["data"]["after"] == {"tags": {"team": "risk"}}
    assert events[5]["data"]["previous_version"] is None
    assert (events[6]["version"], events[6]["data"]["previous_version"]) == (2, 1)
    assert (events[7]["version"], events[7]["data"]["previous_version"]) == (2, 2)

    # Audit and outbox say the same thing, change by change.
    rows = await audit_rows(container, await chain_of(container, name))
    assert [(r["action"], r["version"]) for r in rows] == [(e["type"], e["version"]) for e in events]


async def test_a_promotion_is_one_stage_changed_event_per_version_that_moved(
    container: Container,
) -> None:
    name = await new_model(container)
    await register(container, name, 2)
    await to_production(container, name, 1)
    await move(container, name, 2, "staging", comment="candidate")
    start = len(await _events(container, name))
    await move(container, name, 2, "production", comment="better recall", actor=BOB)

    moved = await _events(container, name, after=start)
    assert [e["sequence"] for e in moved] == [start + 1, start + 2]
    assert all(e["type"] == "model_version.stage_changed" for e in moved)
    incumbent, target = moved
    assert incumbent["version"] == 1 and target["version"] == 2
    assert {k: incumbent["data"][k] for k in ("from_stage", "to_stage", "trigger", "comment")} == {
        "from_stage": "production", "to_stage": "archived", "trigger": "archive",
        "comment": "better recall"}
    assert incumbent["data"]["superseded_by"] == 2
    assert {k: target["data"][k] for k in ("from_stage", "to_stage", "trigger", "comment")} == {
        "from_stage": "staging", "to_stage": "production", "trigger": "promote",
        "comment": "better recall"}
    assert target["data"]["before"] == {"stage": "staging"}
    assert target["data"]["after"]["stage"] == "production"
    assert {e["actor"] for e in moved} == {"bob"}
    assert incumbent["at"] == target["at"]

    # A move without an incumbent is exactly one event.
    await register(container, name)
    before = len(await _events(container, name))
    await move(container, name, 3, "staging")
    assert [e["data"]["trigger"] for e in await _events(container, name, after=before)] == ["submit"]


async def test_the_pull_feed_pages_by_sequence(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 4)  # sequences 1..5
    page = await audit.list_events(name, 1, 2, container.uow(ALICE, write=False))
    assert [e["sequence"] for e in page.items] == [2, 3]
    assert page.next_cursor == "3"
    page = await audit.list_events(name, 3, 2, container.uow(ALICE, write=False))
    assert [e["sequence"] for e in page.items] == [4, 5]
    assert page.next_cursor is None
    assert await _events(container, name, after=5) == []


async def test_events_of_different_models_are_numbered_independently(container: Container) -> None:
    a, b = await new_model(container), await new_model(container)
    for name in (a, b, a):
        await register(container, name)
    assert [e["sequence"] for e in await _events(container, a)] == [1, 2, 3]
    assert [e["sequence"] for e in await _events(container, b)] == [1, 2]
    assert {e["model"] for e in await _events(container, b)} == {b}
