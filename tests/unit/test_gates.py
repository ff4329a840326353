"""Gates: one pure function that returns every result, so a caller sees every failure at once.

Policies are parsed from their JSON form (every refusal is a ValidationError naming the rule);
``evaluate`` turns a policy and the facts a service read into one result per rule, in a stable
order; ``stage_table`` answers first, for every (current stage, target) pair; ``rollback`` has
its own two structural gates and skips the policy.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from registry.api.errors import status_of
from registry.domain.errors import GateFailedError, ValidationError
from registry.domain.gates import (
    Candidate,
    GateContext,
    GateResult,
    Policy,
    evaluate,
    failed,
    stage_table,
)
from registry.domain.stages import (
    Stage,
    Trigger,
    edge,  # the stage-table lookup every assessment makes
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def verdicts(results: list[GateResult]) -> dict[str, bool]:
    return {r.gate: r.passed for r in results}


def candidate(version: int = 7, *, description: str = "detects fraud", run_id: str | None = "run-7",
              metrics: dict[str, float] | None = None,
              stage_since: datetime | None = NOW - timedelta(days=1)) -> Candidate:
    return Candidate(version, description, run_id, metrics or {}, stage_since)


def context(policy: dict[str, Any] | Policy | None = None, *, stage: Stage = Stage.PRODUCTION,
            **kw: Any) -> GateContext:
    if isinstance(policy, dict):
        policy = Policy.parse(policy, stage)
    kw.setdefault("candidate", candidate())
    return GateContext(now=NOW, policy=policy or Policy(), **kw)


def promote(policy: dict[str, Any] | Policy, **kw: Any) -> list[GateResult]:
    return evaluate(Trigger.PROMOTE, Stage.PRODUCTION, context(policy, **kw))


def only(results: list[GateResult]) -> GateResult:
    [result] = results
    return result


# -- Policy.parse: what it accepts ----------------------------------------------------------------

def test_the_empty_policy_has_no_rules() -> None:
    policy = Policy.parse({}, Stage.PRODUCTION)
    assert policy == Policy()
    assert policy.to_dict() == {"metrics": {}, "required_checks": [], "required_approvals": 0,
                                "auto_apply": True, "min_staging_seconds": 0, "required_fields": []}


def test_a_full_policy_is_read_with_numbers_as_floats_and_metrics_by_name() -> None:
    policy = Policy.parse({
        "metrics": {"latency_ms": {"max": 50}, "accuracy": {"min": 0.9, "min_delta_vs_production": 0}},
        "required_checks": ["ci/unit-tests", "eval:holdout"],
        "required_approvals": 2,
        "auto_apply": False,
        "min_staging_seconds": 3600,
        "required_fields": ["run_id", "description"],
    }, Stage.PRODUCTION)

    assert list(policy.metrics) == ["accuracy", "latency_ms"]
    assert policy.metrics["accuracy"] == {"min": 0.9, "min_delta_vs_production": 0.0}
    assert all(type(limit) is float for bounds in policy.metrics.values() for limit in bounds.values())
    assert policy.required_checks == ("ci/unit-tests", "eval:holdout")
    assert (policy.required_approvals, policy.auto_apply, policy.min_staging_seconds) == (2, False, 3600)
    assert policy.required_fields == ("run_id", "description")


def test_bounds_are_kept_in_a_fixed_order_whatever_order_they_came_in() -> None:
    policy = Policy.parse({"metrics": {"accuracy": {
        "max_delta_vs_production": 0.1, "max": 1, "min_delta_vs_production": -0.01, "min": 0.5}}},
        Stage.STAGING)
    assert list(policy.metrics["accuracy"]) == ["min", "max", "min_delta_vs_production",
                                                "max_delta_vs_production"]


def test_min_equal_to_max_is_a_valid_bound() -> None:
    assert Policy.parse({"metrics": {"k": {"min": 3, "max": 3}}}, Stage.STAGING).metrics == {
        "k": {"min": 3.0, "max": 3.0}}


def test_repeated_names_collapse_in_their_first_order() -> None:
    policy = Policy.parse({"required_checks": ["b", "a", "b", "c", "a"],
                           "required_fields": ["run_id", "description", "run_id"]}, Stage.PRODUCTION)
    assert policy.required_checks == ("b", "a", "c")
    assert policy.required_fields == ("run_id", "description")


def test_min_staging_seconds_zero_is_allowed_on_staging() -> None:
    assert Policy.parse({"min_staging_seconds": 0}, Stage.STAGING).min_staging_seconds == 0


@pytest.mark.parametrize(("key", "value"), [
    ("required_approvals", 0), ("required_approvals", 20),
    ("min_staging_seconds", 0), ("min_staging_seconds", 366 * 86400),
])
def test_counts_at_the_ends_of_their_range_are_accepted(key: str, value: int) -> None:
    assert getattr(Policy.parse({key: value}, Stage.PRODUCTION), key) == value


def test_a_hundred_checks_and_metrics_are_accepted() -> None:
    policy = Policy.parse({"required_checks": [f"c{i}" for i in range(100)],
                           "metrics": {f"m{i}": {"min": 0} for i in range(100)}}, Stage.PRODUCTION)
    assert len(policy.required_checks) == len(policy.metrics) == 100


@pytest.mark.parametrize("stage", [Stage.STAGING, Stage.PRODUCTION])
@pytest.mark.parametrize("raw", [
    {},
    {"metrics": {"accuracy": {"min": 0.9}, "latency_ms": {"max": 50.5}}},
    {"metrics": {"auc": {"min_delta_vs_production": 0, "max_delta_vs_production": 0.2}},
     "required_checks": ["ci"], "required_approvals": 1, "auto_apply": False,
     "required_fields": ["description"]},
], ids=["empty", "thresholds", "everything"])
def test_to_dict_round_trips_through_parse_and_json(stage: Stage, raw: dict[str, Any]) -> None:
    policy = Policy.parse(raw, stage)
    again = Policy.parse(json.loads(json.dumps(policy.to_dict())), stage)
    assert again == policy
    assert again.to_dict() == policy.to_dict()


def test_to_dict_round_trips_min_staging_seconds_on_production() -> None:
    policy = Policy.parse({"min_staging_seconds": 600, "required_approvals": 3}, Stage.PRODUCTION)
    assert Policy.parse(policy.to_dict(), Stage.PRODUCTION) == policy
    assert policy.to_dict()["min_staging_seconds"] == 600


# -- Policy.parse: every refusal ------------------------------------------------------------------

def refusal(raw: Any, stage: Stage = Stage.PRODUCTION) -> str:
    with pytest.raises(ValidationError) as caught:
        Policy.parse(raw, stage)
    assert status_of(caught.value)[:2] == (400, "validation_error")
    return caught.value.detail


def test_unknown_keys_are_refused_and_named_in_order() -> None:
    detail = refusal({"required_checks": [], "zeta": 1, "approvals": 2})
    assert detail == "unknown policy keys: approvals, zeta"


@pytest.mark.parametrize("stage", [Stage.NONE, Stage.ARCHIVED])
def test_policies_apply_only_to_entering_staging_or_production(stage: Stage) -> None:
    assert "staging or production" in refusal({}, stage)


def test_min_staging_seconds_is_refused_on_a_staging_policy() -> None:
    assert "entering production" in refusal({"min_staging_seconds": 60}, Stage.STAGING)


@pytest.mark.parametrize(("key", "value"), [
    ("required_approvals", -1), ("required_approvals", 21), ("required_approvals", True),
    ("required_approvals", 1.0), ("required_approvals", "2"), ("required_approvals", None),
    ("min_staging_seconds", -1), ("min_staging_seconds", 366 * 86400 + 1),
    ("min_staging_seconds", False), ("min_staging_seconds", 60.5), ("min_staging_seconds", "60"),
], ids=repr)
def test_counts_outside_their_range_or_not_whole_numbers_are_refused(key: str, value: Any) -> None:
    detail = refusal({key: value})
    assert detail.startswith(f"{key} must be a whole number from 0 to ")


@pytest.mark.parametrize("value", ["true", 1, 0, None, "false"], ids=repr)
def test_auto_apply_must_be_a_boolean(value: Any) -> None:
    assert refusal({"auto_apply": value}) == "auto_apply must be true or false"


@pytest.mark.parametrize("key", ["required_checks", "required_fields"])
@pytest.mark.parametrize("value", ["ci", {"ci": True}, None, 3, ("ci",)], ids=repr)
def test_names_must_come_as_a_list(key: str, value: Any) -> None:
    assert refusal({key: value}).startswith(f"{key} must be a list of at most 100 names")


def test_more_than_a_hundred_required_checks_are_refused() -> None:
    assert "at most 100" in refusal({"required_checks": [f"c{i}" for i in range(101)]})


@pytest.mark.parametrize("key", ["required_checks", "required_fields"])
@pytest.mark.parametrize("name", [1, None, ["ci"], {"n": "ci"}], ids=repr)
def test_names_must_be_strings(key: str, name: Any) -> None:
    assert refusal({key: [name]}) == f"{key} must hold names"


@pytest.mark.parametrize("name", ["", " ci", "ci ", "a\nb", "x" * 201, "tab\there"], ids=repr)
def test_malformed_check_names_are_refused(name: str) -> None:
    assert refusal({"required_checks": ["ok", name]}).startswith("required_checks: names are 1 to 200")


def test_a_check_name_of_two_hundred_characters_is_accepted() -> None:
    assert Policy.parse({"required_checks": ["x" * 200]}, Stage.STAGING).required_checks == ("x" * 200,)


@pytest.mark.parametrize("name", ["owner", "tags", "Description", "metrics"])
def test_required_fields_may_only_name_description_and_run_id(name: str) -> None:
    detail = refusal({"required_fields": ["description", name]})
    assert detail == f"required_fields may name description, run_id, artifact; not {name!r}"


@pytest.mark.parametrize("value", [[], ["accuracy"], "accuracy", 0.9, None], ids=repr)
def test_metrics_must_be_an_object(value: Any) -> None:
    assert refusal({"metrics": value}).startswith("metrics must map at most 100 metric names")


def test_more_than_a_hundred_metric_rules_are_refused() -> None:
    assert "at most 100" in refusal({"metrics": {f"m{i}": {"min": 0} for i in range(101)}})


@pytest.mark.parametrize("name", ["", "m" * 251, "a\x00b"], ids=repr)
def test_malformed_metric_names_are_refused(name: str) -> None:
    assert refusal({"metrics": {name: {"min": 0}}}) == "metric names must be 1 to 250 characters"


@pytest.mark.parametrize("bounds", [{}, [], 0.9, None, "min"], ids=repr)
def test_a_metric_needs_an_object_of_at_least_one_bound(bounds: Any) -> None:
    assert refusal({"metrics": {"auc": bounds}}).startswith("metric 'auc': give at least one of min, max")


@pytest.mark.parametrize("bound", ["gte", "minimum", "MIN", "delta"])
def test_unknown_bounds_are_refused_and_named(bound: str) -> None:
    assert refusal({"metrics": {"auc": {"min": 0.5, bound: 1}}}).startswith(
        f"metric 'auc': unknown bound {bound!r}")


@pytest.mark.parametrize("bound", ["min", "max", "min_delta_vs_production", "max_delta_vs_production"])
@pytest.mark.parametrize("limit", [True, "0.9", None, math.nan, math.inf, -math.inf, [0.9]], ids=repr)
def test_bounds_must_be_finite_numbers(bound: str, limit: Any) -> None:
    assert refusal({"metrics": {"auc": {bound: limit}}}) == f"metric 'auc': {bound} must be a finite number"


def test_min_above_max_is_refused() -> None:
    assert refusal({"metrics": {"auc": {"min": 0.9, "max": 0.8}}}) == "metric 'auc': min is above max"


def test_a_min_delta_above_the_max_delta_is_refused_as_no_version_could_pass() -> None:
    rules = {"metrics": {"auc": {"min_delta_vs_production": 0.1, "max_delta_vs_production": 0.0}}}
    assert refusal(rules) == "metric 'auc': min_delta_vs_production is above max_delta_vs_production"


# -- evaluate: which triggers and targets meet the policy -----------------------------------------

STRICT: dict[str, Any] = {"required_fields": ["description"], "required_checks": ["ci"],
                          "metrics": {"auc": {"min": 0.9}}, "required_approvals": 1}


@pytest.mark.parametrize(("trigger", "target"), [
    (Trigger.ARCHIVE, Stage.ARCHIVED), (Trigger.WITHDRAW, Stage.NONE),
    (None, Stage.NONE), (None, Stage.ARCHIVED),
])
def test_moves_into_none_or_archived_meet_no_policy(trigger: Trigger | None, target: Stage) -> None:
    # A context that fails every rule of the policy still yields no results.
    assert evaluate(trigger, target, context(STRICT, candidate=candidate(description=""))) == []


@pytest.mark.parametrize(("trigger", "target"), [
    (Trigger.SUBMIT, Stage.STAGING), (Trigger.RESTORE, Stage.STAGING),
    (Trigger.PROMOTE, Stage.PRODUCTION),
])
def test_moves_into_staging_or_production_meet_every_rule(trigger: Trigger, target: Stage) -> None:
    results = evaluate(trigger, target, context(STRICT, stage=target,
                                                candidate=candidate(description="")))
    assert verdicts(results) == {"field:description": False, "metric:auc:min": False,
                                 "check:ci": False, "approvals": False}


@pytest.mark.parametrize("target", [Stage.STAGING, Stage.PRODUCTION])
def test_a_move_that_is_no_edge_still_meets_the_policy(target: Stage) -> None:
    # The caller sees every rule at once, beside the failed stage_table gate.
    results = evaluate(None, target, context(STRICT, stage=target, checks={"ci": "success"}))
    assert verdicts(results) == {"field:description": True, "metric:auc:min": False,
                                 "check:ci": True, "approvals": False}


def test_the_empty_policy_yields_no_results() -> None:
    assert promote(Policy()) == []
    assert not failed([])


# -- required fields ---------------------------------------------------------------------------------

@pytest.mark.parametrize("description", ["", "   ", "\n\t"], ids=repr)
def test_a_blank_description_fails_the_description_gate(description: str) -> None:
    result = only(promote({"required_fields": ["description"]},
                          candidate=candidate(description=description)))
    assert result == GateResult("field:description", False, "the version has no description")


def test_a_description_passes_the_description_gate() -> None:
    assert only(promote({"required_fields": ["description"]})) == GateResult(
        "field:description", True, "description is set")


@pytest.mark.parametrize("run_id", [None, ""], ids=repr)
def test_a_missing_run_id_fails_the_run_id_gate(run_id: str | None) -> None:
    result = only(promote({"required_fields": ["run_id"]}, candidate=candidate(run_id=run_id)))
    assert result == GateResult("field:run_id", False, "the version has no run_id")


def test_a_run_id_passes_the_run_id_gate() -> None:
    assert only(promote({"required_fields": ["run_id"]})).passed


# -- absolute metric thresholds -----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "passed"), [(0.95, True), (0.9, True), (0.8999, False), (-1, False)])
def test_min_passes_at_or_above_the_limit(value: float, passed: bool) -> None:
    result = only(promote({"metrics": {"accuracy": {"min": 0.9}}},
                          candidate=candidate(metrics={"accuracy": value})))
    assert (result.gate, result.passed) == ("metric:accuracy:min", passed)
    assert result.detail == f"accuracy = {value:g}, needs >= 0.9"


@pytest.mark.parametrize(("value", "passed"), [(10, True), (50, True), (50.01, False)])
def test_max_passes_at_or_below_the_limit(value: float, passed: bool) -> None:
    result = only(promote({"metrics": {"latency_ms": {"max": 50}}},
                          candidate=candidate(metrics={"latency_ms": value})))
    assert (result.gate, result.passed) == ("metric:latency_ms:max", passed)
    assert result.detail == f"latency_ms = {value:g}, needs <= 50"


@pytest.mark.parametrize("bound", ["min", "max", "min_delta_vs_production", "max_delta_vs_production"])
def test_a_missing_metric_fails_every_bound_on_it(bound: str) -> None:
    # Even a relative bound with nothing in production to compare with: the version must report it.
    result = only(promote({"metrics": {"accuracy": {bound: 0.0}}},
                          candidate=candidate(metrics={"auc": 0.99})))
    assert result == GateResult(f"metric:accuracy:{bound}", False, "the version has no metric 'accuracy'")


def test_a_metric_with_both_bounds_gives_one_result_per_bound() -> None:
    results = promote({"metrics": {"accuracy": {"max": 0.99, "min": 0.9}}},
                      candidate=candidate(metrics={"accuracy": 0.995}))
    assert [(r.gate, r.passed) for r in results] == [
        ("metric:accuracy:min", True), ("metric:accuracy:max", False)]


# -- metric thresholds relative to production ---------------------------------------------------------

RELATIVE = {"metrics": {"accuracy": {"min_delta_vs_production": 0.0}}}


def test_a_relative_gate_passes_when_nothing_is_in_production() -> None:
    result = only(promote(RELATIVE, candidate=candidate(metrics={"accuracy": 0.5}), production=None))
    assert result == GateResult("metric:accuracy:min_delta_vs_production", True,
                                "no other version in production to compare with")


def test_a_relative_gate_passes_when_the_candidate_is_the_production_version() -> None:
    me = candidate(7, metrics={"accuracy": 0.5})
    result = only(promote(RELATIVE, candidate=me, production=candidate(7, metrics={"accuracy": 0.9})))
    assert result.passed
    assert result.detail == "no other version in production to compare with"


def test_a_relative_gate_passes_when_production_lacks_the_metric() -> None:
    result = only(promote(RELATIVE, candidate=candidate(metrics={"accuracy": 0.5}),
                          production=candidate(5, metrics={"auc": 0.9})))
    assert result == GateResult("metric:accuracy:min_delta_vs_production", True,
                                "production version 5 has no metric 'accuracy'")


def test_equal_values_pass_a_min_delta_of_zero() -> None:
    result = only(promote(RELATIVE, candidate=candidate(metrics={"accuracy": 0.91}),
                          production=candidate(5, metrics={"accuracy": 0.91})))
    assert result.passed
    assert result.detail == ("accuracy = 0.91 vs 0.91 in production (version 5): delta +0, "
                             "needs >= +0")


def test_a_version_worse_than_production_is_refused_by_a_min_delta() -> None:
    result = only(promote(RELATIVE, candidate=candidate(metrics={"accuracy": 0.88}),
                          production=candidate(5, metrics={"accuracy": 0.91})))
    assert not result.passed
    assert result.gate == "metric:accuracy:min_delta_vs_production"
    assert "version 5" in result.detail and "delta -0.03" in result.detail


def test_a_version_better_than_production_passes_a_positive_min_delta() -> None:
    policy = {"metrics": {"accuracy": {"min_delta_vs_production": 0.01}}}
    assert only(promote(policy, candidate=candidate(metrics={"accuracy": 0.93}),
                        production=candidate(5, metrics={"accuracy": 0.91}))).passed
    assert not only(promote(policy, candidate=candidate(metrics={"accuracy": 0.915}),
                            production=candidate(5, metrics={"accuracy": 0.91}))).passed


@pytest.mark.parametrize(("latency", "passed"), [(40, True), (45, True), (45.5, False)])
def test_max_delta_bounds_how_much_worse_a_metric_may_get(latency: float, passed: bool) -> None:
    result = only(promote({"metrics": {"latency_ms": {"max_delta_vs_production": 5}}},
                          candidate=candidate(metrics={"latency_ms": latency}),
                          production=candidate(5, metrics={"latency_ms": 40})))
    assert (result.gate, result.passed) == ("metric:latency_ms:max_delta_vs_production", passed)
    assert "needs <= +5" in result.detail


# -- required checks ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "passed", "detail"), [
    ("success", True, "check 'ci' succeeded"),
    ("pending", False, "check 'ci' is pending"),
    ("failure", False, "check 'ci' is failure"),
    (None, False, "check 'ci' has not been reported"),
])
def test_a_required_check_passes_only_on_success(status: str | None, passed: bool, detail: str) -> None:
    checks = {} if status is None else {"ci": status}
    assert only(promote({"required_checks": ["ci"]}, checks=checks)) == GateResult("check:ci", passed, detail)


def test_checks_that_are_not_required_are_ignored() -> None:
    results = promote({"required_checks": ["ci"]}, checks={"ci": "success", "lint": "failure"})
    assert verdicts(results) == {"check:ci": True}


# -- time in staging ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("spent", "passed"), [(3600, True), (3599, False), (86400, True), (0, False)])
def test_min_staging_time_counts_seconds_since_the_version_entered_staging(spent: int, passed: bool) -> None:
    result = only(promote({"min_staging_seconds": 3600},
                          candidate=candidate(stage_since=NOW - timedelta(seconds=spent))))
    assert result == GateResult("min_staging_time", passed,
                                f"in staging for {spent} s of the 3600 s required")


def test_min_staging_time_without_a_stage_start_counts_zero() -> None:
    result = only(promote({"min_staging_seconds": 60}, candidate=candidate(stage_since=None)))
    assert result == GateResult("min_staging_time", False, "in staging for 0 s of the 60 s required")


def test_a_stage_start_in_the_future_counts_zero_not_negative() -> None:
    result = only(promote({"min_staging_seconds": 60},
                          candidate=candidate(stage_since=NOW + timedelta(hours=1))))
    assert result.detail == "in staging for 0 s of the 60 s required" and not result.passed


@pytest.mark.parametrize("trigger", [Trigger.SUBMIT, Trigger.RESTORE])
def test_min_staging_time_is_a_rule_for_production_only(trigger: Trigger) -> None:
    # Built directly (parse refuses it for staging): the rule is still not applied there.
    ctx = context(Policy(min_staging_seconds=3600), candidate=candidate(stage_since=None))
    assert evaluate(trigger, Stage.STAGING, ctx) == []


# -- approvals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("approvals", "passed"), [(0, False), (1, False), (2, True), (3, True)])
def test_approvals_pass_at_the_quorum(approvals: int, passed: bool) -> None:
    result = only(promote({"required_approvals": 2}, approvals=approvals, request_id=12))
    assert result == GateResult("approvals", passed, f"{approvals} of 2 required approvals on request 12")


def test_approvals_without_a_request_say_so() -> None:
    result = only(promote({"required_approvals": 1}))
    assert result == GateResult(
        "approvals", False, "0 of 1 required approvals (no open transition request by this principal)")


def test_no_approvals_gate_when_none_are_required() -> None:
    assert promote({}, approvals=5, request_id=3) == []


# -- every failure, in a stable order ----------------------------------------------------------------

EVERYTHING: dict[str, Any] = {
    "required_fields": ["run_id", "description"],
    "metrics": {"latency_ms": {"max": 50, "max_delta_vs_production": 5},
                "accuracy": {"min_delta_vs_production": 0, "min": 0.9}},
    "required_checks": ["lint", "ci"],
    "min_staging_seconds": 3600,
    "required_approvals": 2,
}


def failing_everything() -> list[GateResult]:
    return promote(EVERYTHING,
                   candidate=candidate(description="", run_id=None, stage_since=NOW,
                                       metrics={"accuracy": 0.5, "latency_ms": 90}),
                   production=candidate(5, metrics={"accuracy": 0.9, "latency_ms": 40}),
                   checks={"ci": "failure"}, approvals=1, request_id=4)


def test_every_failure_is_reported_not_only_the_first() -> None:
    results = failing_everything()
    assert failed(results)
    assert all(not r.passed for r in results)
    assert len(results) == 10


def test_results_come_in_a_stable_documented_order() -> None:
    # Fields in the policy's order, metrics by name with bounds in a fixed order, checks in the
    # policy's order, then time in staging, then approvals.
    assert [r.gate for r in failing_everything()] == [
        "field:run_id", "field:description",
        "metric:accuracy:min", "metric:accuracy:min_delta_vs_production",
        "metric:latency_ms:max", "metric:latency_ms:max_delta_vs_production",
        "check:lint", "check:ci",
        "min_staging_time", "approvals",
    ]
    assert failing_everything() == failing_everything()


def test_passing_and_failing_results_stay_interleaved_in_order() -> None:
    results = promote(EVERYTHING,
                      candidate=candidate(stage_since=NOW - timedelta(hours=2),
                                          metrics={"accuracy": 0.95, "latency_ms": 90}),
                      production=candidate(5, metrics={"accuracy": 0.9, "latency_ms": 40}),
                      checks={"ci": "success", "lint": "pending"}, approvals=2, request_id=4)
    assert [(r.gate, r.passed) for r in results] == [
        ("field:run_id", True), ("field:description", True),
        ("metric:accuracy:min", True), ("metric:accuracy:min_delta_vs_production", True),
        ("metric:latency_ms:max", False), ("metric:latency_ms:max_delta_vs_production", False),
        ("check:lint", False), ("check:ci", True),
        ("min_staging_time", True), ("approvals", True),
    ]
    assert [r.gate for r in results if not r.passed] == GateFailedError(results).failed


def test_a_policy_that_passes_everything_is_not_failed() -> None:
    results = promote(EVERYTHING,
                      candidate=candidate(stage_since=NOW - timedelta(hours=2),
                                          metrics={"accuracy": 0.95, "latency_ms": 42}),
                      production=candidate(5, metrics={"accuracy": 0.9, "latency_ms": 40}),
                      checks={"ci": "success", "lint": "success"}, approvals=2, request_id=4)
    assert len(results) == 10 and not failed(results)


def test_every_result_has_a_detail_and_serialises_to_the_wire_shape() -> None:
    for result in failing_everything():
        assert result.detail
        assert result.to_dict() == {"gate": result.gate, "passed": result.passed, "detail": result.detail}


# -- the stage table, for every (current stage, target) pair ------------------------------------------

# DESIGN.md's stage table, written out by hand (not read from the code's own table).
EDGES: dict[tuple[Stage, Stage], Trigger] = {
    (Stage.NONE, Stage.STAGING): Trigger.SUBMIT,
    (Stage.NONE, Stage.ARCHIVED): Trigger.ARCHIVE,
    (Stage.STAGING, Stage.PRODUCTION): Trigger.PROMOTE,
    (Stage.STAGING, Stage.ARCHIVED): Trigger.ARCHIVE,
    (Stage.STAGING, Stage.NONE): Trigger.WITHDRAW,
    (Stage.PRODUCTION, Stage.ARCHIVED): Trigger.ARCHIVE,
    (Stage.ARCHIVED, Stage.STAGING): Trigger.RESTORE,
    (Stage.ARCHIVED, Stage.PRODUCTION): Trigger.ROLLBACK,
}
PAIRS = [(current, target) for current in Stage for target in Stage]


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=lambda s: s.value)
def test_the_stage_table_gate_for_every_pair(current: Stage, target: Stage) -> None:
    trigger = edge(current, target)
    assert trigger is EDGES.get((current, target))
    result = stage_table(current, target, trigger)
    assert result.gate == "stage_table"
    if (current, target) in EDGES:
        assert result == GateResult("stage_table", True,
                                    f"{current.value} -> {target.value} by {trigger.value}")
    else:
        assert result == GateResult("stage_table", False, f"no move from {current.value} to {target.value}")


def test_same_stage_moves_are_never_edges() -> None:
    assert all(not stage_table(s, s, None).passed for s in Stage)
    assert all((s, s) not in EDGES for s in Stage)


# -- rollback's two structural gates ------------------------------------------------------------------

def rollback(version: int = 3, *, comment: str | None = "v4 broke fraud scores",
             rollback_candidate: int | None = 3, policy: dict[str, Any] | None = None) -> list[GateResult]:
    return evaluate(Trigger.ROLLBACK, Stage.PRODUCTION, context(
        policy, candidate=candidate(version), comment=comment, rollback_candidate=rollback_candidate))


def test_rollback_to_the_candidate_with_a_comment_passes_both_gates() -> None:
    assert rollback() == [GateResult("previous_production", True, "most recent previous production version"),
                          GateResult("comment", True, "comment given")]


def test_rollback_returns_every_result_even_when_both_gates_fail() -> None:
    results = rollback(2, comment=None)
    assert [(r.gate, r.passed) for r in results] == [("previous_production", False), ("comment", False)]
    assert failed(results) and all(r.detail for r in results)


def test_rollback_to_a_version_other_than_the_candidate_names_the_candidate() -> None:
    [previous, comment] = rollback(2)
    assert (previous.passed, comment.passed) == (False, True)
    assert previous.detail.startswith("only version 3,")


def test_rollback_without_any_previous_production_version_fails() -> None:
    [previous, _] = rollback(rollback_candidate=None)
    assert previous == GateResult("previous_production", False, "no version to roll back to: no "
                                  "archived version left production other than by a rollback")


@pytest.mark.parametrize("comment", [None, "", "   ", "\t\n"], ids=repr)
def test_rollback_needs_a_comment_that_is_not_blank(comment: str | None) -> None:
    assert verdicts(rollback(comment=comment)) == {"previous_production": True, "comment": False}


def test_rollback_skips_the_production_policy() -> None:
    # A policy that a bare candidate fails on every rule: a rollback meets none of it.
    results = rollback(policy=EVERYTHING)
    assert [r.gate for r in results] == ["previous_production", "comment"]
    assert not failed(results)


def test_gate_failed_error_carries_every_result_and_the_failed_names() -> None:
    err = GateFailedError(rollback(2))
    body = err.extensions()
    assert status_of(err)[:2] == (422, "gate_failed")
    assert body["failed"] == ["previous_production"]
    assert [(r["gate"], r["passed"]) for r in body["results"]] == [
        ("previous_production", False), ("comment", True)]
    assert all(set(r) == {"gate", "passed", "detail"} for r in body["results"])
