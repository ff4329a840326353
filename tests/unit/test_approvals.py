"""Transition requests, approvals, checks that void them, stage policies and rollback, against the
in-memory unit of work, with tokens of different roles and principals.

Each test arranges its registry through ``store`` (every helper call is its own unit of work, as
with the real factory) and acts through one fresh unit, whose ``committed`` and ``recorded``
therefore describe the call under test alone.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
import structlog.testing

from registry.api.errors import status_of
from registry.domain.errors import (
    ConflictError,
    ForbiddenError,
    GateFailedError,
    InvalidTransitionError,
    NotFoundError,
    OpenRequestExistsError,
    PreconditionFailedError,
    ValidationError,
)
from registry.domain.events import (
    ApprovalsVoided,
    CheckReported,
    PolicyChanged,
    RequestApplied,
    RequestApproved,
    RequestCancelled,
    RequestCreated,
    RequestRejected,
    StageChanged,
    SystemChange,
)
from registry.domain.gates import Policy
from registry.domain.permissions import Role
from registry.domain.stages import Stage, Trigger
from registry.services.approvals import Decision, decide, get_request, list_requests, request_transition
from registry.services.checks import report_check
from registry.services.commands import (
    CreateModel,
    DecideRequest,
    RegisterModelVersion,
    ReportCheck,
    RequestTransition,
    RollbackModel,
    SetPolicy,
    TransitionModelVersion,
)
from registry.services.models import create_model
from registry.services.policies import delete_policy, get_policy, set_policy
from registry.services.ports import Actor, RequestRecord
from registry.services.transitions import TransitionResult, rollback_model, transition_model_version
from registry.services.versions import register_model_version
from tests.unit.fakes import FakeUnitOfWork, Store

NAME = "fraud"

# Tokens: ``name`` is what the audit log records, ``principal`` who stands behind the token.
ADMIN = Actor("admin-token", "req-admin", Role.ADMIN, principal="root")
CI = Actor("ci-token", "req-ci", Role.EDITOR, principal="ci")
CI_RELEASE = Actor("ci-release-token", "req-ci-2", Role.RELEASER, principal="ci")  # same principal
DANA = Actor("dana-token", "req-dana", Role.EDITOR, principal="dana")
SAM = Actor("sam-token", "req-sam", Role.STAGER, principal="sam")
ANN = Actor("ann-token", "req-ann", Role.RELEASER, principal="ann")
ANN_LAPTOP = Actor("ann-laptop", "req-ann-2", Role.RELEASER, principal="ann")
BOB = Actor("bob-token", "req-bob", Role.RELEASER, principal="bob")
CAROL = Actor("carol-token", "req-carol", Role.RELEASER, principal="carol")
VIC = Actor("vic-token", "req-vic", Role.VIEWER, principal="vic")
CHURN_ONLY = Actor("churn-releaser", "req-churn", Role.ADMIN, models=("churn*",), principal="zed")


@pytest.fixture
def store() -> Store:
    return Store()


def as_(actor: Actor, store: Store) -> FakeUnitOfWork:
    return FakeUnitOfWork(store, actor)


async def given_model(store: Store, versions: int = 0, name: str = NAME,
                      metrics: dict[str, float] | None = None) -> None:
    await create_model(CreateModel(name), FakeUnitOfWork(store))
    for _ in range(versions):
        await register_model_version(RegisterModelVersion(name, "s3://models/x", metrics=metrics or {}),
                                     FakeUnitOfWork(store))


async def move(store: Store, version: int, to_stage: str, actor: Actor = ADMIN, name: str = NAME,
               **kw: Any) -> TransitionResult:
    return await transition_model_version(TransitionModelVersion(name, version, to_stage, **kw),
                                          as_(actor, store))


async def set_rules(store: Store, stage: str, rules: dict[str, Any], name: str = NAME) -> None:
    await set_policy(SetPolicy(name, stage, rules), as_(ADMIN, store))


async def production_and_candidate(store: Store, rules: dict[str, Any] | None = None) -> None:
    """Version 1 in production, version 2 in staging; ``rules`` for entering production."""
    await given_model(store, versions=2)
    await move(store, 1, "staging")
    await move(store, 1, "production")
    await move(store, 2, "staging")
    if rules is not None:
        await set_rules(store, "production", rules)


async def open_request(store: Store, actor: Actor = CI, version: int = 2, to_stage: str = "production",
                       comment: str | None = "ship v2") -> RequestRecord:
    return await request_transition(RequestTransition(NAME, version, to_stage, comment), as_(actor, store))


async def decide_as(store: Store, actor: Actor, request_id: int, decision: str = "approve",
                    comment: str | None = None) -> Decision:
    return await decide(DecideRequest(request_id, decision, comment), as_(actor, store))


def stored(store: Store, request_id: int = 1) -> RequestRecord:
    return store.state.requests[request_id]


def stages(store: Store) -> dict[int, str]:
    return {n: v.stage.value for (_, n), v in sorted(store.state.versions.items())}


def types(uow: FakeUnitOfWork) -> list[str]:
    return [change.type for change in uow.changes()]


class Unchanged:
    """What the store held before a refused call, to show that nothing changed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.state = copy.deepcopy(store.state)
        self.changes = len(store.changes)

    def check(self, uow: FakeUnitOfWork) -> None:
        assert not uow.committed
        assert self.store.state == self.state
        assert len(self.store.changes) == self.changes


async def refused(store: Store, actor: Actor, error: type[Exception], call: Any) -> Any:
    """Run ``call(uow)`` as ``actor``; it must raise ``error`` and leave the store as it was."""
    before = Unchanged(store)
    uow = as_(actor, store)
    with pytest.raises(error) as caught:
        await call(uow)
    before.check(uow)
    return caught.value


# -- requesting a transition ---------------------------------------------------------------------

async def test_a_request_opens_pending_and_records_it(store: Store) -> None:
    await production_and_candidate(store)
    uow = as_(CI, store)

    request = await request_transition(RequestTransition(NAME, 2, "production", "ship v2"), uow)

    assert uow.committed
    assert (request.id, request.version, request.to_stage, request.state) == (1, 2, "production", "pending")
    assert (request.requested_by, request.requester_principal, request.comment) == ("ci-token", "ci", "ship v2")
    assert request.approvals == []
    assert stored(store) == request
    assert uow.changes() == [RequestCreated(
        model=NAME, version=2, after={"id": 1, "to_stage": "production", "state": "pending",
                                      "requested_by": "ci-token", "requester_principal": "ci",
                                      "approved_by": []},
        extra={"request": 1, "comment": "ship v2"})]
    assert stages(store) == {1: "production", 2: "staging"}  # a request moves nothing


async def test_a_request_for_a_move_the_stage_table_refuses_is_an_invalid_transition(store: Store) -> None:
    await given_model(store, versions=1)
    err = await refused(store, CI, InvalidTransitionError, lambda uow: request_transition(
        RequestTransition(NAME, 1, "production"), uow))
    assert status_of(err)[0] == 409 and set(err.allowed) == {"staging", "archived"}


@pytest.mark.parametrize("state", ["pending", "approved"])
async def test_a_second_request_for_the_same_move_is_a_conflict_naming_the_open_one(
    store: Store, state: str
) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store)
    if state == "approved":
        await decide_as(store, ANN, 1)
    assert stored(store).state == state

    err = await refused(store, DANA, OpenRequestExistsError, lambda uow: request_transition(
        RequestTransition(NAME, 2, "production"), uow))

    assert (*status_of(err)[:2], err.request_id) == (409, "conflict", 1)
    assert err.extensions() == {"request_id": 1}
    assert isinstance(err, ConflictError)


async def test_a_request_for_another_move_of_the_same_version_may_be_open_beside_it(store: Store) -> None:
    await production_and_candidate(store)
    await open_request(store)
    other = await open_request(store, to_stage="archived")
    assert (other.id, other.to_stage) == (2, "archived")


async def test_after_a_request_is_closed_the_same_move_may_be_requested_again(store: Store) -> None:
    await production_and_candidate(store)
    await open_request(store)
    await decide_as(store, CI, 1, "cancel")
    again = await open_request(store)
    assert (again.id, again.state) == (2, "pending")


async def test_requesting_a_transition_needs_the_editor_role(store: Store) -> None:
    await production_and_candidate(store)
    await refused(store, VIC, ForbiddenError, lambda uow: request_transition(
        RequestTransition(NAME, 2, "production"), uow))


async def test_a_request_on_a_model_outside_the_tokens_scope_is_not_found(store: Store) -> None:
    await production_and_candidate(store)
    await refused(store, CHURN_ONLY, NotFoundError, lambda uow: request_transition(
        RequestTransition(NAME, 2, "production"), uow))


async def test_a_request_on_a_missing_version_is_not_found(store: Store) -> None:
    await production_and_candidate(store)
    await refused(store, CI, NotFoundError, lambda uow: request_transition(
        RequestTransition(NAME, 9, "production"), uow))


@pytest.mark.parametrize("cmd", [RequestTransition(NAME, 2, "prod"),
                                 RequestTransition(NAME, 2, "production", "x" * 5001)], ids=["stage", "comment"])
async def test_a_malformed_request_is_a_validation_error(store: Store, cmd: RequestTransition) -> None:
    await production_and_candidate(store)
    await refused(store, CI, ValidationError, lambda uow: request_transition(cmd, uow))


# -- approving -------------------------------------------------------------------------------------

async def test_an_approval_short_of_the_quorum_is_recorded_and_the_request_stays_pending(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    uow = as_(ANN, store)

    decision = await decide(DecideRequest(1, "approve", "looks good"), uow)

    assert uow.committed
    assert (decision.applied, decision.version, decision.request.state) == (False, None, "pending")
    [approval] = stored(store).approvals
    assert {k: approval[k] for k in ("principal", "actor", "comment", "voided_at")} == {
        "principal": "ann", "actor": "ann-token", "comment": "looks good", "voided_at": None}
    assert approval["at"].endswith("Z")
    [approvals_gate] = [r for r in decision.results if r.gate == "approvals"]
    assert not approvals_gate.passed
    assert approvals_gate.detail == "1 of 2 required approvals on request 1"
    assert uow.changes() == [RequestApproved(
        model=NAME, version=2,
        before={"id": 1, "to_stage": "production", "state": "pending", "requested_by": "ci-token",
                "requester_principal": "ci", "approved_by": []},
        after={"id": 1, "to_stage": "production", "state": "pending", "requested_by": "ci-token",
               "requester_principal": "ci", "approved_by": ["ann"]},
        extra={"request": 1, "comment": "looks good", "quorum": False})]
    assert stages(store) == {1: "production", 2: "staging"}


@pytest.mark.parametrize("approver", [CI_RELEASE, ADMIN], ids=["requester principal's releaser token",
                                                               "admin requester"])
async def test_the_requesters_principal_may_not_approve_with_any_token(store: Store, approver: Actor) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    requester = CI if approver is CI_RELEASE else ADMIN
    await open_request(store, requester)
    err = await refused(store, approver, ForbiddenError, lambda uow: decide(DecideRequest(1, "approve"), uow))
    assert status_of(err)[0] == 403 and "requester" in err.detail


async def test_the_same_principal_approving_twice_is_a_conflict(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    await decide_as(store, ANN, 1)
    err = await refused(store, ANN_LAPTOP, ConflictError, lambda uow: decide(DecideRequest(1, "approve"), uow))
    assert status_of(err)[0] == 409 and "'ann'" in err.detail
    assert [a["principal"] for a in stored(store).approvals] == ["ann"]


@pytest.mark.parametrize("actor", [DANA, SAM, VIC], ids=["editor", "stager", "viewer"])
async def test_approving_needs_the_releaser_role(store: Store, actor: Actor) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    await refused(store, actor, ForbiddenError, lambda uow: decide(DecideRequest(1, "approve"), uow))


async def test_the_approval_completing_the_quorum_applies_the_move(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    await decide_as(store, ANN, 1)
    uow = as_(BOB, store)

    decision = await decide(DecideRequest(1, "approve", "ok from bob"), uow)

    assert uow.committed and decision.applied
    assert decision.version is not None and decision.version.stage is Stage.PRODUCTION
    assert decision.version.version == 2
    assert stages(store) == {1: "archived", 2: "production"}
    request = stored(store)
    assert (request.state, request.decided_by) == ("applied", "bob-token")
    assert [a["principal"] for a in request.valid_approvals] == ["ann", "bob"]
    assert decision.request.state == "applied"
    assert [(r.gate, r.passed) for r in decision.results] == [("stage_table", True), ("approvals", True)]


async def test_an_applied_approval_names_the_requester_and_every_approver_in_the_stage_change(
    store: Store
) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    await decide_as(store, ANN, 1)
    uow = as_(BOB, store)
    await decide(DecideRequest(1, "approve"), uow)

    [promoted] = [c for c in uow.changes() if isinstance(c, StageChanged) and c.version == 2]
    assert promoted.after == {"stage": "production", "trigger": "promote", "comment": "ship v2",
                              "request": 1, "requested_by": "ci", "approved_by": ["ann", "bob"]}
    assert promoted.extra["request"] == 1
    assert promoted.extra["requested_by"] == "ci"
    assert promoted.extra["approved_by"] == ["ann", "bob"]
    assert promoted.extra["archived"] == [1]
    assert promoted.extra["gates"] == [
        {"gate": "stage_table", "passed": True, "detail": "staging -> production by promote"},
        {"gate": "approvals", "passed": True, "detail": "2 of 2 required approvals on request 1"}]
    [approved] = [c for c in uow.changes() if isinstance(c, RequestApproved)]
    assert approved.extra == {"request": 1, "comment": None, "quorum": True}
    [applied] = [c for c in uow.changes() if isinstance(c, RequestApplied)]
    assert (applied.before["state"], applied.after["state"]) == ("approved", "applied")


async def test_an_applied_approval_records_every_change_once(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    uow = as_(ANN, store)
    await decide(DecideRequest(1, "approve"), uow)
    assert sorted(types(uow)) == sorted([
        "transition_request.approved", "model_version.stage_changed", "model_version.stage_changed",
        "transition_request.applied"])
    # The incumbent leaves production before the candidate enters it.
    assert [c.version for c in uow.changes() if isinstance(c, StageChanged)] == [1, 2]


async def test_an_applied_approval_records_approved_then_the_stage_changes_then_applied(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    uow = as_(ANN, store)
    await decide(DecideRequest(1, "approve"), uow)
    assert types(uow) == ["transition_request.approved", "model_version.stage_changed",
                          "model_version.stage_changed", "transition_request.applied"]


async def test_an_applied_approval_writes_the_canonical_stage_changed_line_once_committed(
    store: Store
) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    with structlog.testing.capture_logs() as logs:
        await decide(DecideRequest(1, "approve"), as_(ANN, store))
    [line] = [e for e in logs if e["event"] == "stage_changed"]
    assert (line["model"], line["version"], line["from_stage"], line["to_stage"], line["trigger"],
            line["archived"], line["request"], line["actor"]) == (
        NAME, 2, "staging", "production", "promote", [1], 1, "ann-token")


async def test_an_approval_short_of_its_quorum_writes_no_stage_changed_line(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    with structlog.testing.capture_logs() as logs:
        await decide(DecideRequest(1, "approve"), as_(ANN, store))
    assert [e for e in logs if e["event"] == "stage_changed"] == []


async def test_without_auto_apply_the_quorum_approves_but_moves_nothing(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store)
    uow = as_(ANN, store)

    decision = await decide(DecideRequest(1, "approve"), uow)

    assert uow.committed
    assert (decision.applied, decision.version, decision.request.state) == (False, None, "approved")
    assert stored(store).state == "approved"
    assert types(uow) == ["transition_request.approved"]
    assert stages(store) == {1: "production", 2: "staging"}
    assert all(r.passed for r in decision.results)


async def test_an_approved_request_still_takes_approvals_so_a_raised_quorum_can_be_met(
    store: Store
) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store)
    await decide_as(store, ANN, 1)
    assert stored(store).state == "approved"
    await set_policy(SetPolicy(NAME, "production", {"required_approvals": 2, "auto_apply": False}),
                     as_(ADMIN, store))

    await decide_as(store, BOB, 1)

    assert stored(store).state == "approved"
    assert [a["principal"] for a in stored(store).valid_approvals] == ["ann", "bob"]


async def test_the_requesters_own_transition_consumes_the_approved_request(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2, "auto_apply": False})
    await open_request(store)
    await decide_as(store, ANN, 1)
    await decide_as(store, BOB, 1)
    uow = as_(CI, store)  # an editor: below the releaser the move needs, let through by approvals

    result = await transition_model_version(TransitionModelVersion(NAME, 2, "production"), uow)

    assert uow.committed and stages(store) == {1: "archived", 2: "production"}
    assert result.transition.request == 1
    assert result.transition.actor == "ci-token"
    assert (stored(store).state, stored(store).decided_by) == ("applied", "ci-token")
    [promoted] = [c for c in uow.changes() if isinstance(c, StageChanged) and c.version == 2]
    assert promoted.after["request"] == 1
    assert promoted.after["requested_by"] == "ci"
    assert promoted.after["approved_by"] == ["ann", "bob"]
    assert sorted(types(uow)) == sorted(["model_version.stage_changed", "model_version.stage_changed",
                                         "transition_request.applied"])


async def test_a_gate_failing_at_the_quorum_leaves_the_request_approved_for_the_requester(
    store: Store
) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "min_staging_seconds": 3600})
    await open_request(store)
    uow = as_(ANN, store)

    decision = await decide(DecideRequest(1, "approve"), uow)

    assert uow.committed and not decision.applied and decision.version is None
    assert decision.request.state == "approved" and stored(store).state == "approved"
    assert {r.gate: r.passed for r in decision.results} == {
        "stage_table": True, "min_staging_time": False, "approvals": True}
    assert types(uow) == ["transition_request.approved"]
    assert stages(store) == {1: "production", 2: "staging"}

    store.clock += timedelta(hours=1)
    result = await move(store, 2, "production", actor=CI)

    assert result.transition.request == 1
    assert stored(store).state == "applied"
    assert stages(store) == {1: "archived", 2: "production"}


async def test_the_requesters_transition_before_the_quorum_fails_the_approvals_gate(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    await decide_as(store, ANN, 1)
    err = await refused(store, CI, GateFailedError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 2, "production"), uow))
    assert err.failed == ["approvals"]
    assert err.results[-1].detail == "1 of 2 required approvals on request 1"


@pytest.mark.parametrize("actor", [DANA, ANN], ids=["another editor", "a releaser"])
async def test_the_approvals_gate_counts_only_the_callers_own_request(store: Store, actor: Actor) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store)
    await decide_as(store, BOB, 1)  # ci's request is approved

    err = await refused(store, actor, GateFailedError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 2, "production"), uow))

    assert err.failed == ["approvals"]
    assert err.results[-1].detail == "0 of 1 required approvals (no open transition request by this principal)"
    assert stored(store).state == "approved"


@pytest.mark.parametrize("actor", [CI, SAM], ids=["editor", "stager"])
async def test_below_releaser_a_promotion_without_an_approvals_policy_is_forbidden(
    store: Store, actor: Actor
) -> None:
    await production_and_candidate(store, {"required_checks": ["ci"]})
    err = await refused(store, actor, ForbiddenError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 2, "production"), uow))
    assert "releaser" in err.detail


@pytest.mark.parametrize("actor", [CI, SAM], ids=["editor", "stager"])
async def test_below_releaser_a_promotion_without_a_request_fails_the_approvals_gate(
    store: Store, actor: Actor
) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    err = await refused(store, actor, GateFailedError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 2, "production"), uow))
    assert err.failed == ["approvals"]


async def test_a_stager_promotes_through_its_own_approved_request(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store, SAM)
    await decide_as(store, ANN, 1)

    result = await move(store, 2, "production", actor=SAM)

    assert result.transition.request == 1 and result.transition.actor == "sam-token"
    assert stages(store) == {1: "archived", 2: "production"}


async def test_a_viewer_may_not_move_a_version_even_with_an_approvals_policy(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await refused(store, VIC, ForbiddenError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 2, "production"), uow))


async def test_an_editor_moves_into_staging_through_an_approved_request(store: Store) -> None:
    await given_model(store, versions=1)
    await set_rules(store, "staging", {"required_approvals": 1})
    await open_request(store, CI, version=1, to_stage="staging")
    decision = await decide_as(store, ANN, 1)
    assert decision.applied and stages(store) == {1: "staging"}


async def test_an_editor_may_not_archive_where_no_policy_asks_for_approvals(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await refused(store, CI, ForbiddenError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 1, "archived"), uow))


async def test_an_editor_may_not_roll_back_even_when_production_needs_approvals(store: Store) -> None:
    await production_and_candidate(store)
    await move(store, 2, "production")  # 2 in production; 1 archived, the rollback candidate
    await set_rules(store, "production", {"required_approvals": 1})
    await refused(store, CI, ForbiddenError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 1, "production", comment="undo"), uow))


# -- rejecting and cancelling ----------------------------------------------------------------------

async def test_a_releaser_rejects_a_request(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    uow = as_(ANN, store)

    decision = await decide(DecideRequest(1, "reject", "metrics look off"), uow)

    assert uow.committed
    assert (decision.applied, decision.results, decision.version) == (False, [], None)
    request = stored(store)
    assert (request.state, request.decided_by, request.decision_comment) == (
        "rejected", "ann-token", "metrics look off")
    [change] = uow.changes()
    assert isinstance(change, RequestRejected)
    assert (change.before["state"], change.after["state"]) == ("pending", "rejected")
    assert change.extra == {"request": 1, "comment": "metrics look off"}


@pytest.mark.parametrize("actor", [DANA, SAM, CI], ids=["editor", "stager", "requester"])
async def test_rejecting_needs_the_releaser_role(store: Store, actor: Actor) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    await refused(store, actor, ForbiddenError, lambda uow: decide(DecideRequest(1, "reject"), uow))


@pytest.mark.parametrize("actor", [CI, CI_RELEASE, ADMIN],
                         ids=["requester", "requester principal's other token", "admin"])
async def test_the_requester_or_an_admin_cancels_a_request(store: Store, actor: Actor) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    uow = as_(actor, store)

    decision = await decide(DecideRequest(1, "cancel", "not today"), uow)

    assert uow.committed and decision.request.state == "cancelled"
    assert (stored(store).state, stored(store).decided_by) == ("cancelled", actor.name)
    [change] = uow.changes()
    assert isinstance(change, RequestCancelled) and change.extra == {"request": 1, "comment": "not today"}


@pytest.mark.parametrize("actor", [DANA, ANN, VIC], ids=["another editor", "a releaser", "viewer"])
async def test_nobody_else_cancels_a_request(store: Store, actor: Actor) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    await refused(store, actor, ForbiddenError, lambda uow: decide(DecideRequest(1, "cancel"), uow))


async def test_an_approved_request_may_still_be_cancelled_or_rejected(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store)
    await decide_as(store, ANN, 1)
    decision = await decide_as(store, BOB, 1, "reject")
    assert decision.request.state == "rejected"


async def close(store: Store, how: str) -> None:
    if how == "applied":
        await decide_as(store, ANN, 1)
    elif how == "rejected":
        await decide_as(store, ANN, 1, "reject")
    else:
        await decide_as(store, CI, 1, "cancel")
    assert stored(store).state == how


@pytest.mark.parametrize("closed", ["applied", "rejected", "cancelled"])
@pytest.mark.parametrize(("decision", "actor"), [("approve", BOB), ("reject", BOB), ("cancel", CI),
                                                 ("cancel", ADMIN)], ids=["approve", "reject", "cancel",
                                                                          "admin cancel"])
async def test_a_closed_request_refuses_every_decision(store: Store, closed: str, decision: str,
                                                       actor: Actor) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    await close(store, closed)
    err = await refused(store, actor, ConflictError, lambda uow: decide(DecideRequest(1, decision), uow))
    assert status_of(err)[0] == 409 and closed in err.detail


@pytest.mark.parametrize("decision", ["approve", "reject", "cancel"])
async def test_deciding_a_missing_or_invisible_request_is_not_found(store: Store, decision: str) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    await refused(store, ANN, NotFoundError, lambda uow: decide(DecideRequest(9, decision), uow))
    await refused(store, CHURN_ONLY, NotFoundError, lambda uow: decide(DecideRequest(1, decision), uow))


async def test_a_decision_comment_over_5000_characters_is_refused(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    await refused(store, ANN, ValidationError, lambda uow: decide(DecideRequest(1, "approve", "x" * 5001), uow))


# -- reading requests ------------------------------------------------------------------------------

async def test_requests_are_listed_newest_first_and_filtered(store: Store) -> None:
    await production_and_candidate(store)
    await open_request(store, CI)                           # 1
    await open_request(store, DANA, to_stage="archived")    # 2
    await decide_as(store, CI, 1, "cancel")
    await open_request(store, SAM)                          # 3

    every = await list_requests(None, None, None, None, None, as_(VIC, store))
    assert [r.id for r in every.items] == [3, 2, 1] and every.next_cursor is None
    pending = await list_requests(NAME, "pending", None, None, None, as_(VIC, store))
    assert [r.id for r in pending.items] == [3, 2]
    by_ci = await list_requests(None, None, "ci", None, None, as_(VIC, store))
    assert [r.id for r in by_ci.items] == [1]
    first = await list_requests(None, None, None, None, 2, as_(VIC, store))
    assert [r.id for r in first.items] == [3, 2]
    rest = await list_requests(None, None, None, first.next_cursor, 2, as_(VIC, store))
    assert [r.id for r in rest.items] == [1] and rest.next_cursor is None


async def test_a_request_outside_the_tokens_scope_does_not_exist_for_it(store: Store) -> None:
    await production_and_candidate(store)
    await open_request(store)
    assert (await get_request(1, as_(VIC, store))).requester_principal == "ci"
    with pytest.raises(NotFoundError):
        await get_request(1, as_(CHURN_ONLY, store))
    with pytest.raises(NotFoundError):
        await list_requests(NAME, None, None, None, None, as_(CHURN_ONLY, store))


async def test_listing_by_an_unknown_state_is_a_validation_error(store: Store) -> None:
    with pytest.raises(ValidationError):
        await list_requests(None, "open", None, None, None, as_(VIC, store))


# -- checks void approvals -------------------------------------------------------------------------

async def report(store: Store, status: str, name: str = "ci", version: int = 2,
                 actor: Actor = CI) -> FakeUnitOfWork:
    uow = as_(actor, store)
    await report_check(ReportCheck(NAME, version, name, status), uow)
    return uow


async def test_a_check_status_change_voids_the_approvals_given_so_far(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    await decide_as(store, ANN, 1)

    uow = await report(store, "success")  # first report: None -> success is a change

    request = stored(store)
    assert request.state == "pending"
    assert request.valid_approvals == []
    [voided] = request.approvals
    assert voided["principal"] == "ann" and voided["voided_at"] is not None
    assert types(uow) == ["model_version.check_reported", "transition_request.approvals_voided"]
    reported, voided_change = uow.changes()
    assert isinstance(reported, CheckReported) and reported.before == {"name": "ci", "status": None}
    assert isinstance(voided_change, ApprovalsVoided)
    assert voided_change.extra == {"request": 1, "check": "ci"}
    assert (voided_change.before["approved_by"], voided_change.after["approved_by"]) == (["ann"], [])


async def test_a_voided_approved_request_goes_back_to_pending_and_no_longer_lets_the_move_through(
    store: Store
) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store)
    await report(store, "pending")
    await decide_as(store, ANN, 1)
    assert stored(store).state == "approved"

    await report(store, "failure")

    assert stored(store).state == "pending"
    err = await refused(store, CI, GateFailedError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 2, "production"), uow))
    assert err.results[-1].detail == "0 of 1 required approvals on request 1"


async def test_re_reporting_the_same_status_voids_nothing(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await report(store, "success")
    await open_request(store)
    await decide_as(store, ANN, 1)

    uow = await report(store, "success")

    assert types(uow) == ["model_version.check_reported"]
    assert [a["principal"] for a in stored(store).valid_approvals] == ["ann"]


async def test_a_report_on_another_version_voids_nothing(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    await decide_as(store, ANN, 1)
    uow = await report(store, "failure", version=1)
    assert types(uow) == ["model_version.check_reported"]
    assert len(stored(store).valid_approvals) == 1


async def test_a_request_without_approvals_is_left_alone_by_a_change(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1})
    await open_request(store)
    uow = await report(store, "failure")
    assert types(uow) == ["model_version.check_reported"]
    assert stored(store).updated_at == stored(store).created_at


async def test_a_principal_whose_approval_was_voided_may_approve_again(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 2})
    await open_request(store)
    await decide_as(store, ANN, 1)
    await report(store, "success")

    first = await decide_as(store, ANN_LAPTOP, 1)
    assert first.request.state == "pending" and not first.applied  # the voided one does not count
    second = await decide_as(store, BOB, 1)

    assert second.applied and stages(store) == {1: "archived", 2: "production"}
    assert [a["principal"] for a in stored(store).valid_approvals] == ["ann", "bob"]
    assert len(stored(store).approvals) == 3


# -- policies ---------------------------------------------------------------------------------------

RULES = {"metrics": {"accuracy": {"min": 0.9}}, "required_checks": ["ci", "ci"], "required_approvals": 1}
NORMALISED = {"metrics": {"accuracy": {"min": 0.9}}, "required_checks": ["ci"], "required_approvals": 1,
              "auto_apply": True, "min_staging_seconds": 0, "required_fields": []}


async def test_setting_a_policy_stores_its_normal_form_and_audits_it_in_both_chains(store: Store) -> None:
    await given_model(store)
    uow = as_(ADMIN, store)

    view = await set_policy(SetPolicy(NAME, "production", RULES), uow)

    assert uow.committed
    assert (view.model, view.stage, view.source, view.updated_by) == (NAME, Stage.PRODUCTION, "model",
                                                                      "admin-token")
    assert view.policy.to_dict() == NORMALISED
    record = store.state.policies[(1, "production")]
    assert (record.rules, record.updated_by) == (NORMALISED, "admin-token")
    assert uow.changes() == [PolicyChanged(model=NAME, before=None,
                                           after={"stage": "production", "rules": NORMALISED},
                                           extra={"stage": "production"})]
    assert uow.recorded_system == [SystemChange(
        action="model.policy_changed", before=None,
        after={"model": NAME, "stage": "production", "rules": NORMALISED})]
    assert store.system_changes == uow.recorded_system


async def test_replacing_a_policy_records_the_rules_before_and_after(store: Store) -> None:
    await given_model(store)
    await set_rules(store, "staging", {"required_fields": ["description"]})
    uow = as_(ADMIN, store)

    await set_policy(SetPolicy(NAME, "staging", {}), uow)

    old = {**Policy().to_dict(), "required_fields": ["description"]}
    [change] = uow.changes()
    assert (change.before, change.after) == ({"stage": "staging", "rules": old},
                                             {"stage": "staging", "rules": Policy().to_dict()})
    [system] = uow.recorded_system
    assert system.before == {"model": NAME, "stage": "staging", "rules": old}


@pytest.mark.parametrize("actor", [ANN, CI, VIC], ids=["releaser", "editor", "viewer"])
async def test_setting_or_removing_a_policy_needs_the_admin_role(store: Store, actor: Actor) -> None:
    await given_model(store)
    await set_rules(store, "production", RULES)
    await refused(store, actor, ForbiddenError, lambda uow: set_policy(SetPolicy(NAME, "production", {}), uow))
    await refused(store, actor, ForbiddenError, lambda uow: delete_policy(NAME, "production", uow))


@pytest.mark.parametrize(("stage", "rules"), [
    ("production", {"required_approvals": 21}),
    ("production", {"approvals": 1}),
    ("staging", {"min_staging_seconds": 60}),
    ("none", {}),
    ("archived", {}),
    ("prod", {}),
], ids=repr)
async def test_a_bad_policy_is_refused_before_anything_is_written(store: Store, stage: str,
                                                                  rules: dict[str, Any]) -> None:
    await given_model(store)
    uow = as_(ADMIN, store)
    with pytest.raises(ValidationError):
        await set_policy(SetPolicy(NAME, stage, rules), uow)
    assert not uow.committed and uow.recorded == [] and uow.recorded_system == []
    assert store.state.policies == {}


async def test_a_policy_for_a_missing_model_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await set_policy(SetPolicy("nobody", "production", {}), as_(ADMIN, store))
    with pytest.raises(NotFoundError):
        await get_policy("nobody", "production", as_(VIC, store))


async def test_without_any_policy_the_source_is_none(store: Store) -> None:
    await given_model(store)
    view = await get_policy(NAME, "production", as_(VIC, store))
    assert (view.source, view.policy, view.updated_at, view.updated_by) == ("none", Policy(), None, None)


async def test_a_configured_default_applies_to_a_model_without_its_own(store: Store) -> None:
    await given_model(store)
    default = Policy.parse({"required_checks": ["ci"]}, Stage.PRODUCTION)
    store.default_policies[Stage.PRODUCTION] = default

    production = await get_policy(NAME, "production", as_(VIC, store))
    staging = await get_policy(NAME, "staging", as_(VIC, store))

    assert (production.source, production.policy) == ("default", default)
    assert (staging.source, staging.policy) == ("none", Policy())


async def test_a_models_own_policy_even_empty_overrides_the_default(store: Store) -> None:
    await given_model(store)
    store.default_policies[Stage.PRODUCTION] = Policy.parse({"required_checks": ["ci"]}, Stage.PRODUCTION)
    await set_rules(store, "production", {})

    view = await get_policy(NAME, "production", as_(VIC, store))

    assert (view.source, view.policy, view.updated_by) == ("model", Policy(), "admin-token")
    assert view.updated_at is not None


async def test_removing_a_policy_audits_it_and_lets_the_default_apply_again(store: Store) -> None:
    await given_model(store)
    default = Policy.parse({"required_approvals": 3}, Stage.STAGING)
    store.default_policies[Stage.STAGING] = default
    await set_rules(store, "staging", RULES)
    uow = as_(ADMIN, store)

    await delete_policy(NAME, "staging", uow)

    assert uow.committed and store.state.policies == {}
    assert uow.changes() == [PolicyChanged(model=NAME, before={"stage": "staging", "rules": NORMALISED},
                                           after=None, extra={"stage": "staging"})]
    assert uow.recorded_system == [SystemChange(
        action="model.policy_changed", before={"model": NAME, "stage": "staging", "rules": NORMALISED},
        after=None)]
    view = await get_policy(NAME, "staging", as_(VIC, store))
    assert (view.source, view.policy) == ("default", default)


async def test_removing_a_policy_the_model_does_not_have_is_not_found(store: Store) -> None:
    await given_model(store)
    store.default_policies[Stage.STAGING] = Policy.parse({"required_approvals": 1}, Stage.STAGING)
    await refused(store, ADMIN, NotFoundError, lambda uow: delete_policy(NAME, "staging", uow))


async def test_a_configured_default_gates_transitions(store: Store) -> None:
    await given_model(store, versions=1, metrics={"accuracy": 0.8})
    store.default_policies[Stage.STAGING] = Policy.parse({"metrics": {"accuracy": {"min": 0.9}}},
                                                         Stage.STAGING)
    err = await refused(store, ADMIN, GateFailedError, lambda uow: transition_model_version(
        TransitionModelVersion(NAME, 1, "staging"), uow))
    assert err.failed == ["metric:accuracy:min"]


async def test_a_policy_change_lands_in_the_models_event_stream_and_the_system_chain(store: Store) -> None:
    await given_model(store)
    await set_rules(store, "production", RULES)
    await delete_policy(NAME, "production", as_(ADMIN, store))
    assert [c.type for _, _, c in store.changes][-2:] == ["model.policy_changed"] * 2
    assert [(s.before is None, s.after is None) for s in store.system_changes] == [(True, False), (False, True)]


# -- rollback ---------------------------------------------------------------------------------------

async def productions_in_turn(store: Store, n: int) -> None:
    """Versions 1..n, each promoted in turn: n in production, n-1 the most recent to leave it."""
    await given_model(store, versions=n)
    for v in range(1, n + 1):
        await move(store, v, "staging")
        await move(store, v, "production")


async def test_rollback_restores_the_most_recent_previous_production_version(store: Store) -> None:
    await productions_in_turn(store, 3)
    uow = as_(ANN, store)

    result = await rollback_model(RollbackModel(NAME, "v3 misfires"), uow)

    assert uow.committed
    assert stages(store) == {1: "archived", 2: "production", 3: "archived"}
    t = result.transition
    assert (result.version.version, t.trigger, t.archived, t.actor, t.comment) == (
        2, Trigger.ROLLBACK, [3], "ann-token", "v3 misfires")
    assert [(c.version, c.to_stage) for c in uow.changes()] == [(3, "archived"), (2, "production")]
    assert [g.gate for g in t.gates] == ["stage_table", "previous_production", "comment"]


async def test_rollback_skips_metric_check_and_approval_gates(store: Store) -> None:
    await productions_in_turn(store, 2)
    await set_rules(store, "production", {"metrics": {"accuracy": {"min": 0.99}},
                                          "required_checks": ["ci"], "required_approvals": 2,
                                          "min_staging_seconds": 86400, "required_fields": ["run_id"]})
    result = await rollback_model(RollbackModel(NAME, "incident"), as_(ANN, store))
    assert result.version.version == 1
    assert stages(store) == {1: "production", 2: "archived"}


@pytest.mark.parametrize("actor", [SAM, CI, VIC], ids=["stager", "editor", "viewer"])
async def test_rollback_needs_the_releaser_role(store: Store, actor: Actor) -> None:
    await productions_in_turn(store, 2)
    await refused(store, actor, ForbiddenError, lambda uow: rollback_model(RollbackModel(NAME, "x"), uow))


@pytest.mark.parametrize("comment", [None, "", "  "], ids=repr)
async def test_rollback_without_a_comment_fails_its_gate(store: Store, comment: str | None) -> None:
    await productions_in_turn(store, 2)
    err = await refused(store, ANN, GateFailedError, lambda uow: rollback_model(RollbackModel(NAME, comment), uow))
    assert err.failed == ["comment"]


async def test_rollback_without_a_previous_production_version_fails_its_gate(store: Store) -> None:
    await productions_in_turn(store, 1)
    err = await refused(store, ANN, GateFailedError, lambda uow: rollback_model(RollbackModel(NAME, "x"), uow))
    assert err.failed == ["previous_production"]


async def test_rollback_without_a_candidate_or_a_comment_reports_both(store: Store) -> None:
    await productions_in_turn(store, 1)
    err = await refused(store, ANN, GateFailedError, lambda uow: rollback_model(RollbackModel(NAME), uow))
    assert sorted(err.failed) == ["comment", "previous_production"]


@pytest.mark.parametrize("expected", [None, 1, 7])
async def test_rollback_with_a_stale_expected_production_version_fails_its_precondition(
    store: Store, expected: int | None
) -> None:
    await productions_in_turn(store, 2)
    await refused(store, ANN, PreconditionFailedError, lambda uow: rollback_model(
        RollbackModel(NAME, "x", expected_production_version=expected), uow))


async def test_rollback_with_a_current_expected_production_version_goes_ahead(store: Store) -> None:
    await productions_in_turn(store, 2)
    result = await rollback_model(RollbackModel(NAME, "x", expected_production_version=2), as_(ANN, store))
    assert result.version.version == 1


async def test_rollback_of_a_missing_or_invisible_model_is_not_found(store: Store) -> None:
    await productions_in_turn(store, 2)
    await refused(store, ANN, NotFoundError, lambda uow: rollback_model(RollbackModel("nobody", "x"), uow))
    await refused(store, CHURN_ONLY, NotFoundError, lambda uow: rollback_model(RollbackModel(NAME, "x"), uow))


# -- approvals never outlive the stage they were given in -------------------------------------------


async def test_approvals_do_not_carry_a_version_that_left_its_stage_and_came_back(store: Store) -> None:
    await production_and_candidate(store, {"required_approvals": 1, "auto_apply": False})
    await open_request(store)
    await decide_as(store, ANN, 1)
    assert stored(store).state == "approved"

    uow = as_(ADMIN, store)
    await transition_model_version(TransitionModelVersion(NAME, 2, "archived"), uow)

    assert (stored(store).state, stored(store).decided_by) == ("cancelled", "admin-token")
    assert "left the stage" in (stored(store).decision_comment or "")
    assert types(uow) == ["model_version.stage_changed", "transition_request.cancelled"]
    await transition_model_version(TransitionModelVersion(NAME, 2, "staging"), as_(ADMIN, store))
    with pytest.raises(GateFailedError) as caught:
        await transition_model_version(TransitionModelVersion(NAME, 2, "production"), as_(CI, store))
    assert caught.value.failed == ["approvals"]


async def test_promoting_over_an_incumbent_settles_the_incumbents_open_requests(store: Store) -> None:
    await production_and_candidate(store)
    await set_rules(store, "staging", {})
    await open_request(store, version=1, to_stage="archived", comment="retire v1")
    await move(store, 2, "none")  # v2 back to none, then a request to submit it again
    await open_request(store, version=2, to_stage="staging", comment="resubmit")
    await move(store, 2, "staging")  # the request for v2 -> staging is applied by the move
    await open_request(store, version=2, to_stage="archived", comment="or retire v2")

    await transition_model_version(TransitionModelVersion(NAME, 2, "production"), as_(ANN, store))

    assert stages(store) == {1: "archived", 2: "production"}
    assert [stored(store, i).state for i in (1, 2, 3)] == ["applied", "applied", "cancelled"]
