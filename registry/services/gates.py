"""Assessing a move: the stage table, then every rule of the target stage's policy. The gates
endpoint, a transition, and an approval all call :func:`assess`, so they cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass

from registry.domain import gates, stages
from registry.domain.errors import NotFoundError
from registry.domain.gates import POLICY_STAGES, Candidate, GateContext, GateResult, Policy
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.stages import Stage, Trigger
from registry.services.access import require_model
from registry.services.ports import RequestRecord, UnitOfWork


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    policy: Policy
    source: str  # model, default, none


@dataclass(frozen=True, slots=True)
class Assessment:
    from_stage: Stage
    to_stage: Stage
    trigger: Trigger | None
    results: list[GateResult]
    policy: Policy
    # The open request whose approvals were counted, if the policy asks for approvals.
    request: RequestRecord | None

    @property
    def allowed(self) -> bool:
        return not gates.failed(self.results)


async def effective_policy(uow: UnitOfWork, model: RegisteredModel, stage: Stage) -> EffectivePolicy:
    """The model's own policy for entering ``stage``, else the configured default, else none."""
    if stage not in POLICY_STAGES:
        return EffectivePolicy(Policy(), "none")
    rules = await uow.repo.policy_rules(model, stage)
    if rules is not None:
        return EffectivePolicy(Policy.parse(rules, stage), "model")
    default = uow.default_policies.get(stage)
    if default is not None:
        return EffectivePolicy(default, "default")
    return EffectivePolicy(Policy(), "none")


def candidate(version: ModelVersion, artifacts: int = 0) -> Candidate:
    return Candidate(version.version, version.description, version.run_id, version.metrics,
                     version.stage_since, artifacts, version.stage, version.left_by_rollback)


async def assess(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion,
                 production: ModelVersion | None, target: Stage, *, comment: str | None,
                 principal: str, request: RequestRecord | None = None) -> Assessment:
    """Every gate of moving ``version`` to ``target`` for ``principal`` (whose open request's
    approvals count, unless ``request`` is given). No side effects."""
    trigger = stages.edge(version.stage, target)  # None: reported as the stage_table gate
    policy = (await effective_policy(uow, model, target)).policy
    rollback_to = await uow.repo.rollback_candidate(model) if trigger is Trigger.ROLLBACK else None
    checks = await uow.repo.latest_checks(model, version.version) if policy.required_checks else {}
    files = await uow.repo.count_artifacts(version.id) \
        if "artifact" in policy.required_fields and version.id is not None else 0
    if request is None and policy.required_approvals:
        request = next((r for r in await uow.repo.open_requests(model, version.version, target.value)
                        if r.requester_principal == principal), None)
    ctx = GateContext(
        candidate=candidate(version, files), now=uow.now(), comment=comment, policy=policy,
        production=candidate(production) if production is not None else None, checks=checks,
        approvals=len(request.valid_approvals) if request is not None else 0,
        request_id=request.id if request is not None else None, rollback_candidate=rollback_to,
    )
    results = [gates.stage_table(version.stage, target, trigger), *gates.evaluate(trigger, target, ctx)]
    return Assessment(version.stage, target, trigger, results, policy, request)


async def check_gates(model_name: str, number: int, to_stage: str, comment: str | None,
                      uow: UnitOfWork) -> Assessment:
    """What a transition of the version to ``to_stage`` by the caller would meet, now."""
    target = Stage.parse(to_stage)
    async with uow:
        model = await require_model(uow, model_name)
        version, production = await uow.repo.get_version_and_production(model, number)
        if version is None:
            raise NotFoundError(f"model {model.name!r} has no version {number}")
        return await assess(uow, model, version, production, target, comment=comment,
                            principal=uow.actor.principal or uow.actor.name)
