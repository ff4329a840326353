"""Rollback walks back the production history and never flip-flops (issue 13): a version that left
production *by a rollback* is never a rollback target again, so a second rollback goes one step
further back, or is refused when no step is left. It returns only through restore -> staging ->
promote, and once it leaves production normally again it is a candidate again. Also: the
min_staging_time gate of a version not in staging says where it is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry.domain.errors import GateFailedError, PreconditionFailedError
from registry.domain.gates import Candidate, GateContext, GateResult, Policy, evaluate
from registry.domain.model import ModelVersion
from registry.domain.stages import Stage, Trigger
from registry.services.commands import RollbackModel
from registry.services.transitions import TransitionResult, rollback_model
from tests.unit.fakes import FakeUnitOfWork, Store
from tests.unit.test_services import NAME, given_model, move, productions_in_turn, promote, stages

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NO_TARGET = "no version to roll back to: no archived version left production other than by a rollback"


@pytest.fixture
def store() -> Store:
    return Store()


async def rollback(store: Store, comment: str | None = "bad release", **kw: object) -> TransitionResult:
    return await rollback_model(RollbackModel(NAME, comment, **kw), FakeUnitOfWork(store))  # type: ignore[arg-type]


def production(store: Store) -> int | None:
    found = [n for n, stage in stages(store).items() if stage == "production"]
    return found[0] if found else None


def flags(store: Store) -> dict[int, bool]:
    return {n: v.left_by_rollback for (_, n), v in sorted(store.state.versions.items())}


# -- the domain: how a version left production ---------------------------------------------------


def version(stage: Stage) -> ModelVersion:
    return ModelVersion(model_id=1, model=NAME, version=1, stage=stage, source="s3://m", run_id=None,
                        description="", tags={}, metrics={}, inputs=[], created_at=NOW, updated_at=NOW,
                        created_by="alice")


def test_a_version_archived_by_a_rollback_remembers_it_and_is_no_rollback_target() -> None:
    v = version(Stage.PRODUCTION)
    v.move(Trigger.ARCHIVE, NOW, comment="v1 misfires", sequence=7, by_rollback=True)
    assert (v.stage, v.left_production_seq, v.left_by_rollback) == (Stage.ARCHIVED, 7, True)
    assert not v.is_rollback_target


def test_leaving_production_normally_clears_the_mark_and_makes_a_rollback_target() -> None:
    v = version(Stage.PRODUCTION)
    v.move(Trigger.ARCHIVE, NOW, comment=None, sequence=3, by_rollback=True)
    for trigger in (Trigger.RESTORE, Trigger.PROMOTE):  # back through staging, with its gates
        v.move(trigger, NOW, comment=None, sequence=4)
        assert v.left_by_rollback, "the mark stays until the version leaves production again"
    v.move(Trigger.ARCHIVE, NOW, comment="retired", sequence=9)
    assert (v.left_production_seq, v.left_by_rollback, v.is_rollback_target) == (9, False, True)


def test_a_version_restored_and_archived_from_staging_keeps_its_mark() -> None:
    v = version(Stage.PRODUCTION)
    v.move(Trigger.ARCHIVE, NOW, comment=None, sequence=3, by_rollback=True)
    v.move(Trigger.RESTORE, NOW, comment=None, sequence=4)
    v.move(Trigger.ARCHIVE, NOW, comment=None, sequence=5)
    assert (v.left_production_seq, v.left_by_rollback, v.is_rollback_target) == (3, True, False)


@pytest.mark.parametrize(("stage", "trigger"), [(Stage.STAGING, Trigger.ARCHIVE),
                                                (Stage.NONE, Trigger.ARCHIVE),
                                                (Stage.STAGING, Trigger.PROMOTE)])
def test_only_the_production_version_is_archived_by_a_rollback(stage: Stage, trigger: Trigger) -> None:
    v = version(stage)
    with pytest.raises(ValueError, match="only the production version"):
        v.move(trigger, NOW, comment=None, sequence=1, by_rollback=True)
    assert (v.stage, v.revision, v.left_by_rollback) == (stage, 1, False), "nothing changed"


# -- the gates -------------------------------------------------------------------------------------


def test_the_rollback_gate_names_a_version_that_left_production_by_a_rollback() -> None:
    ctx = GateContext(candidate=Candidate(3, "", None, {}, NOW, stage=Stage.ARCHIVED, left_by_rollback=True),
                      now=NOW, comment="again", rollback_candidate=1)
    [previous, comment] = evaluate(Trigger.ROLLBACK, Stage.PRODUCTION, ctx)
    assert previous == GateResult(
        "previous_production", False, "version 3 left production by a rollback: it is never a rollback "
        "target again (restore it to staging and promote it, with its gates)")
    assert comment.passed


@pytest.mark.parametrize(("stage", "detail"), [
    (Stage.NONE, "the version has not entered staging: 3 s in staging are required"),
    (Stage.PRODUCTION, "the version is in production, not in staging: 3 s in staging are required"),
])
def test_min_staging_time_of_a_version_not_in_staging_says_where_it_is(stage: Stage, detail: str) -> None:
    # Registered long ago: its stage_since (when it entered its stage) is no time in staging.
    cand = Candidate(7, "d", "r", {}, NOW - timedelta(days=30), stage=stage)
    ctx = GateContext(candidate=cand, now=NOW, policy=Policy(min_staging_seconds=3))
    # Neither none -> production nor production -> production is an edge: the policy is still
    # evaluated, so the caller sees everything at once.
    assert evaluate(None, Stage.PRODUCTION, ctx) == [GateResult("min_staging_time", False, detail)]


def test_min_staging_time_in_staging_still_counts_seconds() -> None:
    cand = Candidate(7, "d", "r", {}, NOW - timedelta(seconds=5), stage=Stage.STAGING)
    ctx = GateContext(candidate=cand, now=NOW, policy=Policy(min_staging_seconds=3))
    assert evaluate(Trigger.PROMOTE, Stage.PRODUCTION, ctx) == [
        GateResult("min_staging_time", True, "in staging for 5 s of the 3 s required")]


# -- the use case: the walk back -------------------------------------------------------------------


async def test_rollbacks_walk_back_the_production_history_then_are_refused(store: Store) -> None:
    await productions_in_turn(store, 3)  # v1, v2, v3 promoted in order; v3 in production

    first = await rollback(store)
    assert (first.version.version, first.transition.archived) == (2, [3])
    second = await rollback(store)
    assert (second.version.version, second.transition.archived) == (1, [2]), "not back to v3"
    assert stages(store) == {1: "production", 2: "archived", 3: "archived"}
    assert flags(store) == {1: False, 2: True, 3: True}

    with pytest.raises(GateFailedError) as refused:
        await rollback(store)
    assert refused.value.failed == ["previous_production"]
    assert refused.value.results[0].detail == NO_TARGET
    assert production(store) == 1


async def test_a_version_rolled_back_is_refused_as_a_rollback_target_by_a_transition(store: Store) -> None:
    await productions_in_turn(store, 3)
    await rollback(store)  # v3 -> v2

    with pytest.raises(GateFailedError) as refused:
        await move(store, 3, "production", comment="v3 after all")
    assert refused.value.failed == ["previous_production"]
    assert "version 3 left production by a rollback" in refused.value.results[1].detail
    assert production(store) == 2
    # The step back is still there, by a transition too.
    result = await move(store, 1, "production", comment="v2 too")
    assert (result.transition.trigger, result.transition.archived) == (Trigger.ROLLBACK, [2])


async def test_a_rolled_back_version_returns_through_staging_and_is_a_candidate_after_a_normal_exit(
    store: Store,
) -> None:
    await productions_in_turn(store, 2)
    await rollback(store)  # v2 -> v1; v2 marked
    await move(store, 2, "staging")  # restore
    promoted = await move(store, 2, "production")
    assert (promoted.transition.trigger, promoted.transition.archived) == (Trigger.PROMOTE, [1])
    assert flags(store) == {1: False, 2: True}, "the mark changes only when v2 leaves production"

    result = await rollback(store)  # v1 left production normally (superseded by the promotion)
    assert (result.version.version, result.transition.archived) == (1, [2])
    await move(store, 2, "staging")
    await move(store, 2, "production")
    await move(store, 2, "archived", comment="retired")  # a normal exit: a candidate again
    assert flags(store) == {1: False, 2: False}
    assert (await rollback(store)).version.version == 2, "no incumbent: the last to leave comes back"


async def test_a_rolled_back_version_restored_and_archived_again_is_still_no_target(store: Store) -> None:
    await productions_in_turn(store, 2)
    await rollback(store)  # v2 -> v1
    await move(store, 2, "staging")
    await move(store, 2, "archived")
    with pytest.raises(GateFailedError):
        await rollback(store)
    assert production(store) == 1


async def test_expected_production_version_is_checked_before_the_walk_ends(store: Store) -> None:
    """A rerun with the version it rolled back from is told the production version moved (412),
    also when no step back is left (which alone would be 422)."""
    await productions_in_turn(store, 2)
    assert (await rollback(store, expected_production_version=2)).version.version == 1
    with pytest.raises(PreconditionFailedError, match="the production version is 1, not 2"):
        await rollback(store, expected_production_version=2)
    with pytest.raises(GateFailedError):
        await rollback(store, expected_production_version=1)
    assert production(store) == 1


async def test_with_expected_production_version_only_one_of_repeated_rollbacks_applies(store: Store) -> None:
    await productions_in_turn(store, 3)
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append((await rollback(store, expected_production_version=3)).version.version)
        except PreconditionFailedError:
            outcomes.append(412)
    assert outcomes == [2, 412, 412, 412, 412]
    assert production(store) == 2


async def test_a_rollback_with_no_incumbent_marks_nothing(store: Store) -> None:
    await given_model(store, versions=2)
    await promote(store, 1)
    await promote(store, 2)
    await move(store, 2, "archived", comment="incident")  # nothing in production now
    first = await rollback(store)
    assert (first.version.version, first.transition.archived) == (2, [])  # the last to leave production
    assert flags(store) == {1: False, 2: False}
    assert (await rollback(store)).version.version == 1  # v2 was archived by this rollback
    assert flags(store) == {1: False, 2: True}
