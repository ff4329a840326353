"""The delivery, secret and lineage settings read from ``REGISTRY_*`` variables, and the event
filters a subscription is configured with (``matches``, ``validate_event_types``).

Defaults are written out by hand, not read from ``WebhookSettings()``: a changed default should
be a visible decision, not something this test follows silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.config import ConfigError, Settings
from registry.domain.errors import ValidationError
from registry.services.webhooks import matches, validate_event_types


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"REGISTRY_DATA_DIR": str(tmp_path), "REGISTRY_LOG_FORMAT": "json", **env})


def refused(tmp_path: Path, name: str, value: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **{name: value})
    return str(info.value)


def test_defaults(tmp_path: Path) -> None:
    s = settings(tmp_path)
    w = s.webhooks
    assert w.allow_private is False
    assert w.retry_schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert (w.order_hold, w.timeout, w.lease) == (600, 15, 60)
    assert (w.disable_after, w.secret_overlap, w.concurrency) == (432000, 86400, 32)
    assert s.run_workers is True
    assert s.secret_key is None
    assert (s.lineage_url, s.lineage_file, s.lineage_api_key) == (None, None, None)
    assert s.lineage_namespace == "registry"
    assert (s.retention_days, s.poll_interval) == (30, 1.0)


def test_empty_values_mean_the_default(tmp_path: Path) -> None:
    names = ["REGISTRY_WEBHOOK_ALLOW_PRIVATE", "REGISTRY_WEBHOOK_RETRY_SCHEDULE", "REGISTRY_WEBHOOK_TIMEOUT",
             "REGISTRY_WEBHOOK_LEASE", "REGISTRY_SECRET_KEY", "REGISTRY_LINEAGE_URL", "REGISTRY_LINEAGE_FILE",
             "REGISTRY_LINEAGE_NAMESPACE", "REGISTRY_RUN_WORKERS"]
    assert settings(tmp_path, **dict.fromkeys(names, "")) == settings(tmp_path)


def test_every_value_is_read(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        REGISTRY_WEBHOOK_ALLOW_PRIVATE="true", REGISTRY_WEBHOOK_RETRY_SCHEDULE="1,2,3",
        REGISTRY_WEBHOOK_ORDER_HOLD="30", REGISTRY_WEBHOOK_TIMEOUT="2.5", REGISTRY_WEBHOOK_LEASE="10",
        REGISTRY_WEBHOOK_DISABLE_AFTER="3600", REGISTRY_WEBHOOK_SECRET_OVERLAP="0",
        REGISTRY_WEBHOOK_CONCURRENCY="4", REGISTRY_RUN_WORKERS="false", REGISTRY_SECRET_KEY="k" * 32,
        REGISTRY_LINEAGE_URL="http://marquez:5000", REGISTRY_LINEAGE_FILE=str(tmp_path / "l" / "e.jsonl"),
        REGISTRY_LINEAGE_NAMESPACE="ml-prod", REGISTRY_LINEAGE_API_KEY="token-1",
        REGISTRY_RETENTION_DAYS="7", REGISTRY_WORKER_POLL_INTERVAL="0.25",
    )
    w = s.webhooks
    assert w.allow_private is True
    assert w.retry_schedule == (1, 2, 3)
    assert (w.order_hold, w.timeout, w.lease, w.disable_after, w.secret_overlap, w.concurrency) == (
        30, 2.5, 10, 3600, 0, 4)
    assert s.run_workers is False
    assert s.secret_key == "k" * 32
    assert s.lineage_url == "http://marquez:5000"
    assert s.lineage_file == tmp_path / "l" / "e.jsonl"
    assert (s.lineage_namespace, s.lineage_api_key) == ("ml-prod", "token-1")
    assert (s.retention_days, s.poll_interval) == (7, 0.25)


def test_a_relative_lineage_file_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = settings(tmp_path, REGISTRY_LINEAGE_FILE="lineage/events.jsonl")
    assert s.lineage_file == tmp_path.resolve() / "lineage" / "events.jsonl"


# -- retry schedule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "schedule"), [
    ("0,5,300", (0.0, 5.0, 300.0)),
    ("10", (10.0,)),
    (" 1 , 2.5 ,60", (1.0, 2.5, 60.0)),
    ("0", (0.0,)),
    ("30,10", (30.0, 10.0)),
])
def test_a_retry_schedule_is_comma_separated_seconds(tmp_path: Path, raw: str, schedule: tuple[float, ...]
                                                     ) -> None:
    assert settings(tmp_path, REGISTRY_WEBHOOK_RETRY_SCHEDULE=raw).webhooks.retry_schedule == schedule


@pytest.mark.parametrize("raw", ["a,b", "1,,2", "1;2", "1,2,", "-1,5", "5,-0.5", "inf", "1,nan", "5s", "1e999"])
def test_a_bad_retry_schedule_is_refused(tmp_path: Path, raw: str) -> None:
    assert "REGISTRY_WEBHOOK_RETRY_SCHEDULE" in refused(tmp_path, "REGISTRY_WEBHOOK_RETRY_SCHEDULE", raw)


# -- timeout and lease ------------------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "lease"), [("15", "15"), ("60", ""), ("", "15"), ("30", "20")])
def test_the_lease_must_outlast_the_timeout(tmp_path: Path, timeout: str, lease: str) -> None:
    with pytest.raises(ConfigError, match="REGISTRY_WEBHOOK_LEASE"):
        settings(tmp_path, REGISTRY_WEBHOOK_TIMEOUT=timeout, REGISTRY_WEBHOOK_LEASE=lease)


def test_a_lease_just_longer_than_the_timeout_is_accepted(tmp_path: Path) -> None:
    w = settings(tmp_path, REGISTRY_WEBHOOK_TIMEOUT="30", REGISTRY_WEBHOOK_LEASE="30.5").webhooks
    assert (w.timeout, w.lease) == (30, 30.5)


@pytest.mark.parametrize(("name", "value"), [
    ("REGISTRY_WEBHOOK_TIMEOUT", "0"), ("REGISTRY_WEBHOOK_TIMEOUT", "0.05"), ("REGISTRY_WEBHOOK_TIMEOUT", "-1"),
    ("REGISTRY_WEBHOOK_TIMEOUT", "nan"), ("REGISTRY_WEBHOOK_TIMEOUT", "fast"),
    ("REGISTRY_WEBHOOK_LEASE", "0.5"), ("REGISTRY_WEBHOOK_LEASE", "inf"),
    ("REGISTRY_WEBHOOK_ORDER_HOLD", "-1"), ("REGISTRY_WEBHOOK_DISABLE_AFTER", "-60"),
    ("REGISTRY_WEBHOOK_SECRET_OVERLAP", "a day"),
    ("REGISTRY_WEBHOOK_CONCURRENCY", "0"), ("REGISTRY_WEBHOOK_CONCURRENCY", "1.5"),
    ("REGISTRY_RETENTION_DAYS", "-1"), ("REGISTRY_WORKER_POLL_INTERVAL", "0.001"),
    ("REGISTRY_WORKER_POLL_INTERVAL", "0"),
])
def test_out_of_range_numbers_are_refused(tmp_path: Path, name: str, value: str) -> None:
    assert name in refused(tmp_path, name, value)


# -- secret key -------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["k" * 31, "k" * 32 + "," + "s" * 31, "short", "k" * 32 + ",", " " + "k" * 31 + " "])
def test_each_secret_key_needs_32_characters(tmp_path: Path, raw: str) -> None:
    assert "REGISTRY_SECRET_KEY" in refused(tmp_path, "REGISTRY_SECRET_KEY", raw)


@pytest.mark.parametrize("raw", ["k" * 32, "k" * 32 + "," + "o" * 32, "k" * 32 + " , " + "o" * 64])
def test_secret_keys_of_32_characters_or_more_are_kept_as_given(tmp_path: Path, raw: str) -> None:
    assert settings(tmp_path, REGISTRY_SECRET_KEY=raw).secret_key == raw


# -- lineage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://marquez:5000", "https://lineage.example.com/api/v1/lineage"])
def test_a_lineage_url_is_http_or_https(tmp_path: Path, url: str) -> None:
    assert settings(tmp_path, REGISTRY_LINEAGE_URL=url).lineage_url == url


@pytest.mark.parametrize("url", ["ftp://marquez", "marquez:5000", "file:///tmp/l.jsonl", "//marquez", "http:/marquez"])
def test_other_lineage_urls_are_refused(tmp_path: Path, url: str) -> None:
    assert "REGISTRY_LINEAGE_URL" in refused(tmp_path, "REGISTRY_LINEAGE_URL", url)


# -- booleans ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [
    ("true", True), ("TRUE", True), (" True ", True), ("1", True), ("yes", True), ("on", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("off", False),
])
@pytest.mark.parametrize("name", ["REGISTRY_WEBHOOK_ALLOW_PRIVATE", "REGISTRY_RUN_WORKERS"])
def test_booleans(tmp_path: Path, name: str, raw: str, value: bool) -> None:
    s = settings(tmp_path, **{name: raw})
    assert (s.webhooks.allow_private if name == "REGISTRY_WEBHOOK_ALLOW_PRIVATE" else s.run_workers) is value


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled", "t", "y"])
@pytest.mark.parametrize("name", ["REGISTRY_WEBHOOK_ALLOW_PRIVATE", "REGISTRY_RUN_WORKERS"])
def test_other_boolean_words_are_refused(tmp_path: Path, name: str, raw: str) -> None:
    assert name in refused(tmp_path, name, raw)


# -- subscription filters ---------------------------------------------------------------------------


@dataclass
class Sub:
    event_types: list[str]
    models: list[str] | None = None


@pytest.mark.parametrize(("patterns", "event_type", "wanted"), [
    (["*"], "model_version.created", True),
    (["*"], "webhook.ping", True),
    (["model_version.*"], "model_version.stage_changed", True),
    (["model_version.*"], "model.created", False),
    (["model.*"], "model_version.created", False),  # "." is literal, not "any character"
    (["model_version.created"], "model_version.created", True),
    (["model_version.created"], "model_version.created_again", False),
    (["model_version.created"], "model_version.updated", False),
    (["Model_version.*"], "model_version.created", False),  # case matters
    (["model.deleted", "model_version.alias_*"], "model_version.alias_deleted", True),
    (["model.deleted", "model_version.alias_*"], "model.updated", False),
    (["?odel.created"], "model.created", True),
])
def test_event_type_globs(patterns: list[str], event_type: str, wanted: bool) -> None:
    assert matches(Sub(patterns), event_type, "fraud") is wanted


@pytest.mark.parametrize(("models", "model", "wanted"), [
    (None, "fraud", True),
    (["fraud"], "fraud", True),
    (["fraud"], "fraud-v2", False),
    (["fraud-*"], "fraud-v2", True),
    (["fraud-*"], "churn", False),
    (["churn", "fraud-*"], "churn", True),
    (["Fraud-*"], "fraud-v2", False),
    ([], "fraud", False),
])
def test_model_globs_filter_model_events(models: list[str] | None, model: str, wanted: bool) -> None:
    assert matches(Sub(["*"], models), "model_version.created", model) is wanted


@pytest.mark.parametrize("models", [None, ["fraud-*"], []])
def test_model_globs_do_not_apply_to_events_without_a_model(models: list[str] | None) -> None:
    assert matches(Sub(["webhook.*"], models), "webhook.disabled", None) is True
    assert matches(Sub(["model.*"], models), "webhook.disabled", None) is False


@pytest.mark.parametrize("patterns", [
    ["*"], ["model_version.*"], ["webhook.ping"], ["webhook.disabled"], ["model.*", "webhook.*"],
    ["model_version.stage_changed"], ["*.created"], ["?odel.deleted"],
])
def test_known_event_types_and_globs_are_accepted(patterns: list[str]) -> None:
    assert validate_event_types(patterns) == patterns


@pytest.mark.parametrize("pattern", [
    "model.creatd", "model_version.removed", "Model.created", "model", "webhook", "", "webhook.*.x",
    "model_version.created ", "audit.*",
])
def test_patterns_matching_no_known_type_are_refused(pattern: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_event_types(["model.created", pattern])
    assert repr(pattern) in info.value.detail
    assert "model_version.stage_changed" in info.value.detail  # the message lists the known types


def test_no_event_types_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        validate_event_types([])


def test_repeated_patterns_are_kept_once_in_order() -> None:
    assert validate_event_types(["model.*", "*", "model.*", "webhook.ping", "*"]) == [
        "model.*", "*", "webhook.ping"]


def test_at_most_64_patterns() -> None:
    assert validate_event_types(["*"] * 64) == ["*"]
    with pytest.raises(ValidationError, match="64"):
        validate_event_types(["*"] * 65)


def test_every_event_class_is_a_subscribable_event_type_and_nothing_else_is() -> None:
    """The event types come from the event classes: a new class is subscribable at once."""
    from registry.domain import events
    from registry.services.webhooks import EVENT_TYPES

    classes = {cls.type for cls in vars(events).values()
               if isinstance(cls, type) and issubclass(cls, events.Change) and cls is not events.Change}
    assert set(EVENT_TYPES) == classes | {events.WEBHOOK_PING, events.WEBHOOK_DISABLED}
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES))
    assert all(t == t.lower() and "." in t for t in EVENT_TYPES)

