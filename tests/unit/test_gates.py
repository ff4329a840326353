"""Gates: one pure function that returns every result, so a caller sees every failure at once."""

from __future__ import annotations

import pytest

from registry.domain.errors import GateFailedError
from registry.domain.gates import GateContext, GateResult, evaluate, failed
from registry.domain.stages import Trigger


def verdicts(results: list[GateResult]) -> dict[str, bool]:
    return {r.gate: r.passed for r in results}


def test_rollback_to_the_candidate_with_a_comment_passes_both_gates() -> None:
    results = evaluate(Trigger.ROLLBACK, GateContext(version=3, comment="v4 broke fraud scores",
                                                     rollback_candidate=3))
    assert verdicts(results) == {"previous_production": True, "comment": True}
    assert not failed(results)


def test_rollback_returns_every_result_even_when_both_gates_fail() -> None:
    results = evaluate(Trigger.ROLLBACK, GateContext(version=2, comment=None, rollback_candidate=3))
    assert verdicts(results) == {"previous_production": False, "comment": False}
    assert len(results) == 2
    assert failed(results)
    assert all(r.detail for r in results)


def test_rollback_to_a_version_other_than_the_candidate_fails_and_names_the_candidate() -> None:
    results = evaluate(Trigger.ROLLBACK, GateContext(version=2, comment="why", rollback_candidate=3))
    assert verdicts(results) == {"previous_production": False, "comment": True}
    [previous] = [r for r in results if r.gate == "previous_production"]
    assert "3" in previous.detail


def test_rollback_without_any_previous_production_version_fails() -> None:
    results = evaluate(Trigger.ROLLBACK, GateContext(version=2, comment="why", rollback_candidate=None))
    assert verdicts(results) == {"previous_production": False, "comment": True}


@pytest.mark.parametrize("comment", [None, "", "   ", "\t\n"])
def test_rollback_needs_a_comment_that_is_not_blank(comment: str | None) -> None:
    results = evaluate(Trigger.ROLLBACK, GateContext(version=3, comment=comment, rollback_candidate=3))
    assert verdicts(results) == {"previous_production": True, "comment": False}
    assert failed(results)


@pytest.mark.parametrize("trigger", [t for t in Trigger if t is not Trigger.ROLLBACK])
def test_other_triggers_have_no_gates(trigger: Trigger) -> None:
    # Even a context that would fail every rollback gate passes them.
    results = evaluate(trigger, GateContext(version=1, comment=None, rollback_candidate=None))
    assert results == []
    assert not failed(results)


def test_gate_failed_error_carries_every_result_and_the_failed_names() -> None:
    results = evaluate(Trigger.ROLLBACK, GateContext(version=2, comment="why", rollback_candidate=3))
    err = GateFailedError(results)
    body = err.extensions()
    assert err.status == 422 and err.code == "gate_failed"
    assert body["failed"] == ["previous_production"]
    assert {r["gate"]: r["passed"] for r in body["results"]} == {
        "previous_production": False, "comment": True}
    assert all(set(r) == {"gate", "passed", "detail"} for r in body["results"])
