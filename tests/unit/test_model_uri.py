"""Parsing MLflow-style model URIs (registry.services.resolve.ModelUri): every accepted form, and
a ValidationError (400) for everything else, before any database is read."""

from __future__ import annotations

import pytest

from registry.api.errors import status_of
from registry.domain.errors import ValidationError
from registry.domain.stages import Stage
from registry.services.resolve import MAX_VERSION, ModelUri


@pytest.mark.parametrize(("suffix", "stage"), [
    ("Production", Stage.PRODUCTION),
    ("production", Stage.PRODUCTION),
    ("PRODUCTION", Stage.PRODUCTION),
    ("pRoDuCtIoN", Stage.PRODUCTION),
    ("Staging", Stage.STAGING),
    ("staging", Stage.STAGING),
    ("None", Stage.NONE),
    ("none", Stage.NONE),
    ("Archived", Stage.ARCHIVED),
    ("ARCHIVED", Stage.ARCHIVED),
])
def test_stage_in_any_case(suffix: str, stage: Stage) -> None:
    assert ModelUri.parse(f"models:/fraud/{suffix}") == ModelUri("fraud", stage=stage)


@pytest.mark.parametrize(("uri", "name", "alias"), [
    ("models:/fraud@champion", "fraud", "champion"),
    ("models:/fraud@Champion-2_b", "fraud", "Champion-2_b"),
    ("models:/fraud detector@prod", "fraud detector", "prod"),
    ("models:/modèle@a", "modèle", "a"),
    ("models:/fraud@" + "a" * 255, "fraud", "a" * 255),
    ("models:/fraud@latest2", "fraud", "latest2"),
    ("models:/fraud@v", "fraud", "v"),
    ("models:/fraud@v1a", "fraud", "v1a"),
])
def test_alias(uri: str, name: str, alias: str) -> None:
    assert ModelUri.parse(uri) == ModelUri(name, alias=alias)


@pytest.mark.parametrize(("suffix", "version"), [
    ("1", 1), ("7", 7), ("007", 7), (str(MAX_VERSION), MAX_VERSION),
])
def test_version_number(suffix: str, version: int) -> None:
    assert ModelUri.parse(f"models:/fraud/{suffix}") == ModelUri("fraud", version=version)
    assert MAX_VERSION == 2**31 - 1


def test_latest() -> None:
    assert ModelUri.parse("models:/fraud/latest") == ModelUri("fraud", latest=True)


def test_names_may_hold_dots_spaces_and_unicode() -> None:
    assert ModelUri.parse("models:/team.fraud v2/3") == ModelUri("team.fraud v2", version=3)
    assert ModelUri.parse("models:/模型/latest") == ModelUri("模型", latest=True)


@pytest.mark.parametrize("suffix", ["Latest", "LATEST"])
def test_latest_in_any_case(suffix: str) -> None:
    assert ModelUri.parse(f"models:/fraud/{suffix}") == ModelUri("fraud", latest=True)


REFUSED = [
    pytest.param("fraud/7", "starts with models:/", id="no-scheme"),
    pytest.param("", "starts with models:/", id="empty"),
    pytest.param("model:/fraud/7", "starts with models:/", id="wrong-scheme"),
    pytest.param("MODELS:/fraud/7", "starts with models:/", id="scheme-upper-case"),
    pytest.param("runs:/abc/model", "starts with models:/", id="runs-uri"),
    pytest.param("models:fraud/7", "starts with models:/", id="no-slash"),
    pytest.param("models:/x", "names a stage, a version", id="name-only"),
    pytest.param("models:/", "names a stage, a version", id="nothing"),
    pytest.param("models:/fraud/", "not a stage", id="empty-suffix"),
    pytest.param("models:/fraud/7/8", "not a stage", id="two-suffixes"),
    pytest.param("models:/fraud/7@champion", "not a stage", id="version-and-alias"),
    pytest.param("models:/fraud/Production/", "not a stage", id="trailing-slash"),
    pytest.param("models:/fraud/0", "version numbers are 1 to", id="version-0"),
    pytest.param("models:/fraud/00", "version numbers are 1 to", id="version-00"),
    pytest.param(f"models:/fraud/{2**31}", "version numbers are 1 to", id="version-2**31"),
    pytest.param("models:/fraud/" + "9" * 40, "version numbers are 1 to", id="version-huge"),
    pytest.param("models:/fraud/-1", "not a stage", id="version-negative"),
    pytest.param("models:/fraud/+1", "not a stage", id="version-plus"),
    pytest.param("models:/fraud/1.0", "not a stage", id="version-decimal"),
    pytest.param("models:/fraud/\u0663", "not a stage", id="version-arabic-digit"),
    pytest.param("models:/fraud/\u00b2", "not a stage", id="version-superscript"),
    pytest.param("models:/fraud/Deleted", "not a stage", id="unknown-stage"),
    pytest.param("models:/fraud/prod", "not a stage", id="stage-abbreviation"),
    pytest.param("models:/fraud/ Production", "not a stage", id="stage-with-space"),
    pytest.param("models:/ fraud/1", "white space", id="name-leading-space"),
    pytest.param("models:/fraud /1", "white space", id="name-trailing-space"),
    pytest.param("models:/a:b/1", "'/', ':' or control", id="name-colon"),
    pytest.param("models:/a\x00b/1", "'/', ':' or control", id="name-nul"),
    pytest.param("models:/./1", "'.' or '..'", id="name-dot"),
    pytest.param("models:/../latest", "'.' or '..'", id="name-dotdot"),
    pytest.param("models:/" + "x" * 257 + "/1", "1 to 256", id="name-too-long"),
    pytest.param("models:/@champion", "1 to 256", id="alias-without-name"),
    pytest.param("models:/fraud@", "alias must be", id="empty-alias"),
    pytest.param("models:/fraud@latest", "reserved", id="alias-latest"),
    pytest.param("models:/fraud@LATEST", "reserved", id="alias-latest-upper"),
    pytest.param("models:/fraud@v1", "reserved", id="alias-v1"),
    pytest.param("models:/fraud@V12", "reserved", id="alias-V12"),
    pytest.param("models:/fraud@cham pion", "alias must be", id="alias-space"),
    pytest.param("models:/fraud@champ.ion", "alias must be", id="alias-dot"),
    pytest.param("models:/fraud@" + "a" * 256, "alias must be", id="alias-too-long"),
    pytest.param("models:/fraud@ch\u00e4mp", "alias must be", id="alias-non-ascii"),
]


@pytest.mark.parametrize(("uri", "says"), REFUSED)
def test_malformed_uris_are_refused(uri: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelUri.parse(uri)
    assert status_of(caught.value)[0] == 400
    assert says in caught.value.detail
