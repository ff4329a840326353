"""Gates: one pure function that returns every result, so a caller sees all failures at once.

A ``transitions`` condition stops at the first false one and yields a bare boolean, so gates are
evaluated here, before the machine fires. Only the structural gates of the stage table exist so
far (rollback's); metric and check gates arrive with the gates issue.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.domain.stages import Trigger


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class GateContext:
    """What the gates may look at besides the version: facts the service read in its transaction."""

    version: int
    comment: str | None
    # The most recent previously-production version that is now archived, if any.
    rollback_candidate: int | None = None


def evaluate(trigger: Trigger, ctx: GateContext) -> list[GateResult]:
    """Every gate that applies to ``trigger``, each with its verdict."""
    if trigger is Trigger.ROLLBACK:
        return [_previous_production(ctx), _comment_given(ctx)]
    return []


def failed(results: list[GateResult]) -> bool:
    return any(not r.passed for r in results)


def _previous_production(ctx: GateContext) -> GateResult:
    if ctx.rollback_candidate is None:
        return GateResult("previous_production", False, "no archived version was in production before")
    if ctx.rollback_candidate != ctx.version:
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
