"""The gates issue's settings: ``REGISTRY_DEFAULT_POLICIES`` (the rules for models without a policy
of their own, ``{"staging": {...}, "production": {...}}`` as the policy endpoint takes them) and
``REGISTRY_IDEMPOTENCY_TTL`` (how long a stored answer lives; never under 24 h)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from registry.config import ConfigError, Settings
from registry.domain.gates import Policy
from registry.domain.stages import Stage

VAR = "REGISTRY_DEFAULT_POLICIES"


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"REGISTRY_DATA_DIR": str(tmp_path), "REGISTRY_LOG_FORMAT": "json", **env})


def refusal(tmp_path: Path, name: str, value: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, **{name: value})
    return str(caught.value)


# -- REGISTRY_DEFAULT_POLICIES -----------------------------------------------------------------------

def test_without_the_variable_there_are_no_default_policies(tmp_path: Path) -> None:
    assert settings(tmp_path).default_policies == {}


@pytest.mark.parametrize("value", ["", "   ", "{}", " { } "], ids=repr)
def test_an_empty_value_or_object_means_no_default_policies(tmp_path: Path, value: str) -> None:
    assert settings(tmp_path, **{VAR: value}).default_policies == {}


def test_both_stages_are_read_as_policies(tmp_path: Path) -> None:
    raw = {
        "staging": {"required_fields": ["description", "run_id"], "required_checks": ["ci"]},
        "production": {"metrics": {"accuracy": {"min": 0.9, "min_delta_vs_production": 0}},
                       "required_approvals": 2, "auto_apply": False, "min_staging_seconds": 3600},
    }
    policies = settings(tmp_path, **{VAR: json.dumps(raw)}).default_policies

    assert set(policies) == {Stage.STAGING, Stage.PRODUCTION}
    assert policies[Stage.STAGING] == Policy(required_checks=("ci",),
                                             required_fields=("description", "run_id"))
    production = policies[Stage.PRODUCTION]
    assert production.metrics == {"accuracy": {"min": 0.9, "min_delta_vs_production": 0.0}}
    assert (production.required_approvals, production.auto_apply, production.min_staging_seconds) == (
        2, False, 3600)


def test_one_stage_alone_is_enough(tmp_path: Path) -> None:
    policies = settings(tmp_path, **{VAR: '{"production": {"required_approvals": 1}}'}).default_policies
    assert policies == {Stage.PRODUCTION: Policy(required_approvals=1)}


def test_an_empty_policy_for_a_stage_is_a_policy_without_rules(tmp_path: Path) -> None:
    assert settings(tmp_path, **{VAR: '{"staging": {}}'}).default_policies == {Stage.STAGING: Policy()}


@pytest.mark.parametrize("value", ["{", "staging: {}", "{'staging': {}}", '{"staging": {},}', "nope"])
def test_invalid_json_is_refused(tmp_path: Path, value: str) -> None:
    assert refusal(tmp_path, VAR, value) == f"{VAR} must be a JSON object"


@pytest.mark.parametrize("value", ["[]", '[{"staging": {}}]', "3", '"staging"', "null", "true"])
def test_json_that_is_not_an_object_is_refused(tmp_path: Path, value: str) -> None:
    assert refusal(tmp_path, VAR, value) == f"{VAR} must be a JSON object of stage names to policies"


@pytest.mark.parametrize("stage", ["canary", "Production", "prod", ""])
def test_an_unknown_stage_is_refused_and_named(tmp_path: Path, stage: str) -> None:
    detail = refusal(tmp_path, VAR, json.dumps({"staging": {}, stage: {}}))
    assert detail.startswith(f"{VAR}: {stage}: unknown stage {stage!r}")


@pytest.mark.parametrize("stage", ["none", "archived"])
def test_a_stage_that_takes_no_policy_is_refused_and_named(tmp_path: Path, stage: str) -> None:
    assert refusal(tmp_path, VAR, json.dumps({stage: {}})) == (
        f"{VAR}: {stage}: policies apply to entering staging or production")


@pytest.mark.parametrize("rules", [[], "required_approvals=1", 1, None], ids=repr)
def test_a_policy_that_is_not_an_object_is_refused_and_named(tmp_path: Path, rules: Any) -> None:
    assert refusal(tmp_path, VAR, json.dumps({"production": rules})) == (
        f"{VAR}: production: a policy is a JSON object")


@pytest.mark.parametrize(("stage", "rules", "reason"), [
    ("staging", {"min_staging_seconds": 60}, "min_staging_seconds is a rule for entering production"),
    ("production", {"required_approvals": 21}, "required_approvals must be a whole number from 0 to 20"),
    ("production", {"approvals": 2}, "unknown policy keys: approvals"),
    ("staging", {"metrics": {"auc": {"min": 0.9, "max": 0.1}}}, "metric 'auc': min is above max"),
    ("production", {"required_fields": ["owner"]},
     "required_fields may name description, run_id, artifact; not 'owner'"),
    ("staging", {"auto_apply": "yes"}, "auto_apply must be true or false"),
], ids=["staging time on staging", "approvals", "unknown key", "min above max", "field", "auto_apply"])
def test_a_bad_rule_is_refused_naming_the_stage_and_the_rule(
    tmp_path: Path, stage: str, rules: dict[str, Any], reason: str
) -> None:
    other = "production" if stage == "staging" else "staging"
    value = json.dumps({other: {}, stage: rules})
    assert refusal(tmp_path, VAR, value) == f"{VAR}: {stage}: {reason}"


def test_a_non_finite_bound_written_as_json_nan_is_refused(tmp_path: Path) -> None:
    # Python's json accepts NaN; the policy must not.
    detail = refusal(tmp_path, VAR, '{"production": {"metrics": {"auc": {"min": NaN}}}}')
    assert detail == f"{VAR}: production: metric 'auc': min must be a finite number"


def test_a_refused_policy_is_a_value_error_for_the_cli_to_report(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="staging"):
        settings(tmp_path, **{VAR: '{"staging": {"required_checks": "ci"}}'})


# -- REGISTRY_IDEMPOTENCY_TTL ----------------------------------------------------------------------

TTL = "REGISTRY_IDEMPOTENCY_TTL"


@pytest.mark.parametrize("value", [None, "", "  "], ids=repr)
def test_stored_answers_live_a_day_by_default(tmp_path: Path, value: str | None) -> None:
    env = {} if value is None else {TTL: value}
    assert settings(tmp_path, **env).idempotency_ttl == 86400


@pytest.mark.parametrize(("value", "seconds"), [("86400", 86400), ("172800", 172800), ("90000.5", 90000.5)])
def test_a_longer_ttl_is_read_in_seconds(tmp_path: Path, value: str, seconds: float) -> None:
    assert settings(tmp_path, **{TTL: value}).idempotency_ttl == seconds


@pytest.mark.parametrize("value", ["86399", "86399.9", "3600", "0", "-86400"])
def test_a_ttl_under_a_day_is_refused(tmp_path: Path, value: str) -> None:
    assert refusal(tmp_path, TTL, value) == f"{TTL} must be a finite number of at least 86400"


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_a_ttl_that_is_not_finite_is_refused(tmp_path: Path, value: str) -> None:
    assert refusal(tmp_path, TTL, value) == f"{TTL} must be a finite number of at least 86400"


@pytest.mark.parametrize("value", ["a day", "24h", "86400s"])
def test_a_ttl_that_is_not_a_number_is_refused(tmp_path: Path, value: str) -> None:
    assert refusal(tmp_path, TTL, value) == f"{TTL} must be a number"
