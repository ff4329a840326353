"""Operations MLflow's API brought to the services, on both backends: soft-deleted versions,
renames, archiving the other versions of a stage, searches across models and versions, the latest
version per stage, and imports that keep numbers and origins."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from registry.adapters.db.tables import versions_t
from registry.bootstrap import Container
from registry.domain.errors import (
    AlreadyExistsError,
    ConflictError,
    ForbiddenError,
    GateFailedError,
    NotFoundError,
)
from registry.domain.permissions import Role
from registry.domain.stages import Stage
from registry.services import aliases, models, search, versions
from registry.services.approvals import get_request, request_transition
from registry.services.audit import list_audit, list_events
from registry.services.commands import (
    DeleteModel,
    DeleteModelVersion,
    RenameModel,
    RequestTransition,
    RollbackModel,
    SetAlias,
    TransitionModelVersion,
    UpdateModel,
)
from registry.services.imports import ImportModel, ImportModelVersion, Origin, import_model, import_model_version
from registry.services.ports import Actor
from registry.services.resolve import resolve_uri
from registry.services.search import Condition, Search
from registry.services.transitions import rollback_model, transition_model_version
from tests.conftest import unique
from tests.integration.helpers import (
    ALICE,
    audit_rows,
    chain_of,
    model_id,
    move,
    new_model,
    outbox_rows,
    reader,
    register,
    stages,
    to_production,
)

EDITOR = Actor("ed", "req-ed", Role.EDITOR)


async def _deleted_at(c: Container, name: str, version: int) -> datetime | None:
    mid = await model_id(c, name)
    async with reader(c.engine).connect() as conn:
        return (await conn.execute(select(versions_t.c.deleted_at).where(
            versions_t.c.model_id == mid, versions_t.c.version == version))).scalar_one()


async def test_a_deleted_version_is_hidden_its_number_kept_and_its_aliases_and_requests_closed(
        container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 3)
    await move(container, name, 2, "staging")
    await aliases.set_alias(SetAlias(name, "candidate", 2), container.uow(ALICE))
    request = await request_transition(RequestTransition(name, 2, "production"), container.uow(ALICE))

    await versions.delete_model_version(DeleteModelVersion(name, 2), container.uow(ALICE))

    assert await _deleted_at(container, name, 2) is not None, "the row stays, marked"
    with pytest.raises(NotFoundError):
        await versions.get_model_version(name, 2, container.uow(ALICE))
    listed = await versions.list_model_versions(name, None, None, [], None, None, container.uow(ALICE))
    assert [v.version for v in listed.items] == [1, 3]
    assert await versions.versions_in_stage(name, "staging", container.uow(ALICE)) == []
    found = await search.search_model_versions(Search((Condition("name", "=", name),)), container.uow(ALICE))
    assert sorted(v.version for v in found) == [1, 3]
    assert [a for a, _ in (await aliases.list_aliases(name, None, None, container.uow(ALICE))).items] == []
    assert (await get_request(request.id, container.uow(ALICE))).state == "cancelled"
    (fourth,) = await register(container, name)
    assert fourth.version == 4, "a deleted number is never handed out again"
    actions = [r["action"] for r in await audit_rows(container, await chain_of(container, name))]
    assert actions[-4:] == ["model_version.alias_deleted", "transition_request.cancelled",
                            "model_version.deleted", "model_version.created"]
    with pytest.raises(NotFoundError):
        await versions.delete_model_version(DeleteModelVersion(name, 2), container.uow(ALICE))


async def test_a_production_version_cannot_be_deleted_and_deleting_needs_an_admin(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 2)
    await to_production(container, name, 1)
    with pytest.raises(ConflictError):
        await versions.delete_model_version(DeleteModelVersion(name, 1), container.uow(ALICE))
    with pytest.raises(ForbiddenError):
        await versions.delete_model_version(DeleteModelVersion(name, 2), container.uow(EDITOR))
    assert await _deleted_at(container, name, 1) is None and await _deleted_at(container, name, 2) is None


async def test_a_deleted_archived_version_is_no_rollback_target(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 2)
    await to_production(container, name, 1)
    await to_production(container, name, 2)  # 1 is archived: the rollback target
    await versions.delete_model_version(DeleteModelVersion(name, 1), container.uow(ALICE))
    with pytest.raises(GateFailedError):
        await rollback_model(RollbackModel(name, "bad release"), container.uow(ALICE))
    assert (await stages(container, name))[2] == "production"


async def test_a_rollback_never_skips_a_deleted_predecessor_to_reach_an_older_version(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 3)
    for number in (1, 2, 3):
        await to_production(container, name, number)
    await versions.delete_model_version(DeleteModelVersion(name, 2), container.uow(ALICE))
    with pytest.raises(GateFailedError) as caught:
        await rollback_model(RollbackModel(name, "bad release"), container.uow(ALICE))
    assert "version 2, the previous production version, was deleted" in caught.value.results[0].detail
    assert await stages(container, name) == {1: "archived", 2: "archived", 3: "production"}


async def test_a_renamed_model_keeps_its_versions_and_chain_and_frees_its_old_name(container: Container) -> None:
    name, new_name = await new_model(container), unique("renamed")
    await register(container, name, 2)
    chain = await chain_of(container, name)
    await models.rename_model(RenameModel(name, new_name), container.uow(ALICE))
    assert [v.version for v in (await versions.list_model_versions(
        new_name, None, None, [], None, None, container.uow(ALICE))).items] == [1, 2]
    assert await chain_of(container, new_name) == chain
    entry = (await audit_rows(container, chain))[-1]
    assert (entry["action"], entry["model"]) == ("model.updated", new_name)
    with pytest.raises(NotFoundError):
        await models.get_model(name, container.uow(ALICE))
    await new_model(container, name)  # the old name is free
    with pytest.raises(AlreadyExistsError):
        await models.rename_model(RenameModel(new_name, name), container.uow(ALICE))
    with pytest.raises(ForbiddenError):
        await models.rename_model(RenameModel(new_name, unique()), container.uow(EDITOR))


async def test_archive_others_archives_the_other_staging_versions_in_one_move(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 3)
    await move(container, name, 1, "staging")
    await move(container, name, 2, "staging")
    await transition_model_version(TransitionModelVersion(name, 3, "staging", archive_others=True),
                                   container.uow(ALICE))
    assert await stages(container, name) == {1: "archived", 2: "archived", 3: "staging"}
    events = [(e["type"], e["version"]) for e in await outbox_rows(container, await chain_of(container, name))]
    assert events[-3:] == [("model_version.stage_changed", 3), ("model_version.stage_changed", 1),
                           ("model_version.stage_changed", 2)]


async def test_searches_filter_order_and_page(container: Container) -> None:
    prefix = unique("s")
    for suffix, tags in (("Alpha", {"team": "risk"}), ("alpha2", {"team": "ops"}), ("beta", {})):
        await new_model(container, f"{prefix}-{suffix}")
        await models.update_model(UpdateModel(f"{prefix}-{suffix}", tags=tags), container.uow(ALICE))

    async def names(*conditions: Condition, **kw: object) -> list[str]:
        found = await search.search_models(Search(conditions, **kw), container.uow(ALICE))  # type: ignore[arg-type]
        return [m.name for m in found]

    assert await names(Condition("name", "like", f"{prefix}-a%")) == [f"{prefix}-alpha2"], "LIKE keeps case"
    assert await names(Condition("name", "ilike", f"{prefix}-a%")) == [f"{prefix}-Alpha", f"{prefix}-alpha2"]
    assert await names(Condition("name", "like", f"{prefix}-%"), Condition("tag", "=", "risk", "team")) == [
        f"{prefix}-Alpha"]
    assert await names(Condition("name", "like", f"{prefix}-%"), Condition("tag", "!=", "risk", "team")) == [
        f"{prefix}-alpha2"], "a missing tag is not a match for !="
    assert await names(Condition("name", "like", f"{prefix}-%"),
                       Condition("tag", "!=", "true", "kind", missing_matches=True)) == [
        f"{prefix}-Alpha", f"{prefix}-alpha2", f"{prefix}-beta"]
    assert await names(Condition("name", "like", f"{prefix}-%"), order_by=(("name", False),), limit=1) == [
        f"{prefix}-beta", f"{prefix}-alpha2"], "limit + 1 rows: the extra one says a page follows"
    assert await names(Condition("name", "like", f"{prefix}-%"), order_by=(("name", False),), offset=2) == [
        f"{prefix}-Alpha"]
    slashed = await new_model(container, f"{prefix}-back\\slash")
    for op in ("like", "ilike"):  # a backslash is itself on both backends, not an escape
        assert await names(Condition("name", op, f"{prefix}-back\\%")) == [slashed]
        assert await names(Condition("name", op, f"{prefix}-back\\")) == []


async def test_version_search_and_latest_per_stage(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 4, run_id="r1")
    await register(container, name, 1, run_id="r2")
    await move(container, name, 1, "staging")
    await move(container, name, 2, "staging")
    await to_production(container, name, 3)
    found = await search.search_model_versions(Search((Condition("name", "=", name), Condition(
        "run_id", "in", ("r2",)))), container.uow(ALICE))
    assert [v.version for v in found] == [5]
    found = await search.search_model_versions(Search((Condition("name", "=", name), Condition(
        "version", ">", "2")), order_by=(("version", True),)), container.uow(ALICE))
    assert [v.version for v in found] == [3, 4, 5]
    await register(container, name)  # 6, without a run: MLflow's run_id "" (NULL here)
    found = await search.search_model_versions(Search((Condition("name", "=", name), Condition(
        "run_id", "!=", "r1")), order_by=(("version", True),)), container.uow(ALICE))
    assert [v.version for v in found] == [5, 6]
    found = await search.search_model_versions(Search((Condition("name", "=", name), Condition(
        "run_id", "=", ""))), container.uow(ALICE))
    assert [v.version for v in found] == [6]
    latest = await search.latest_versions(name, None, container.uow(ALICE))
    assert {v.stage: v.version for v in latest} == {Stage.STAGING: 2, Stage.PRODUCTION: 3, Stage.NONE: 6}
    only = await search.latest_versions(name, [Stage.PRODUCTION], container.uow(ALICE))
    assert [v.version for v in only] == [3]


async def test_an_import_keeps_numbers_gaps_stages_and_origins_and_is_idempotent(container: Container) -> None:
    name = unique("imported")
    origin = Origin("http://mlflow.example", datetime(2024, 1, 2, tzinfo=UTC), "ann",
                    datetime(2024, 3, 4, tzinfo=UTC))
    model, created = await import_model(ImportModel(name, "from mlflow", {"k": "v"}, origin), container.uow(ALICE))
    assert created and model.created_at == origin.created_at
    for number, stage in ((1, Stage.ARCHIVED), (3, Stage.PRODUCTION), (4, Stage.STAGING)):
        got = await import_model_version(ImportModelVersion(name, number, stage, f"s3://b/{number}", origin,
                                                            run_id="r", tags={"t": "1"}), container.uow(ALICE))
        assert got is not None and got.version == number
    assert await import_model_version(ImportModelVersion(name, 3, Stage.PRODUCTION, "s3://b/3", origin),
                                      container.uow(ALICE)) is None, "a re-run changes nothing"
    assert (await import_model(ImportModel(name, "", {}, origin), container.uow(ALICE)))[1] is False
    assert await stages(container, name) == {1: "archived", 3: "production", 4: "staging"}
    (fifth,) = await register(container, name)
    assert fifth.version == 5, "the gap (2) and imported numbers are never handed out"
    with pytest.raises(ConflictError):
        await import_model_version(ImportModelVersion(name, 9, Stage.PRODUCTION, "s3://b/9", origin),
                                   container.uow(ALICE))
    entries = [r for r in await audit_rows(container, await chain_of(container, name))
               if r["action"] == "model_version.imported"]
    assert [e["version"] for e in entries] == [1, 3, 4], "one audit entry per imported version"
    imported = json.loads(entries[1]["canonical"])["after"]["imported"]
    assert imported == {"from": "http://mlflow.example", "created_at": "2024-01-02T00:00:00.000000Z",
                        "created_by": "ann", "updated_at": "2024-03-04T00:00:00.000000Z"}


async def test_a_move_refused_by_role_names_the_role_the_stage_table_asks(container: Container) -> None:
    name = await new_model(container)
    await register(container, name)
    viewer = Actor("vi", "req-vi", Role.VIEWER)
    with pytest.raises(ForbiddenError) as caught:
        await move(container, name, 1, "staging", actor=viewer)
    assert "needs the stager role" in caught.value.detail, caught.value.detail


async def test_an_imported_version_left_unsealed_is_sealed_by_its_first_move(container: Container) -> None:
    name = unique("imported")
    origin = Origin("http://mlflow.example", datetime(2024, 1, 2, tzinfo=UTC), None, datetime(2024, 1, 2, tzinfo=UTC))
    await import_model(ImportModel(name, "", {}, origin), container.uow(ALICE))
    await import_model_version(ImportModelVersion(name, 1, Stage.STAGING, "s3://b/1", origin), container.uow(ALICE))
    assert (await versions.get_model_version(name, 1, container.uow(ALICE))).sealed_at is None
    await move(container, name, 1, "production")
    assert (await versions.get_model_version(name, 1, container.uow(ALICE))).sealed_at is not None
    entry = json.loads((await audit_rows(container, await chain_of(container, name)))[-1]["canonical"])
    assert entry["after"]["stage"] == "production" and "artifacts" in entry["after"], entry


async def test_a_model_renamed_to_a_deleted_models_name_owns_that_names_feeds(container: Container) -> None:
    live, dead = await new_model(container), await new_model(container)  # dead has the larger id
    await register(container, dead)
    await models.delete_model(DeleteModel(dead), container.uow(ALICE))
    await models.rename_model(RenameModel(live, dead), container.uow(ALICE))
    await register(container, dead)
    feed = await list_events(dead, None, None, container.uow(ALICE))
    assert [e["type"] for e in feed.items] == ["model.created", "model.updated", "model_version.created"]
    entries = await list_audit(dead, None, None, container.uow(ALICE))
    assert entries.items[-1]["action"] == "model_version.created"


async def test_latest_resolves_to_the_highest_live_version(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, 3)
    await versions.delete_model_version(DeleteModelVersion(name, 3), container.uow(ALICE))
    assert (await resolve_uri(f"models:/{name}/latest", container.uow(ALICE))).version == 2
