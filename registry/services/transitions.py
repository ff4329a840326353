"""Moving a version through the stage machine: the one use case every promotion goes through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from registry.domain import gates, stages
from registry.domain.errors import GateFailedError, NotFoundError, PreconditionFailedError
from registry.domain.events import StageChanged
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.permissions import Role, role_for_transition
from registry.domain.stages import Stage, Trigger
from registry.services.access import check_role, lock_model, require_model
from registry.services.commands import MISSING, TransitionModelVersion
from registry.services.ports import UnitOfWork
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


@dataclass(frozen=True, slots=True)
class TransitionResult:
    version: ModelVersion
    transition: Transition


def _check_expectations(cmd: TransitionModelVersion, version: ModelVersion,
                        production: ModelVersion | None) -> None:
    check_if_match(cmd.if_match, version)
    if cmd.expected_stage is not None and Stage.parse(cmd.expected_stage) is not version.stage:
        raise PreconditionFailedError(
            f"version {version.version} is in {version.stage.value!r}, not {cmd.expected_stage!r}"
        )
    if cmd.expected_production_version is not MISSING:
        current = production.version if production else None
        if current != cmd.expected_production_version:
            raise PreconditionFailedError(
                f"the production version is {current}, not {cmd.expected_production_version}"
            )


async def transition_model_version(cmd: TransitionModelVersion, uow: UnitOfWork) -> TransitionResult:
    """Check the edge, then every gate, then archive the incumbent and move the version; one commit."""
    target = Stage.parse(cmd.to_stage)
    async with uow:
        model = await lock_model(uow, cmd.model, Role.STAGER, "moving a version")
        version, production = await uow.repo.get_version_and_production(model, cmd.version)
        if version is None:
            raise NotFoundError(f"model {model.name!r} has no version {cmd.version}")
        check_role(uow, role_for_transition(version.stage, target),
                   f"moving a version from {version.stage.value} to {target.value}")
        _check_expectations(cmd, version, production)
        trigger = stages.trigger_for(version.stage, target)
        candidate = await uow.repo.rollback_candidate(model) if trigger is Trigger.ROLLBACK else None
        results = gates.evaluate(
            trigger, gates.GateContext(version=version.version, comment=cmd.comment,
                                       rollback_candidate=candidate)
        )
        if gates.failed(results):
            raise GateFailedError(results)

        archived: list[int] = []
        if target is Stage.PRODUCTION and production is not None:
            # The incumbent's UPDATE must reach the database before the target's: the partial
            # unique index on production is checked row by row.
            _move(uow, model, production, Trigger.ARCHIVE, cmd.comment,
                  {"superseded_by": version.version})
            await uow.repo.save_version(production)
            archived.append(production.version)
        from_stage = version.stage
        _move(uow, model, version, trigger, cmd.comment, {"archived": archived})
        await uow.repo.save_version(version)
        await uow.commit()

    log.info("stage_changed", model=model.name, version=version.version, from_stage=from_stage.value,
             to_stage=target.value, trigger=trigger.value, actor=uow.actor.name, archived=archived)
    transition = Transition(from_stage, target, trigger, uow.actor.name, version.updated_at,
                            cmd.comment, archived)
    return TransitionResult(version, transition)


def _move(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion, trigger: Trigger,
          comment: str | None, extra: dict[str, Any]) -> None:
    from_stage = version.stage
    stages.fire(version, trigger)
    now = uow.now()
    if from_stage is Stage.PRODUCTION:
        version.left_production_seq = uow.next_sequence(model)
    version.updated_at = now
    version.revision += 1
    uow.record(model, StageChanged(
        model=model.name, version=version.version,
        before={"stage": from_stage.value},
        after={"stage": version.stage.value, "trigger": trigger.value, "comment": comment},
        extra={"from_stage": from_stage.value, "to_stage": version.stage.value,
               "trigger": trigger.value, "comment": comment, **extra},
    ))


async def stage_history(model_name: str, number: int, uow: UnitOfWork) -> list[dict[str, Any]]:
    """The version's stage changes, oldest first, read from the audit log."""
    async with uow:
        model = await require_model(uow, model_name)
        if await uow.repo.get_version(model, number) is None:
            raise NotFoundError(f"model {model.name!r} has no version {number}")
        return await uow.repo.stage_history(model, number)
