"""Stage policies: a model's rules for entering staging or production, set by admins and
audited in both the system chain and the model's chain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry.domain.errors import NotFoundError, ValidationError
from registry.domain.events import PolicyChanged, SystemChange
from registry.domain.gates import POLICY_STAGES, Policy
from registry.domain.model import RegisteredModel
from registry.domain.permissions import Role
from registry.domain.stages import Stage
from registry.services.access import lock_model, require_model
from registry.services.commands import SetPolicy
from registry.services.gates import effective_policy
from registry.services.ports import UnitOfWork


@dataclass(frozen=True, slots=True)
class PolicyView:
    model: str
    stage: Stage
    policy: Policy
    source: str  # model, default, none
    updated_at: datetime | None = None
    updated_by: str | None = None


def _stage(value: str) -> Stage:
    stage = Stage.parse(value)
    if stage not in POLICY_STAGES:
        raise ValidationError("policies apply to entering staging or production")
    return stage


def _record(uow: UnitOfWork, model: RegisteredModel, stage: Stage, before: dict[str, Any] | None,
            after: dict[str, Any] | None) -> None:
    """The change in the model's chain (and as an event) and in the system chain."""
    uow.record(model, PolicyChanged(model=model.name, before=before and {"stage": stage.value, "rules": before},
                                    after=after and {"stage": stage.value, "rules": after},
                                    extra={"stage": stage.value}))
    uow.record_system(SystemChange(
        action=PolicyChanged.type,
        before=before and {"model": model.name, "stage": stage.value, "rules": before},
        after=after and {"model": model.name, "stage": stage.value, "rules": after}))


async def set_policy(cmd: SetPolicy, uow: UnitOfWork) -> PolicyView:
    """Replace the model's rules for entering ``stage`` (``{}``: no rules, overriding a default)."""
    stage = _stage(cmd.stage)
    policy = Policy.parse(cmd.rules, stage)
    async with uow:
        model = await lock_model(uow, cmd.model, Role.ADMIN, "setting a policy")
        current = await uow.repo.get_policy(model, stage)
        rules = policy.to_dict()
        await uow.repo.put_policy(model, stage, rules, uow.actor.name, uow.now())
        _record(uow, model, stage, current.rules if current else None, rules)
        await uow.commit()
    return PolicyView(model.name, stage, policy, "model", uow.now(), uow.actor.name)


async def delete_policy(model_name: str, stage_name: str, uow: UnitOfWork) -> None:
    """Remove the model's own rules (the configured default, if any, applies again)."""
    stage = _stage(stage_name)
    async with uow:
        model = await lock_model(uow, model_name, Role.ADMIN, "removing a policy")
        current = await uow.repo.get_policy(model, stage)
        if current is None:
            raise NotFoundError(f"model {model.name!r} has no policy of its own for {stage.value}")
        await uow.repo.delete_policy(model, stage)
        _record(uow, model, stage, current.rules, None)
        await uow.commit()


async def get_policy(model_name: str, stage_name: str, uow: UnitOfWork) -> PolicyView:
    """The rules in force for entering ``stage``, and where they come from."""
    stage = _stage(stage_name)
    async with uow:
        model = await require_model(uow, model_name)
        record = await uow.repo.get_policy(model, stage)
        effective = await effective_policy(uow, model, stage)
    if record is None:
        return PolicyView(model.name, stage, effective.policy, effective.source)
    return PolicyView(model.name, stage, effective.policy, "model", record.updated_at, record.updated_by)
