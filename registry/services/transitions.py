"""Moving a version through the stage machine: the one use case every promotion goes through
(a transition call, an approval that completes its quorum, and a rollback all end in
:func:`move_checked`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from registry.domain import stages
from registry.domain.errors import ForbiddenError, GateFailedError, NotFoundError, PreconditionFailedError
from registry.domain.events import RequestApplied, RequestCancelled
from registry.domain.gates import NO_ROLLBACK_TARGET, GateResult
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.permissions import Role, role_for_transition
from registry.domain.stages import Stage, Trigger
from registry.services.access import check_role, lock_model, require_model
from registry.services.artifacts import seal
from registry.services.commands import MISSING, RollbackModel, TransitionModelVersion, _Missing
from registry.services.gates import Assessment, assess, effective_policy
from registry.services.ports import RequestRecord, UnitOfWork
from registry.services.versions import check_if_match

log = structlog.get_logger("registry.transitions")


@dataclass(frozen=True, slots=True)
class Transition:
    from_stage: Stage
    to_stage: Stage
    trigger: Trigger
    actor: str
    at: datetime
    comment: str | None
    archived: list[int]
    gates: list[GateResult]
    request: int | None = None


@dataclass(frozen=True, slots=True)
class TransitionResult:
    version: ModelVersion
    transition: Transition


def _check_production(expected: int | None | _Missing, production: ModelVersion | None) -> None:
    if expected is not MISSING:
        current = production.version if production else None
        if current != expected:
            raise PreconditionFailedError(f"the production version is {current}, not {expected}")


def _check_expectations(cmd: TransitionModelVersion, version: ModelVersion,
                        production: ModelVersion | None) -> None:
    check_if_match(cmd.if_match, version)
    if cmd.expected_stage is not None and Stage.parse(cmd.expected_stage) is not version.stage:
        raise PreconditionFailedError(
            f"version {version.version} is in {version.stage.value!r}, not {cmd.expected_stage!r}"
        )
    _check_production(cmd.expected_production_version, production)


async def transition_model_version(cmd: TransitionModelVersion, uow: UnitOfWork) -> TransitionResult:
    """Check the edge, then every gate, then archive the incumbent and move the version; one commit."""
    target = Stage.parse(cmd.to_stage)
    async with uow:
        model = await lock_model(uow, cmd.model, Role.VIEWER, "moving a version")
        version, production = await uow.repo.get_version_and_production(model, cmd.version)
        if version is None:
            raise NotFoundError(f"model {model.name!r} has no version {cmd.version}")
        await _check_transition_role(uow, model, version, target)
        _check_expectations(cmd, version, production)
        result = await move_checked(uow, model, version, production, target, cmd.comment)
        others = await _archive_others(uow, model, version, target, cmd.comment) if cmd.archive_others else []
        await uow.commit()
    for moved in (result, *others):
        log_stage_changed(moved)
    return result


async def _archive_others(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion, target: Stage,
                          comment: str | None) -> list[TransitionResult]:
    """Archive the other versions in ``target`` (staging; production has at most the incumbent,
    already archived), each move checked like any other, in the caller's transaction."""
    if target is not Stage.STAGING:
        return []
    moved = []
    for other in await uow.repo.versions_in_stage(model, target):
        if other.version != version.version:
            await _check_transition_role(uow, model, other, Stage.ARCHIVED)
            moved.append(await move_checked(uow, model, other, None, Stage.ARCHIVED, comment))
    return moved


async def _check_transition_role(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion,
                                 target: Stage) -> None:
    """The stage table's role for the move. Below it, an editor may still make a move whose
    policy asks for approvals: the approvals gate then lets it through only on the caller's own
    request, approved by releasers."""
    needed = role_for_transition(version.stage, target)
    if uow.actor.role >= needed:
        return
    what = f"moving a version from {version.stage.value} to {target.value}"
    if uow.actor.role < Role.EDITOR:  # the role the stage table asks, not the approvals' floor
        check_role(uow, needed, what)
    # Approvals stand in for the role only where the approvals gate applies: a rollback skips it.
    if stages.edge(version.stage, target) is not Trigger.ROLLBACK \
            and (await effective_policy(uow, model, target)).policy.required_approvals:
        return
    raise ForbiddenError(f"{what} needs the {needed.label} role (or a policy with approvals and "
                         f"an approved request); this token is {uow.actor.role.label}")


async def rollback_model(cmd: RollbackModel, uow: UnitOfWork) -> TransitionResult:
    """Put the previous production version back into production, archiving the current one, in
    one transaction. Each rollback walks one step further back: the version it archives is never
    a rollback target again. ``expected_production_version`` is checked first (412), so a rerun
    after success is told the production version moved, even when no step back is left."""
    async with uow:
        model = await lock_model(uow, cmd.model, Role.RELEASER, "rolling back")
        number = await uow.repo.rollback_candidate(model)
        # Version 0 never exists: without a candidate this reads the production version alone.
        version, production = await uow.repo.get_version_and_production(model, number or 0)
        _check_production(cmd.expected_production_version, production)
        if version is None:
            given = bool(cmd.comment and cmd.comment.strip())
            missing = NO_ROLLBACK_TARGET if number is None else (
                f"version {number}, the previous production version, was deleted: a rollback never "
                "skips it to reach an older one")
            raise GateFailedError([
                GateResult("previous_production", False, missing),
                GateResult("comment", given,
                           "comment given" if given else "a rollback needs a comment saying why"),
            ])
        result = await move_checked(uow, model, version, production, Stage.PRODUCTION, cmd.comment)
        await uow.commit()
    log_stage_changed(result)
    return result


async def move_checked(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion,
                       production: ModelVersion | None, target: Stage, comment: str | None, *,
                       request: RequestRecord | None = None,
                       assessment: Assessment | None = None) -> TransitionResult:
    """The stage table (409), every gate (422), then the move; the caller commits. An open
    request for this move is marked applied, and the audit entry names its approvers. A caller
    that has just assessed this very move (an approval completing its quorum) passes its
    ``assessment`` instead of having the gates run twice."""
    if assessment is None:
        principal = request.requester_principal if request else (uow.actor.principal or uow.actor.name)
        assessment = await assess(uow, model, version, production, target, comment=comment,
                                  principal=principal, request=request)
    trigger = assessment.trigger
    if trigger is None:
        raise stages.refused(version.stage, target)
    if not assessment.allowed:
        raise GateFailedError(assessment.results)
    counted = assessment.request
    audit_extra: dict[str, Any] = {}
    if counted is not None:
        audit_extra = {"request": counted.id, "requested_by": counted.requester_principal,
                      "approved_by": [a["principal"] for a in counted.valid_approvals]}
    archived: list[int] = []
    incumbent = production if target is Stage.PRODUCTION else None
    if incumbent is not None:
        # The incumbent's UPDATE must reach the database before the target's: the partial
        # unique index on production is checked row by row.
        _move(uow, model, incumbent, Trigger.ARCHIVE, comment, {"superseded_by": version.version},
              by_rollback=trigger is Trigger.ROLLBACK)
        await uow.repo.save_version(incumbent)
        archived.append(incumbent.version)
    from_stage = version.stage
    if version.sealed_at is None:
        # The first move out of none (or the first move of a version imported unsealed) freezes
        # the files: this entry proves what was approved. Archiving retires the version: uploads
        # still open are dropped, not waited for.
        manifest, _ = await seal(uow, model, version, announce_empty=False,
                                 drop_open=trigger is Trigger.ARCHIVE)
        audit_extra["artifacts"] = manifest.to_dict()
    elif from_stage is Stage.NONE:
        audit_extra["artifacts"] = {"digest": version.manifest_digest}
    gate_results = [r.to_dict() for r in assessment.results]
    _move(uow, model, version, trigger, comment, {"archived": archived, "gates": gate_results},
          audit=audit_extra)
    await uow.repo.save_version(version)
    # After the moves: transition_request.applied announces a change already recorded.
    applied = await _settle_requests(uow, model, version, target, counted, incumbent)
    transition = Transition(from_stage, target, trigger, uow.actor.name, version.updated_at, comment,
                            archived, assessment.results, applied.id if applied else None)
    return TransitionResult(version, transition)


async def _settle_requests(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion,
                           target: Stage, counted: RequestRecord | None,
                           incumbent: ModelVersion | None) -> RequestRecord | None:
    """The moves happened: open requests for them (the version to ``target``, the incumbent to
    archived) are applied. Other open requests of either asked for moves from a stage it has
    left: they are cancelled, so old approvals never carry a version that came back. Returns
    ``counted``."""
    moved = [(version.version, target)]
    if incumbent is not None:
        moved.append((incumbent.version, Stage.ARCHIVED))
    for number, stage in moved:
        for request in await uow.repo.open_requests(model, number):
            if counted is not None and request.id == counted.id:
                request = counted  # the caller's copy carries approvals not yet saved
            applies = request.to_stage == stage.value
            before = request.snapshot()
            request.state = "applied" if applies else "cancelled"
            request.decided_by, request.updated_at = uow.actor.name, uow.now()
            if not applies:
                request.decision_comment = f"version {number} left the stage it was requested from"
            await uow.repo.save_request(request)
            event = RequestApplied if applies else RequestCancelled
            uow.record(model, event(model=model.name, version=number, before=before,
                                    after=request.snapshot(),
                                    extra={"request": request.id, "comment": request.decision_comment}))
    return counted


def _move(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion, trigger: Trigger,
          comment: str | None, extra: dict[str, Any], audit: dict[str, Any] | None = None, *,
          by_rollback: bool = False) -> None:
    uow.record(model, version.move(trigger, uow.now(), comment=comment, sequence=uow.next_sequence(model),
                                   audit=audit, extra=extra, by_rollback=by_rollback))


def log_stage_changed(result: TransitionResult) -> None:
    """The one canonical log line of a committed move, wherever the move was made."""
    t, v = result.transition, result.version
    log.info("stage_changed", model=v.model, version=v.version, from_stage=t.from_stage.value,
             to_stage=t.to_stage.value, trigger=t.trigger.value, actor=t.actor, archived=t.archived,
             request=t.request)


async def stage_history(model_name: str, number: int, uow: UnitOfWork) -> list[dict[str, Any]]:
    """The version's stage changes, oldest first, read from the audit log."""
    async with uow:
        model = await require_model(uow, model_name)
        if await uow.repo.get_version(model, number) is None:
            raise NotFoundError(f"model {model.name!r} has no version {number}")
        return await uow.repo.stage_history(model, number)
