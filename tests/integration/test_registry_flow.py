"""The registry's main flows on a real database: version numbering, delete and re-create,
stage history and rollback. Each test runs on SQLite and PostgreSQL with the same assertions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from registry.adapters.db.tables import chains_t, models_t, versions_t
from registry.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from registry.bootstrap import Container
from registry.domain.errors import (
    AlreadyExistsError,
    ConflictError,
    GateFailedError,
    NotFoundError,
)
from registry.domain.stages import Stage, Trigger
from registry.services import audit, models, transitions, versions
from registry.services.commands import CreateModel, DeleteModel, RegisterModelVersion
from registry.services.ports import Actor
from tests.conftest import unique
from tests.integration.helpers import (
    ALICE,
    BOB,
    audit_rows,
    chain_of,
    model_id,
    move,
    new_model,
    outbox_rows,
    reader,
    register,
    snapshot,
    stages,
    to_production,
)

# -- version numbers ------------------------------------------------------------------------------


async def _last_version(c: Container, name: str) -> int:
    async with reader(c.engine).connect() as conn:
        return (await conn.execute(select(models_t.c.last_version)
                                   .where(models_t.c.name == name))).scalar_one()


async def test_versions_are_numbered_from_one_per_model(container: Container) -> None:
    a, b = await new_model(container), await new_model(container)
    got = [(name, (await register(container, name))[0].version) for name in (a, b, a, a, b)]
    assert got == [(a, 1), (b, 1), (a, 2), (a, 3), (b, 2)]
    assert await stages(container, a) == {1: "none", 2: "none", 3: "none"}
    assert await stages(container, b) == {1: "none", 2: "none"}
    assert await _last_version(container, a) == 3
    assert await _last_version(container, b) == 2


async def test_a_registration_that_fails_after_allocating_leaves_no_gap_and_no_repeat(
    container: Container,
) -> None:
    name = await new_model(container)
    await register(container, name)
    with pytest.raises(RuntimeError):
        async with container.uow(ALICE) as uow:
            model = await uow.repo.lock_model(name)
            assert await uow.repo.allocate_version(model) == 2
            raise RuntimeError("crash between allocate_version and commit")
    # The counter's increment rolled back with the rest: committed numbers stay contiguous.
    assert await _last_version(container, name) == 1
    assert [v.version for v in await register(container, name, 2)] == [2, 3]
    assert sorted(await stages(container, name)) == [1, 2, 3]
    created = [e["version"] for e in await outbox_rows(container, await chain_of(container, name))
               if e["type"] == "model_version.created"]
    assert created == [1, 2, 3]


async def test_concurrent_registrations_get_distinct_contiguous_numbers(container: Container) -> None:
    name = await new_model(container)
    results = await asyncio.gather(*(
        versions.register_model_version(RegisterModelVersion(model=name, source=f"s3://b/{i}"),
                                        container.uow(Actor(f"ci-{i}", f"req-{i}")))
        for i in range(12)
    ))
    assert sorted(v.version for v in results) == list(range(1, 13))
    # Each caller got back the number that was stored with its own source.
    stored = await stages(container, name)
    assert sorted(stored) == list(range(1, 13))
    async with reader(container.engine).connect() as conn:
        rows = {r.version: r.source for r in await conn.execute(
            select(versions_t.c.version, versions_t.c.source)
            .where(versions_t.c.model_id == await model_id(container, name)))}
    assert {v.version: v.source for v in results} == rows
    # The chain did not fork under concurrent writers.
    events = await outbox_rows(container, await chain_of(container, name))
    assert [e["sequence"] for e in events] == list(range(1, 14))
    assert (await audit.verify_audit(name, container.uow(ALICE, write=False))).ok


async def test_creating_an_existing_name_is_already_exists_and_writes_nothing(
    container: Container,
) -> None:
    name = await new_model(container)
    chain = await chain_of(container, name)
    with pytest.raises(AlreadyExistsError):
        await new_model(container, name, actor=BOB)
    assert [r["action"] for r in await audit_rows(container, chain)] == ["model.created"]
    async with reader(container.engine).connect() as conn:
        assert (await conn.execute(select(chains_t.c.id).where(chains_t.c.model_name == name))
                ).scalars().all() == [chain]


# -- delete and re-create -----------------------------------------------------------------------


async def test_deleting_a_model_keeps_its_audit_chain_and_events(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 2)
    await move(container, name, 1, "staging")
    mid, chain = await model_id(container, name), await chain_of(container, name)
    before = await audit_rows(container, chain)

    await models.delete_model(DeleteModel(name=name), container.uow(BOB))

    with pytest.raises(NotFoundError):
        await models.get_model(name, container.uow(ALICE, write=False))
    async with reader(container.engine).connect() as conn:
        left = (await conn.execute(select(versions_t.c.id).where(versions_t.c.model_id == mid))).all()
        head = (await conn.execute(select(chains_t).where(chains_t.c.id == chain))).one()
        model_rows = (await conn.execute(select(models_t.c.id).where(models_t.c.id == mid))).all()
    assert left == [] and model_rows == [], "versions go with their model"
    after = await audit_rows(container, chain)
    assert after[:len(before)] == before, "existing audit entries are untouched"
    assert [r["action"] for r in after[len(before):]] == ["model.deleted"]
    assert after[-1]["actor"] == "bob"
    # The chain keeps naming the deleted model's id, which is never given to another model.
    assert head.model_id == mid and head.audit_seq == len(after) == 5
    events = (await audit.list_events(name, None, 1000, container.uow(ALICE, write=False))).items
    assert [e["sequence"] for e in events] == [1, 2, 3, 4, 5]
    assert events[-1]["type"] == "model.deleted"
    verdict = await audit.verify_audit(name, container.uow(ALICE, write=False))
    assert (verdict.ok, verdict.checked) == (True, 5)


async def test_creating_a_model_after_deleting_the_newest_one(container: Container) -> None:
    """Model ids (and so chain ids "model:<id>") must never be reused: SQLite hands out
    max(rowid)+1 for an INTEGER PRIMARY KEY unless the table is declared AUTOINCREMENT."""
    first = await new_model(container)
    first_chain = await chain_of(container, first)
    await models.delete_model(DeleteModel(name=first), container.uow(ALICE))
    second = await new_model(container)
    assert await chain_of(container, second) != first_chain
    assert [r["action"] for r in await audit_rows(container, first_chain)] == [
        "model.created", "model.deleted"]


async def test_recreating_a_deleted_name_starts_a_new_chain(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 2)
    old_chain = await chain_of(container, name)
    await models.delete_model(DeleteModel(name=name), container.uow(ALICE))

    await models.create_model(CreateModel(name=name, description="again"), container.uow(BOB))
    new_chain = await chain_of(container, name)
    assert new_chain != old_chain
    (v1,) = await register(container, name)
    assert v1.version == 1, "the new model's counter starts afresh"

    new_audit = await audit_rows(container, new_chain)
    assert [(r["seq"], r["action"]) for r in new_audit] == [
        (1, "model.created"), (2, "model_version.created")]
    assert new_audit[0]["prev_hash"] == audit.GENESIS
    listed = (await audit.list_audit(name, None, 1000, container.uow(ALICE, write=False))).items
    assert [(e["chain"], e["seq"]) for e in listed] == [(new_chain, 1), (new_chain, 2)]
    events = (await audit.list_events(name, None, 1000, container.uow(ALICE, write=False))).items
    assert [(e["sequence"], e["type"]) for e in events] == [
        (1, "model.created"), (2, "model_version.created")]
    assert events[0]["data"]["after"]["description"] == "again"
    # The old chain is intact beside the new one.
    assert [r["action"] for r in await audit_rows(container, old_chain)] == [
        "model.created", "model_version.created", "model_version.created", "model.deleted"]
    assert (await audit.verify_audit(None, container.uow(ALICE, write=False))).ok


# -- stage history ------------------------------------------------------------------------------


async def test_stage_history_is_the_versions_transitions_oldest_first(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 3)
    await move(container, name, 1, "staging", actor=ALICE)
    await move(container, name, 2, "staging", comment="candidate", actor=BOB)
    await move(container, name, 1, "production", comment="ship it", actor=BOB)
    await move(container, name, 2, "production", comment="v2 is better", actor=ALICE)
    await move(container, name, 1, "staging", comment="retry", actor=BOB)

    history = await transitions.stage_history(name, 1, container.uow(ALICE, write=False))
    assert [(h["from_stage"], h["to_stage"], h["trigger"], h["actor"], h["comment"])
            for h in history] == [
        ("none", "staging", "submit", "alice", None),
        ("staging", "production", "promote", "bob", "ship it"),
        ("production", "archived", "archive", "alice", "v2 is better"),
        ("archived", "staging", "restore", "bob", "retry"),
    ]
    assert [h["request_id"] for h in history] == ["req-alice", "req-bob", "req-alice", "req-bob"]
    seqs = [h["audit_seq"] for h in history]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert all(h["at"].endswith("Z") for h in history)

    history2 = await transitions.stage_history(name, 2, container.uow(ALICE, write=False))
    assert [(h["from_stage"], h["to_stage"], h["trigger"]) for h in history2] == [
        ("none", "staging", "submit"), ("staging", "production", "promote")]
    assert await transitions.stage_history(name, 3, container.uow(ALICE, write=False)) == []
    with pytest.raises(NotFoundError):
        await transitions.stage_history(name, 4, container.uow(ALICE, write=False))


# -- rollback -----------------------------------------------------------------------------------


async def test_rollback_end_to_end(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 3)
    await to_production(container, name, 1)
    promoted = await to_production(container, name, 2)
    assert promoted.transition.archived == [1]
    assert await stages(container, name) == {1: "archived", 2: "production", 3: "none"}

    result = await move(container, name, 1, "production", comment="v2 broke checkout", actor=BOB)
    t = result.transition
    assert (t.from_stage, t.to_stage, t.trigger) == (Stage.ARCHIVED, Stage.PRODUCTION, Trigger.ROLLBACK)
    assert (t.actor, t.comment, t.archived) == ("bob", "v2 broke checkout", [2])
    assert result.version.stage is Stage.PRODUCTION
    assert await stages(container, name) == {1: "production", 2: "archived", 3: "none"}
    events = await outbox_rows(container, await chain_of(container, name))
    assert [(e["version"], e["data"]["from_stage"], e["data"]["to_stage"], e["data"]["trigger"],
             e["data"]["comment"]) for e in events[-2:]] == [
        (2, "production", "archived", "archive", "v2 broke checkout"),
        (1, "archived", "production", "rollback", "v2 broke checkout"),
    ]

    # v3 replaces v1; now v1 is the most recent previous production version, so v2 is refused.
    assert (await to_production(container, name, 3)).transition.archived == [1]
    with pytest.raises(GateFailedError) as refused:
        await move(container, name, 2, "production", comment="try v2 again")
    assert refused.value.failed == ["previous_production"]
    assert await stages(container, name) == {1: "archived", 2: "archived", 3: "production"}

    with pytest.raises(GateFailedError) as no_comment:
        await move(container, name, 1, "production", comment="  ")
    assert no_comment.value.failed == ["comment"]
    assert [(r.gate, r.passed) for r in no_comment.value.results] == [
        ("stage_table", True), ("previous_production", True), ("comment", False)]

    again = await move(container, name, 1, "production", comment="v3 is slower")
    assert again.transition.archived == [3]
    assert await stages(container, name) == {1: "production", 2: "archived", 3: "archived"}
    # v3 and v2 both left production by a rollback: neither is a rollback target (no flip-flop),
    # and no step further back is left. v3 comes back only through staging and a promotion.
    for number in (2, 3):
        with pytest.raises(GateFailedError) as barred:
            await move(container, name, number, "production", comment="no")
        assert barred.value.failed == ["previous_production"]
    await move(container, name, 3, "staging")
    assert (await move(container, name, 3, "production", comment="fixed")).transition.trigger \
        is Trigger.PROMOTE
    assert await stages(container, name) == {1: "archived", 2: "archived", 3: "production"}
    # v1 left production normally this time: the rollback target again.
    assert (await move(container, name, 1, "production", comment="v3 again")).transition.archived == [3]


async def test_rollback_after_a_plain_archive_of_production(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 2)
    await to_production(container, name, 1)
    await move(container, name, 1, "archived", comment="retire")
    await move(container, name, 2, "archived")  # archived from none: never in production
    with pytest.raises(GateFailedError) as refused:
        await move(container, name, 2, "production", comment="never was production")
    assert refused.value.failed == ["previous_production"]
    result = await move(container, name, 1, "production", comment="bring it back")
    assert result.transition.archived == []
    assert await stages(container, name) == {1: "production", 2: "archived"}


async def test_promoting_a_lower_version_over_a_higher_incumbent(container: Container) -> None:
    """The incumbent's UPDATE must reach the database before the target's, whatever their
    primary-key order: the one-production index is checked row by row."""
    name = await new_model(container)
    await register(container, name, 2)
    await move(container, name, 1, "staging")
    await to_production(container, name, 2)
    assert (await move(container, name, 1, "production")).transition.archived == [2]
    assert await stages(container, name) == {1: "production", 2: "archived"}


async def test_concurrent_promotions_leave_exactly_one_production_version(
    container: Container,
) -> None:
    name = await new_model(container)
    await register(container, name, 6)
    for v in range(1, 7):
        await move(container, name, v, "staging")
    chain = await chain_of(container, name)
    start = len(await outbox_rows(container, chain))
    results = await asyncio.gather(*(
        move(container, name, v, "production", actor=Actor(f"rel-{v}", f"req-{v}"))
        for v in range(1, 7)))
    final = await stages(container, name)
    assert sorted(final.values()) == ["archived"] * 5 + ["production"]
    # Each promotion archived exactly the one before it: 6 promotes + 5 archives, no fork.
    assert sum(len(r.transition.archived) for r in results) == 5
    moved = (await outbox_rows(container, chain))[start:]
    assert len(moved) == 11 and [e["sequence"] for e in moved] == list(range(start + 1, start + 12))
    assert sorted(e["data"]["trigger"] for e in moved) == ["archive"] * 5 + ["promote"] * 6
    assert (await audit.verify_audit(name, container.uow(ALICE, write=False))).ok


async def test_deleting_a_model_with_a_production_version_is_refused(container: Container) -> None:
    name = await new_model(container)
    await register(container, name)
    await to_production(container, name, 1)
    before = await snapshot(container)
    with pytest.raises(ConflictError):
        await models.delete_model(DeleteModel(name=name), container.uow(ALICE))
    assert await snapshot(container) == before


async def test_the_feed_of_a_recreated_name_does_not_depend_on_the_wall_clock(
    container: Container,
) -> None:
    """The live model's chain is the newest one for its name even when the clock stepped back
    (NTP, a VM resumed) between the old model's creation and the new one's."""
    now = [datetime(2026, 6, 1, 12, 0, tzinfo=UTC)]
    factory = SqlUnitOfWorkFactory(container.engine, clock=lambda: now[0])
    name = unique()
    await models.create_model(CreateModel(name=name), factory(ALICE))
    await models.create_model(CreateModel(name=unique()), factory(ALICE))  # old is not the newest id
    old_chain = await chain_of(container, name)
    await models.delete_model(DeleteModel(name=name), factory(ALICE))
    now[0] -= timedelta(seconds=2)
    await models.create_model(CreateModel(name=name, description="second life"), factory(BOB))
    new_chain = await chain_of(container, name)
    assert new_chain != old_chain

    events = (await audit.list_events(name, None, None, container.uow(ALICE, write=False))).items
    assert [(e["type"], e["actor"]) for e in events] == [("model.created", "bob")]
    listed = (await audit.list_audit(name, None, None, container.uow(ALICE, write=False))).items
    assert [e["chain"] for e in listed] == [new_chain]
