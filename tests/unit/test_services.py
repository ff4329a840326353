"""The use cases against an in-memory unit of work: what each one changes, records and refuses."""

from __future__ import annotations

import math
from typing import Any

import pytest

from registry.domain.errors import (
    ConflictError,
    GateFailedError,
    InvalidTransitionError,
    NotFoundError,
    PreconditionFailedError,
    ValidationError,
)
from registry.domain.events import (
    AliasDeleted,
    AliasSet,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    StageChanged,
    VersionCreated,
    VersionUpdated,
)
from registry.domain.stages import Stage, Trigger
from registry.services.aliases import delete_alias, get_alias, set_alias
from registry.services.commands import (
    CreateModel,
    DeleteAlias,
    DeleteModel,
    RegisterModelVersion,
    SetAlias,
    TransitionModelVersion,
    UpdateModel,
    UpdateModelVersion,
)
from registry.services.models import create_model, delete_model, update_model
from registry.services.transitions import TransitionResult, transition_model_version
from registry.services.versions import get_model_version, register_model_version, update_model_version
from tests.unit.fakes import FakeUnitOfWork, Store

NAME = "fraud"


# Each test arranges its registry through ``store`` (every helper call is its own unit of work, as
# with the real factory) and then acts through one fresh ``uow``, whose ``committed`` and
# ``recorded`` therefore describe the use case under test alone.


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def uow(store: Store) -> FakeUnitOfWork:
    return FakeUnitOfWork(store)


def unit(where: Store | FakeUnitOfWork) -> FakeUnitOfWork:
    return where if isinstance(where, FakeUnitOfWork) else FakeUnitOfWork(where)


async def given_model(store: Store, versions: int = 0, name: str = NAME, **kw: Any) -> None:
    await create_model(CreateModel(name, **kw), unit(store))
    for _ in range(versions):
        await register(store, name=name)


async def register(where: Store | FakeUnitOfWork, name: str = NAME, **kw: Any) -> int:
    kw.setdefault("source", "s3://models/fraud")
    return (await register_model_version(RegisterModelVersion(name, **kw), unit(where))).version


async def move(where: Store | FakeUnitOfWork, version: int, to_stage: str, name: str = NAME,
               **kw: Any) -> TransitionResult:
    return await transition_model_version(TransitionModelVersion(name, version, to_stage, **kw),
                                          unit(where))


async def promote(where: Store | FakeUnitOfWork, version: int, **kw: Any) -> TransitionResult:
    await move(where.store if isinstance(where, FakeUnitOfWork) else where, version, "staging")
    return await move(where, version, "production", **kw)


async def productions_in_turn(store: Store, n: int) -> None:
    """Versions 1..n, each promoted in turn: n is in production, 1..n-1 archived, n-1 most recently."""
    await given_model(store, versions=n)
    for v in range(1, n + 1):
        await promote(store, v)


def stages(store: Store) -> dict[int, str]:
    return {n: v.stage.value for (_, n), v in sorted(store.state.versions.items())}


def assert_nothing_written(uow: FakeUnitOfWork, before: dict[int, str]) -> None:
    assert not uow.committed
    assert uow.recorded == []
    assert stages(uow.store) == before


# -- models -------------------------------------------------------------------------------------

async def test_creating_a_model_records_model_created(uow: FakeUnitOfWork) -> None:
    model = await create_model(CreateModel(NAME, "detects fraud", {"team": "risk"}), uow)

    assert uow.committed
    assert model.created_by == "alice"
    assert uow.store.state.models[NAME].description == "detects fraud"
    assert uow.changes() == [ModelCreated(
        model=NAME, after={"name": NAME, "description": "detects fraud", "tags": {"team": "risk"}})]


@pytest.mark.parametrize("cmd", [CreateModel("a/b"), CreateModel(" fraud"), CreateModel(".."),
                                 CreateModel("ok", tags={"": "empty key"})], ids=repr)
async def test_an_invalid_model_is_refused_before_anything_is_written(
    uow: FakeUnitOfWork, cmd: CreateModel
) -> None:
    with pytest.raises(ValidationError):
        await create_model(cmd, uow)
    assert not uow.committed and uow.store.state.models == {}


async def test_update_model_is_a_merge_patch_where_null_removes_a_tag(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, description="old", tags={"team": "risk", "tier": "1", "keep": "me"})

    model = await update_model(UpdateModel(NAME, tags={"tier": None, "team": "fraud", "new": "x"}), uow)

    assert model.tags == {"team": "fraud", "keep": "me", "new": "x"}
    assert model.description == "old"  # absent from the patch, so untouched
    assert store.state.models[NAME].tags == {"team": "fraud", "keep": "me", "new": "x"}
    assert uow.committed
    assert uow.changes() == [ModelUpdated(
        model=NAME,
        before={"tags": {"team": "risk", "tier": "1", "keep": "me"}},
        after={"tags": {"team": "fraud", "keep": "me", "new": "x"}},
    )]


async def test_update_model_with_null_tags_clears_them_and_null_description_empties_it(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, description="old", tags={"team": "risk"})
    model = await update_model(UpdateModel(NAME, description=None, tags=None), uow)
    assert (model.description, model.tags) == ("", {})
    assert store.state.models[NAME].tags == {}


async def test_an_update_that_changes_nothing_records_nothing(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, description="same", tags={"team": "risk"})
    await update_model(UpdateModel(NAME, description="same", tags={"team": "risk", "gone": None}), uow)
    assert not uow.committed and uow.recorded == []


async def test_deleting_a_model_with_a_version_in_production_is_a_conflict(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=2)
    await promote(store, 1)

    with pytest.raises(ConflictError, match="production"):
        await delete_model(DeleteModel(NAME), uow)

    assert_nothing_written(uow, {1: "production", 2: "none"})
    assert NAME in store.state.models


async def test_deleting_a_model_without_production_records_model_deleted(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1, tags={"team": "risk"})
    await promote(store, 1)
    await move(store, 1, "archived")

    await delete_model(DeleteModel(NAME), uow)

    assert uow.committed and NAME not in store.state.models and store.state.versions == {}
    assert uow.changes() == [ModelDeleted(
        model=NAME, before={"name": NAME, "description": "", "tags": {"team": "risk"}})]


# -- versions -----------------------------------------------------------------------------------

async def test_version_numbers_are_allocated_in_sequence_per_model(store: Store) -> None:
    await given_model(store)
    await given_model(store, name="churn")

    numbers = [await register(store), await register(store), await register(store, name="churn"),
               await register(store)]

    assert numbers == [1, 2, 1, 3]
    assert store.state.models[NAME].last_version == 3
    assert sorted(n for (m, n) in store.state.versions if m == store.state.models[NAME].id) == [1, 2, 3]


async def test_a_registered_version_starts_in_none_and_records_version_created(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store)
    version = await register_model_version(RegisterModelVersion(
        NAME, "s3://m/1", run_id="run-1", tags={"k": "v"}, metrics={"auc": 0.9},
        inputs=[{"namespace": "s3://data", "name": "train", "version": "7"}]), uow)

    assert (version.version, version.stage, version.created_by) == (1, Stage.NONE, "alice")
    assert uow.committed
    [change] = uow.changes()
    assert isinstance(change, VersionCreated) and change.version == 1
    assert change.after == {
        "stage": "none", "source": "s3://m/1", "run_id": "run-1", "description": "",
        "tags": {"k": "v"}, "metrics": {"auc": 0.9},
        "inputs": [{"namespace": "s3://data", "name": "train", "version": "7"}]}


@pytest.mark.parametrize("kw", [{"metrics": {"auc": math.nan}}, {"metrics": {"passed": True}},
                                {"source": ""}, {"tags": {"": "v"}}], ids=repr)
async def test_a_refused_registration_allocates_no_number(
    store: Store, uow: FakeUnitOfWork, kw: dict[str, Any]
) -> None:
    await given_model(store)
    with pytest.raises(ValidationError):
        await register(uow, **kw)
    assert not uow.committed
    assert await register(store) == 1


async def test_registering_on_an_unknown_model_is_not_found(uow: FakeUnitOfWork) -> None:
    with pytest.raises(NotFoundError):
        await register(uow, name="nobody")
    assert not uow.committed


async def test_metrics_can_be_patched_while_the_stage_is_none(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store)
    await register(store, metrics={"auc": 0.8, "loss": 0.3})

    version = await update_model_version(
        UpdateModelVersion(NAME, 1, metrics={"auc": 0.9, "loss": None}), uow)

    assert version.metrics == {"auc": 0.9}
    assert store.state.versions[(1, 1)].metrics == {"auc": 0.9}
    assert uow.changes() == [VersionUpdated(model=NAME, version=1,
                                            before={"metrics": {"auc": 0.8, "loss": 0.3}},
                                            after={"metrics": {"auc": 0.9}})]


@pytest.mark.parametrize("stage", ["staging", "production", "archived"])
async def test_metrics_cannot_change_once_the_version_left_none(
    store: Store, uow: FakeUnitOfWork, stage: str
) -> None:
    await given_model(store)
    await register(store, metrics={"auc": 0.8})
    await move(store, 1, "staging")
    if stage != "staging":
        await move(store, 1, "production")
    if stage == "archived":
        await move(store, 1, "archived")

    with pytest.raises(ConflictError, match="none"):
        await update_model_version(
            UpdateModelVersion(NAME, 1, description="new", metrics={"auc": 0.99}), uow)

    assert_nothing_written(uow, {1: stage})
    stored = store.state.versions[(1, 1)]
    assert (stored.metrics, stored.description) == ({"auc": 0.8}, "")


async def test_description_and_tags_change_at_any_stage_and_null_removes_a_tag(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store)
    await register(store, tags={"owner": "ann", "tmp": "1"})
    await promote(store, 1)
    etag_before = store.state.versions[(1, 1)].etag

    version = await update_model_version(UpdateModelVersion(
        NAME, 1, description="serves all traffic", tags={"tmp": None, "slo": "99.9"}), uow)

    assert version.stage is Stage.PRODUCTION
    assert version.description == "serves all traffic"
    assert version.tags == {"owner": "ann", "slo": "99.9"}
    assert version.etag != etag_before
    assert store.state.versions[(1, 1)].tags == {"owner": "ann", "slo": "99.9"}
    [change] = uow.changes()
    assert isinstance(change, VersionUpdated)
    assert change.before == {"description": "", "tags": {"owner": "ann", "tmp": "1"}}
    assert change.after == {"description": "serves all traffic", "tags": {"owner": "ann", "slo": "99.9"}}


async def test_a_stale_if_match_on_a_version_update_is_a_failed_precondition(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1)
    stale = store.state.versions[(1, 1)].etag
    await update_model_version(UpdateModelVersion(NAME, 1, description="first"), unit(store))

    with pytest.raises(PreconditionFailedError):
        await update_model_version(UpdateModelVersion(NAME, 1, description="second", if_match=stale), uow)

    assert not uow.committed and uow.recorded == []
    assert store.state.versions[(1, 1)].description == "first"


@pytest.mark.parametrize("if_match", ["current", "*", '"0-0-0", current'])
async def test_a_matching_if_match_lets_the_update_through(
    store: Store, uow: FakeUnitOfWork, if_match: str
) -> None:
    await given_model(store, versions=1)
    etag = (await get_model_version(NAME, 1, unit(store))).etag
    version = await update_model_version(
        UpdateModelVersion(NAME, 1, description="x", if_match=if_match.replace("current", etag)), uow)
    assert version.description == "x" and uow.committed


async def test_a_weak_etag_never_matches(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=1)
    etag = store.state.versions[(1, 1)].etag
    with pytest.raises(PreconditionFailedError):
        await update_model_version(UpdateModelVersion(NAME, 1, description="x", if_match="W/" + etag), uow)


# -- transitions --------------------------------------------------------------------------------

EMPTY_MANIFEST = "sha256:602e35a92eec4bc0a2ec6ae113f07bfc6933322fb69fe8dee416e5a67217e2a2"


async def test_submit_moves_the_version_and_records_one_stage_change(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1)

    result = await move(uow, 1, "staging", comment="ready for review")

    assert uow.committed and stages(store) == {1: "staging"}
    assert result.version.stage is Stage.STAGING and result.version.revision == 2
    t = result.transition
    assert (t.from_stage, t.to_stage, t.trigger, t.actor, t.comment, t.archived) == (
        Stage.NONE, Stage.STAGING, Trigger.SUBMIT, "alice", "ready for review", [])
    # Leaving none seals the (here empty) file list: the entry records its manifest.
    empty = {"files": [], "digest": EMPTY_MANIFEST}
    assert uow.changes() == [StageChanged(
        model=NAME, version=1, from_stage="none", to_stage="staging", trigger="submit",
        comment="ready for review",
        before={"stage": "none"},
        after={"stage": "staging", "trigger": "submit", "comment": "ready for review",
               "artifacts": empty},
        extra={"archived": [], "artifacts": empty,
               "gates": [{"gate": "stage_table", "passed": True, "detail": "none -> staging by submit"}]},
    )]


async def test_promote_archives_the_incumbent_first_and_records_both_changes(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=2)
    await promote(store, 1)
    await move(store, 2, "staging")

    result = await move(uow, 2, "production", comment="better auc")

    assert uow.committed
    assert stages(store) == {1: "archived", 2: "production"}
    assert result.transition.archived == [1]
    assert result.transition.trigger is Trigger.PROMOTE
    incumbent, promoted = uow.changes()
    assert isinstance(incumbent, StageChanged) and isinstance(promoted, StageChanged)
    assert (incumbent.version, promoted.version) == (1, 2)
    assert (incumbent.from_stage, incumbent.to_stage, incumbent.trigger, incumbent.comment) == (
        "production", "archived", "archive", "better auc")
    assert incumbent.extra == {"superseded_by": 2}
    assert incumbent.before == {"stage": "production"}
    assert incumbent.after == {"stage": "archived", "trigger": "archive", "comment": "better auc"}
    assert (promoted.from_stage, promoted.to_stage, promoted.trigger, promoted.comment) == (
        "staging", "production", "promote", "better auc")
    assert promoted.extra == {"archived": [1], "gates": [{"gate": "stage_table", "passed": True,
                                                          "detail": "staging -> production by promote"}]}
    # The event carries the typed fields beside the rest, in one document.
    data = promoted.event_data()
    assert (data["from_stage"], data["to_stage"], data["trigger"], data["comment"], data["archived"]) == (
        "staging", "production", "promote", "better auc", [1])


async def test_the_archived_incumbent_remembers_the_event_at_which_it_left_production(
    store: Store
) -> None:
    await productions_in_turn(store, 2)
    [seq] = [s for _, s, c in store.changes
             if isinstance(c, StageChanged) and c.version == 1 and c.to_stage == "archived"]
    assert store.state.versions[(1, 1)].left_production_seq == seq
    assert store.state.versions[(1, 2)].left_production_seq is None


async def test_promote_without_an_incumbent_records_one_change(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=1)
    await move(store, 1, "staging")
    result = await move(uow, 1, "production")
    assert result.transition.archived == []
    assert [c.version for c in uow.changes()] == [1]


@pytest.mark.parametrize(("setup", "version", "to_stage", "allowed"), [
    ([], 2, "production", {"staging", "archived"}),
    ([(2, "staging")], 2, "staging", {"production", "archived", "none"}),
    ([(2, "archived")], 2, "none", {"staging", "production"}),
    ([], 1, "staging", {"archived"}),  # version 1 is in production
], ids=["none->production", "staging->staging", "archived->none", "production->staging"])
async def test_a_refused_transition_commits_nothing_and_records_nothing(
    store: Store, uow: FakeUnitOfWork, setup: list[tuple[int, str]], version: int, to_stage: str,
    allowed: set[str]
) -> None:
    await given_model(store, versions=2)
    await promote(store, 1)
    for v, stage in setup:
        await move(store, v, stage)
    before = stages(store)

    with pytest.raises(InvalidTransitionError) as caught:
        await move(uow, version, to_stage)

    assert set(caught.value.allowed) == allowed
    assert_nothing_written(uow, before)
    assert before[1] == "production"  # the incumbent was not archived by a refused promotion


async def test_an_unknown_target_stage_is_a_validation_error(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=1)
    with pytest.raises(ValidationError):
        await move(uow, 1, "prod")
    assert_nothing_written(uow, {1: "none"})


async def test_a_transition_of_a_missing_version_is_not_found(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=1)
    with pytest.raises(NotFoundError):
        await move(uow, 2, "staging")
    assert not uow.committed


@pytest.mark.parametrize("kw", [
    {"expected_stage": "none"},
    {"expected_production_version": None},
    {"expected_production_version": 2},
    {"if_match": '"stale"'},
], ids=repr)
async def test_a_stale_expectation_is_a_failed_precondition(
    store: Store, uow: FakeUnitOfWork, kw: dict[str, Any]
) -> None:
    await given_model(store, versions=2)
    await promote(store, 1)
    await move(store, 2, "staging")

    with pytest.raises(PreconditionFailedError):
        await move(uow, 2, "production", **kw)

    assert_nothing_written(uow, {1: "production", 2: "staging"})


async def test_a_stale_etag_from_before_the_last_move_is_a_failed_precondition(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1)
    stale = store.state.versions[(1, 1)].etag
    await move(store, 1, "staging")

    with pytest.raises(PreconditionFailedError):
        await move(uow, 1, "production", if_match=stale)
    assert_nothing_written(uow, {1: "staging"})


async def test_expecting_a_production_version_when_there_is_none_is_a_failed_precondition(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1)
    await move(store, 1, "staging")
    with pytest.raises(PreconditionFailedError):
        await move(uow, 1, "production", expected_production_version=1)
    assert_nothing_written(uow, {1: "staging"})


async def test_expectations_that_hold_let_the_promotion_through(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=2)
    await promote(store, 1)
    await move(store, 2, "staging")
    etag = store.state.versions[(1, 2)].etag

    await move(uow, 2, "production", expected_stage="staging", expected_production_version=1,
               if_match=etag)
    assert uow.committed and stages(store) == {1: "archived", 2: "production"}


async def test_expecting_no_production_version_holds_on_a_first_promotion(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1)
    await move(store, 1, "staging")
    await move(uow, 1, "production", expected_production_version=None)
    assert uow.committed and stages(store) == {1: "production"}


async def test_rollback_to_the_most_recent_previous_production_version(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await productions_in_turn(store, 3)  # 3 in production; 2 left it last

    result = await move(uow, 2, "production", comment="v3 misfires on weekends")

    assert stages(store) == {1: "archived", 2: "production", 3: "archived"}
    assert result.transition.trigger is Trigger.ROLLBACK
    assert result.transition.archived == [3]
    incumbent, rolled_back = uow.changes()
    assert (incumbent.version, incumbent.extra["superseded_by"]) == (3, 2)
    assert (rolled_back.from_stage, rolled_back.to_stage, rolled_back.trigger, rolled_back.comment) == (
        "archived", "production", "rollback", "v3 misfires on weekends")
    assert rolled_back.extra == {"archived": [3], "gates": [
                                     {"gate": "stage_table", "passed": True,
                                      "detail": "archived -> production by rollback"},
                                     {"gate": "previous_production", "passed": True,
                                      "detail": "most recent previous production version"},
                                     {"gate": "comment", "passed": True, "detail": "comment given"}]}


async def test_rollback_to_an_older_previous_production_version_fails_its_gate(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await productions_in_turn(store, 3)
    before = stages(store)

    with pytest.raises(GateFailedError) as caught:
        await move(uow, 1, "production", comment="go back further")

    assert caught.value.failed == ["previous_production"]
    assert {r.gate: r.passed for r in caught.value.results} == {
        "stage_table": True, "previous_production": False, "comment": True}
    assert_nothing_written(uow, before)


@pytest.mark.parametrize("comment", [None, "", "  "])
async def test_rollback_without_a_comment_fails_its_gate(
    store: Store, uow: FakeUnitOfWork, comment: str | None
) -> None:
    await productions_in_turn(store, 3)
    before = stages(store)

    with pytest.raises(GateFailedError) as caught:
        await move(uow, 2, "production", comment=comment)

    assert caught.value.failed == ["comment"]
    assert_nothing_written(uow, before)


async def test_a_rollback_failing_both_gates_reports_both(store: Store, uow: FakeUnitOfWork) -> None:
    await productions_in_turn(store, 3)
    with pytest.raises(GateFailedError) as caught:
        await move(uow, 1, "production")
    assert sorted(caught.value.failed) == ["comment", "previous_production"]
    assert [r.gate for r in caught.value.results] == ["stage_table", "previous_production", "comment"]
    assert not uow.committed


async def test_a_version_archived_without_ever_being_in_production_cannot_be_rolled_back_to(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=2)
    await move(store, 2, "archived")
    with pytest.raises(GateFailedError) as caught:
        await move(uow, 2, "production", comment="why not")
    assert caught.value.failed == ["previous_production"]
    assert_nothing_written(uow, {1: "none", 2: "archived"})


async def test_the_rollback_candidate_is_the_latest_to_leave_production_not_the_highest_number(
    store: Store
) -> None:
    await productions_in_turn(store, 2)                       # 2 in production, 1 archived
    await move(store, 1, "production", comment="roll back")   # 1 back; 2 archived (most recent)
    await register(store)                                     # version 3
    await promote(store, 3)                                   # 1 archived again, now the most recent

    with pytest.raises(GateFailedError):
        await move(store, 2, "production", comment="to 2")
    await move(store, 1, "production", comment="to 1")
    assert stages(store) == {1: "production", 2: "archived", 3: "archived"}


async def test_archiving_the_production_version_makes_it_the_rollback_candidate(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1)
    await promote(store, 1)
    await move(store, 1, "archived", comment="incident")

    result = await move(uow, 1, "production", comment="incident over")

    assert result.transition.trigger is Trigger.ROLLBACK
    assert result.transition.archived == []
    assert stages(store) == {1: "production"}


async def test_withdraw_restore_and_archive_follow_the_table(store: Store) -> None:
    await given_model(store, versions=1)
    triggers = []
    for target in ["staging", "none", "archived", "staging", "archived"]:
        triggers.append((await move(store, 1, target)).transition.trigger.value)
    assert triggers == ["submit", "withdraw", "archive", "restore", "archive"]
    assert stages(store) == {1: "archived"}


# -- aliases ------------------------------------------------------------------------------------

async def test_setting_an_alias_records_alias_set_with_no_previous_version(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=2)

    version, protected = await set_alias(SetAlias(NAME, "champion", 1), uow)

    assert version.version == 1 and not protected and uow.committed
    assert uow.changes() == [AliasSet(
        model=NAME, version=1, before=None,
        after={"alias": "champion", "version": 1, "protected": False},
        extra={"alias": "champion", "previous_version": None})]
    assert (await get_alias(NAME, "champion", unit(store)))[0].version == 1


async def test_moving_an_alias_records_its_previous_version(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=2)
    await set_alias(SetAlias(NAME, "champion", 1), unit(store))

    await set_alias(SetAlias(NAME, "champion", 2), uow)

    [change] = uow.changes()
    assert isinstance(change, AliasSet) and change.version == 2
    assert change.before == {"alias": "champion", "version": 1, "protected": False}
    assert change.extra == {"alias": "champion", "previous_version": 1}
    assert (await get_alias(NAME, "champion", unit(store)))[0].version == 2


async def test_setting_an_alias_to_where_it_points_records_nothing(
    store: Store, uow: FakeUnitOfWork
) -> None:
    await given_model(store, versions=1)
    await set_alias(SetAlias(NAME, "champion", 1), unit(store))
    await set_alias(SetAlias(NAME, "champion", 1), uow)
    assert not uow.committed and uow.recorded == []


async def test_an_alias_to_a_missing_version_is_not_found(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=1)
    with pytest.raises(NotFoundError):
        await set_alias(SetAlias(NAME, "champion", 2), uow)
    assert not uow.committed and store.state.aliases == {}


@pytest.mark.parametrize("alias", ["latest", "v3", "bad alias"])
async def test_a_reserved_or_malformed_alias_is_refused(
    store: Store, uow: FakeUnitOfWork, alias: str
) -> None:
    await given_model(store, versions=1)
    with pytest.raises(ValidationError):
        await set_alias(SetAlias(NAME, alias, 1), uow)
    assert not uow.committed and store.state.aliases == {}


async def test_deleting_an_alias_records_alias_deleted(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=1)
    await set_alias(SetAlias(NAME, "champion", 1), unit(store))

    await delete_alias(DeleteAlias(NAME, "champion"), uow)

    assert uow.committed
    assert uow.changes() == [AliasDeleted(
        model=NAME, version=1, before={"alias": "champion", "version": 1, "protected": False},
        after=None, extra={"alias": "champion", "previous_version": 1})]
    with pytest.raises(NotFoundError):
        await get_alias(NAME, "champion", unit(store))


async def test_deleting_a_missing_alias_is_not_found(store: Store, uow: FakeUnitOfWork) -> None:
    await given_model(store, versions=1)
    with pytest.raises(NotFoundError):
        await delete_alias(DeleteAlias(NAME, "champion"), uow)
    assert not uow.committed
