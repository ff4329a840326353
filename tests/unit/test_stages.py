"""The stage machine: every (current stage, target stage) pair, against a table written out here.

The expected table is spelled out by hand rather than read from ``stages.TRANSITIONS``: a test
derived from the code's own table would agree with any mistake in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from registry.api.errors import status_of
from registry.domain.errors import InvalidTransitionError, ValidationError
from registry.domain.stages import Stage, Trigger, allowed_targets, fire, trigger_for

# DESIGN.md's stage table, one row per allowed (from, to) edge.
ALLOWED: dict[tuple[str, str], str] = {
    ("none", "staging"): "submit",
    ("none", "archived"): "archive",
    ("staging", "production"): "promote",
    ("staging", "archived"): "archive",
    ("staging", "none"): "withdraw",
    ("production", "archived"): "archive",
    ("archived", "staging"): "restore",
    ("archived", "production"): "rollback",
}

# What the 409 problem body lists as ``allowed`` from each stage.
REACHABLE: dict[str, set[str]] = {
    "none": {"staging", "archived"},
    "staging": {"production", "archived", "none"},
    "production": {"archived"},
    "archived": {"staging", "production"},
}

STAGES = ["none", "staging", "production", "archived"]
ALL_PAIRS = [(current, target) for current in STAGES for target in STAGES]
REFUSED = [pair for pair in ALL_PAIRS if pair not in ALLOWED]

# Which stage each trigger may fire from, again written out by hand.
SOURCES: dict[str, set[str]] = {
    "submit": {"none"},
    "promote": {"staging"},
    "archive": {"none", "staging", "production"},
    "withdraw": {"staging"},
    "restore": {"archived"},
    "rollback": {"archived"},
}


@dataclass
class Thing:
    """Any plain object with a ``stage`` attribute can be moved by the machine."""

    stage: Stage


def test_the_matrix_is_complete() -> None:
    assert len(ALL_PAIRS) == 16
    assert len(ALLOWED) == 8 and len(REFUSED) == 8
    assert {s.value for s in Stage} == set(STAGES)
    assert {t.value for t in Trigger} == set(SOURCES)


@pytest.mark.parametrize(("current", "target"), list(ALLOWED), ids=lambda v: v)
def test_an_allowed_move_has_its_trigger_and_fire_moves_the_object(current: str, target: str) -> None:
    trigger = trigger_for(Stage(current), Stage(target))
    assert trigger is Trigger(ALLOWED[(current, target)])

    thing = Thing(Stage(current))
    fire(thing, trigger)
    assert thing.stage is Stage(target)


@pytest.mark.parametrize(("current", "target"), REFUSED, ids=lambda v: v)
def test_a_refused_move_is_an_invalid_transition_listing_the_reachable_stages(
    current: str, target: str
) -> None:
    with pytest.raises(InvalidTransitionError) as caught:
        trigger_for(Stage(current), Stage(target))

    err = caught.value
    assert set(err.allowed) == REACHABLE[current]
    assert len(err.allowed) == len(REACHABLE[current])  # no duplicates
    assert (err.from_stage, err.to_stage) == (current, target)
    assert status_of(err)[:2] == (409, "invalid_transition")
    assert set(err.extensions()["allowed"]) == REACHABLE[current]


def test_same_stage_moves_are_refused() -> None:
    for stage in STAGES:
        with pytest.raises(InvalidTransitionError):
            trigger_for(Stage(stage), Stage(stage))


def test_none_to_production_is_refused_with_staging_and_archived_allowed() -> None:
    with pytest.raises(InvalidTransitionError) as caught:
        trigger_for(Stage.NONE, Stage.PRODUCTION)
    assert set(caught.value.allowed) == {"staging", "archived"}


@pytest.mark.parametrize("stage", STAGES)
def test_allowed_targets_are_the_reachable_stages(stage: str) -> None:
    assert {s.value for s in allowed_targets(Stage(stage))} == REACHABLE[stage]


INVALID_FIRES = [
    (stage, trigger) for trigger, sources in SOURCES.items() for stage in STAGES
    if stage not in sources
]


@pytest.mark.parametrize(("current", "trigger"), INVALID_FIRES, ids=lambda v: v)
def test_firing_a_trigger_invalid_from_the_current_stage_is_refused_and_changes_nothing(
    current: str, trigger: str
) -> None:
    thing = Thing(Stage(current))
    with pytest.raises(InvalidTransitionError) as caught:
        fire(thing, Trigger(trigger))

    assert thing.stage is Stage(current)
    assert caught.value.from_stage == current
    assert set(caught.value.allowed) == REACHABLE[current]


def test_the_machine_keeps_no_state_between_objects() -> None:
    first, second = Thing(Stage.NONE), Thing(Stage.ARCHIVED)
    fire(first, Trigger.SUBMIT)
    fire(second, Trigger.RESTORE)
    fire(first, Trigger.PROMOTE)
    assert (first.stage, second.stage) == (Stage.PRODUCTION, Stage.STAGING)


def test_a_version_walks_its_whole_lifecycle() -> None:
    thing = Thing(Stage.NONE)
    for trigger, expected in [
        (Trigger.SUBMIT, Stage.STAGING), (Trigger.WITHDRAW, Stage.NONE),
        (Trigger.SUBMIT, Stage.STAGING), (Trigger.PROMOTE, Stage.PRODUCTION),
        (Trigger.ARCHIVE, Stage.ARCHIVED), (Trigger.ROLLBACK, Stage.PRODUCTION),
        (Trigger.ARCHIVE, Stage.ARCHIVED), (Trigger.RESTORE, Stage.STAGING),
        (Trigger.ARCHIVE, Stage.ARCHIVED),
    ]:
        fire(thing, trigger)
        assert thing.stage is expected


@pytest.mark.parametrize("value", STAGES)
def test_parse_accepts_each_stage_name(value: str) -> None:
    assert Stage.parse(value) is Stage(value)


@pytest.mark.parametrize("value", ["", "Production", "PRODUCTION", "prod", " none", "deleted"])
def test_parse_of_an_unknown_stage_is_a_validation_error(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Stage.parse(value)
    assert status_of(caught.value)[0] == 400
    assert "production" in caught.value.detail  # it names the stages it expects
