"""Gates: one pure function that returns every result, so a caller sees all failures at once.

A ``transitions`` condition stops at the first false one and yields a bare boolean, so gates are
evaluated here, before the machine fires. The stage table's answer comes first (``stage_table``),
then every rule of the target stage's policy: required fields, metric thresholds (absolute and
relative to the production version), required checks, time in staging, approvals. ``rollback``
has its own two structural gates and skips the policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry.domain.errors import ValidationError
from registry.domain.stages import Stage, Trigger

POLICY_STAGES = (Stage.STAGING, Stage.PRODUCTION)
REQUIRED_FIELDS = ("description", "run_id", "artifact")
BOUNDS = ("min", "max", "min_delta_vs_production", "max_delta_vs_production")
MAX_RULES = 100
MAX_APPROVALS = 20
MAX_STAGING_SECONDS = 366 * 86400


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules for entering a stage. The empty policy has no rules."""

    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    required_checks: tuple[str, ...] = ()
    required_approvals: int = 0
    auto_apply: bool = True
    min_staging_seconds: int = 0
    required_fields: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any], stage: Stage) -> Policy:
        """A policy from its JSON form; ValidationError names the first bad rule."""
        unknown = set(raw) - {"metrics", "required_checks", "required_approvals", "auto_apply",
                              "min_staging_seconds", "required_fields"}
        if unknown:
            raise ValidationError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        if stage not in POLICY_STAGES:
            raise ValidationError("policies apply to entering staging or production")
        staging_seconds = _count(raw.get("min_staging_seconds", 0), "min_staging_seconds",
                                 MAX_STAGING_SECONDS)
        if staging_seconds and stage is not Stage.PRODUCTION:
            raise ValidationError("min_staging_seconds is a rule for entering production")
        auto_apply = raw.get("auto_apply", True)
        if not isinstance(auto_apply, bool):
            raise ValidationError("auto_apply must be true or false")
        fields = _names(raw.get("required_fields", []), "required_fields")
        bad = [f for f in fields if f not in REQUIRED_FIELDS]
        if bad:
            raise ValidationError(f"required_fields may name {', '.join(REQUIRED_FIELDS)}; not {bad[0]!r}")
        return cls(
            metrics=_metric_rules(raw.get("metrics", {})),
            required_checks=_names(raw.get("required_checks", []), "required_checks"),
            required_approvals=_count(raw.get("required_approvals", 0), "required_approvals",
                                      MAX_APPROVALS),
            auto_apply=auto_apply,
            min_staging_seconds=staging_seconds,
            required_fields=fields,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {name: dict(bounds) for name, bounds in self.metrics.items()},
            "required_checks": list(self.required_checks),
            "required_approvals": self.required_approvals,
            "auto_apply": self.auto_apply,
            "min_staging_seconds": self.min_staging_seconds,
            "required_fields": list(self.required_fields),
        }


def _count(value: Any, key: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValidationError(f"{key} must be a whole number from 0 to {most}")
    return value


def _names(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_RULES:
        raise ValidationError(f"{key} must be a list of at most {MAX_RULES} names")
    for name in value:
        if not isinstance(name, str):
            raise ValidationError(f"{key} must hold names")
        check_name(name, key)
    return tuple(dict.fromkeys(value))  # in order, without repeats


def _metric_rules(value: Any) -> dict[str, dict[str, float]]:
    if not isinstance(value, Mapping) or len(value) > MAX_RULES:
        raise ValidationError(f"metrics must map at most {MAX_RULES} metric names to bounds")
    rules: dict[str, dict[str, float]] = {}
    for name, bounds in value.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 250 or "\x00" in name:
            raise ValidationError("metric names must be 1 to 250 characters")
        if not isinstance(bounds, Mapping) or not bounds:
            raise ValidationError(f"metric {name!r}: give at least one of {', '.join(BOUNDS)}")
        for bound, limit in bounds.items():
            if bound not in BOUNDS:
                raise ValidationError(f"metric {name!r}: unknown bound {bound!r}; use {', '.join(BOUNDS)}")
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
                raise ValidationError(f"metric {name!r}: {bound} must be a finite number")
        for low, high in (("min", "max"), ("min_delta_vs_production", "max_delta_vs_production")):
            if bounds.get(low, -math.inf) > bounds.get(high, math.inf):
                raise ValidationError(f"metric {name!r}: {low} is above {high}")
        rules[name] = {b: float(bounds[b]) for b in BOUNDS if b in bounds}
    return dict(sorted(rules.items()))


def check_name(name: str, what: str = "check name") -> str:
    """Check names: 1-200 characters without control characters or space at either end
    (``ci/unit-tests``, ``eval:holdout``), as the API document's pattern says."""
    if (not 1 <= len(name) <= 200 or name != name.strip()
            or any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in name)):
        raise ValidationError(f"{what}: names are 1 to 200 characters, without control characters "
                              "or space at either end")
    return name


@dataclass(frozen=True, slots=True)
class Candidate:
    """The version's facts the rules read."""

    version: int
    description: str
    run_id: str | None
    metrics: Mapping[str, float]
    stage_since: datetime | None
    artifacts: int = 0  # files the version holds
    stage: Stage = Stage.STAGING  # the stage it is in now
    left_by_rollback: bool = False  # it last left production because a rollback replaced it


@dataclass(frozen=True, slots=True)
class GateContext:
    """What the gates may look at: facts the service read in its transaction."""

    candidate: Candidate
    now: datetime
    comment: str | None = None
    policy: Policy = field(default_factory=Policy)
    production: Candidate | None = None
    checks: Mapping[str, str] = field(default_factory=dict)  # latest status per check name
    approvals: int = 0  # distinct principals approving the requester's open request
    request_id: int | None = None
    # The version a rollback goes back to: the archived one that left production last, other
    # than by a rollback (ModelVersion.is_rollback_target); None when there is none.
    rollback_candidate: int | None = None


def stage_table(current: Stage, target: Stage, trigger: Trigger | None) -> GateResult:
    if trigger is None:
        return GateResult("stage_table", False, f"no move from {current.value} to {target.value}")
    return GateResult("stage_table", True, f"{current.value} -> {target.value} by {trigger.value}")


def evaluate(trigger: Trigger | None, target: Stage, ctx: GateContext) -> list[GateResult]:
    """Every gate that applies to moving into ``target`` by ``trigger`` (None: not an edge of the
    stage table; the policy is still evaluated, so a caller sees everything at once)."""
    if trigger is Trigger.ROLLBACK:
        return [_previous_production(ctx), _comment_given(ctx)]
    if target not in POLICY_STAGES or trigger in (Trigger.ARCHIVE, Trigger.WITHDRAW):
        return []
    policy, cand = ctx.policy, ctx.candidate
    results = [_field(name, cand) for name in policy.required_fields]
    for name, bounds in policy.metrics.items():
        results.extend(_metric(name, bound, limit, ctx) for bound, limit in bounds.items())
    results.extend(_check(name, ctx.checks.get(name)) for name in policy.required_checks)
    if policy.min_staging_seconds and target is Stage.PRODUCTION:
        results.append(_time_in_staging(policy.min_staging_seconds, ctx))
    if policy.required_approvals:
        results.append(_approvals(policy.required_approvals, ctx))
    return results


def failed(results: list[GateResult]) -> bool:
    return any(not r.passed for r in results)


def _field(name: str, cand: Candidate) -> GateResult:
    if name == "artifact":
        if cand.artifacts:
            return GateResult("field:artifact", True, f"the version holds {cand.artifacts} artifact file(s)")
        return GateResult("field:artifact", False, "the version holds no artifact files")
    value = cand.description.strip() if name == "description" else cand.run_id
    if value:
        return GateResult(f"field:{name}", True, f"{name} is set")
    return GateResult(f"field:{name}", False, f"the version has no {name}")


def _metric(name: str, bound: str, limit: float, ctx: GateContext) -> GateResult:
    gate = f"metric:{name}:{bound}"
    value = ctx.candidate.metrics.get(name)
    if value is None:
        return GateResult(gate, False, f"the version has no metric {name!r}")
    if bound == "min":
        return GateResult(gate, value >= limit, f"{name} = {value:g}, needs >= {limit:g}")
    if bound == "max":
        return GateResult(gate, value <= limit, f"{name} = {value:g}, needs <= {limit:g}")
    prod = ctx.production
    if prod is None or prod.version == ctx.candidate.version:
        return GateResult(gate, True, "no other version in production to compare with")
    base = prod.metrics.get(name)
    if base is None:
        return GateResult(gate, True, f"production version {prod.version} has no metric {name!r}")
    delta = value - base
    ok = delta >= limit if bound == "min_delta_vs_production" else delta <= limit
    sign = ">=" if bound == "min_delta_vs_production" else "<="
    return GateResult(gate, ok, f"{name} = {value:g} vs {base:g} in production (version "
                                f"{prod.version}): delta {delta:+g}, needs {sign} {limit:+g}")


def _check(name: str, status: str | None) -> GateResult:
    if status == "success":
        return GateResult(f"check:{name}", True, f"check {name!r} succeeded")
    if status is None:
        return GateResult(f"check:{name}", False, f"check {name!r} has not been reported")
    return GateResult(f"check:{name}", False, f"check {name!r} is {status}")


def _time_in_staging(needed: int, ctx: GateContext) -> GateResult:
    if ctx.candidate.stage is not Stage.STAGING:  # stage_since is when it entered another stage
        where = ("has not entered staging" if ctx.candidate.stage is Stage.NONE
                 else f"is in {ctx.candidate.stage.value}, not in staging")
        return GateResult("min_staging_time", False,
                          f"the version {where}: {needed} s in staging are required")
    since = ctx.candidate.stage_since
    spent = 0 if since is None else max(0, int((ctx.now - since).total_seconds()))
    ok = spent >= needed
    return GateResult("min_staging_time", ok, f"in staging for {spent} s of the {needed} s required")


def _approvals(needed: int, ctx: GateContext) -> GateResult:
    where = f"on request {ctx.request_id}" if ctx.request_id is not None else \
        "(no open transition request by this principal)"
    return GateResult("approvals", ctx.approvals >= needed,
                      f"{ctx.approvals} of {needed} required approvals {where}")


NO_ROLLBACK_TARGET = ("no version to roll back to: no archived version left production other than "
                      "by a rollback")


def _previous_production(ctx: GateContext) -> GateResult:
    if ctx.candidate.left_by_rollback:
        return GateResult(
            "previous_production", False,
            f"version {ctx.candidate.version} left production by a rollback: it is never a rollback "
            "target again (restore it to staging and promote it, with its gates)")
    if ctx.rollback_candidate is None:
        return GateResult("previous_production", False, NO_ROLLBACK_TARGET)
    if ctx.rollback_candidate != ctx.candidate.version:
        return GateResult(
            "previous_production",
            False,
            f"only version {ctx.rollback_candidate}, the most recent previous production version, "
            "can be rolled back to",
        )
    return GateResult("previous_production", True, "most recent previous production version")


def _comment_given(ctx: GateContext) -> GateResult:
    if ctx.comment and ctx.comment.strip():
        return GateResult("comment", True, "comment given")
    return GateResult("comment", False, "a rollback needs a comment saying why")
