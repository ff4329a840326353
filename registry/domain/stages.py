"""The stage machine: one table of allowed moves, built once with ``transitions``.

The machine has no model attached; it acts on any object with a ``stage`` attribute, so domain
objects stay plain and no per-request ``add_model`` is paid. Callbacks do no I/O (there are none).
"""

from __future__ import annotations

import enum
from typing import Protocol

from transitions import Machine, MachineError

from registry.domain.errors import InvalidTransitionError, ValidationError


class Stage(enum.StrEnum):
    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"

    @classmethod
    def parse(cls, value: str) -> Stage:
        try:
            return cls(value)
        except ValueError:
            raise ValidationError(
                f"unknown stage {value!r}; expected one of {', '.join(s.value for s in cls)}"
            ) from None


class Trigger(enum.StrEnum):
    SUBMIT = "submit"
    PROMOTE = "promote"
    ARCHIVE = "archive"
    WITHDRAW = "withdraw"
    RESTORE = "restore"
    ROLLBACK = "rollback"


# The whole lifecycle. (trigger, sources, destination); every other (from, to) pair is refused.
TRANSITIONS: tuple[tuple[Trigger, tuple[Stage, ...], Stage], ...] = (
    (Trigger.SUBMIT, (Stage.NONE,), Stage.STAGING),
    (Trigger.PROMOTE, (Stage.STAGING,), Stage.PRODUCTION),
    (Trigger.ARCHIVE, (Stage.NONE, Stage.STAGING, Stage.PRODUCTION), Stage.ARCHIVED),
    (Trigger.WITHDRAW, (Stage.STAGING,), Stage.NONE),
    (Trigger.RESTORE, (Stage.ARCHIVED,), Stage.STAGING),
    (Trigger.ROLLBACK, (Stage.ARCHIVED,), Stage.PRODUCTION),
)

_MACHINE = Machine(
    model=None,
    states=Stage,
    transitions=[
        {"trigger": t.value, "source": list(sources), "dest": dest} for t, sources, dest in TRANSITIONS
    ],
    initial=Stage.NONE,
    auto_transitions=False,
    model_attribute="stage",
)

_TRIGGER_BY_EDGE: dict[tuple[Stage, Stage], Trigger] = {
    (source, dest): trigger for trigger, sources, dest in TRANSITIONS for source in sources
}


class HasStage(Protocol):
    stage: Stage


def allowed_targets(current: Stage) -> list[Stage]:
    """The stages reachable from ``current`` in one move, in table order."""
    return [dest for (source, dest) in _TRIGGER_BY_EDGE if source is current]


def edge(current: Stage, target: Stage) -> Trigger | None:
    """The trigger that moves ``current`` to ``target``, or None when the table has no such edge."""
    return _TRIGGER_BY_EDGE.get((current, target))


def refused(current: Stage, target: Stage) -> InvalidTransitionError:
    """The error for a move the table does not allow, naming the stages that are reachable."""
    return InvalidTransitionError(current.value, target.value,
                                  [s.value for s in allowed_targets(current)])


def trigger_for(current: Stage, target: Stage) -> Trigger:
    """The trigger that moves ``current`` to ``target``; InvalidTransitionError if there is none."""
    trigger = edge(current, target)
    if trigger is None:
        raise refused(current, target)
    return trigger


def fire(obj: HasStage, trigger: Trigger) -> None:
    """Move ``obj`` by ``trigger`` through the machine (which re-checks the edge)."""
    try:
        _MACHINE.events[trigger.value].trigger(obj)
    except MachineError:
        target = next(dest for t, _, dest in TRANSITIONS if t is trigger)
        raise refused(obj.stage, target) from None
