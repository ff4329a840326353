"""MLflow's search grammar as the MLflow surface parses it: what each filter, order and page token
becomes, and the refusals (each a 400 naming what is wrong)."""

from __future__ import annotations

import pytest

from registry.api.mlflow.filters import (
    decode_page_token,
    encode_page_token,
    parse_filter,
    parse_order_by,
    search,
)
from registry.domain.errors import ValidationError
from registry.services.search import Condition


@pytest.mark.parametrize(("text", "versions", "expected"), [
    ("name = 'fraud'", False, (Condition("name", "=", "fraud"),)),
    ('name="fraud"', False, (Condition("name", "=", "fraud"),)),
    ("name LIKE 'fr%'", False, (Condition("name", "like", "fr%"),)),
    ("name ilike '%RAUD'", False, (Condition("name", "ilike", "%RAUD"),)),
    ("attributes.name != 'x'", False, (Condition("name", "!=", "x"),)),
    ("name IN ('a', 'b')", False, (Condition("name", "in", ("a", "b")),)),
    ("tags.team = 'risk'", False, (Condition("tag", "=", "risk", "team"),)),
    ("tags.`my key` = 'v'", False, (Condition("tag", "=", "v", "my key"),)),
    ("tag.`mlflow.prompt.is_prompt` != 'true'", False,
     (Condition("tag", "!=", "true", "mlflow.prompt.is_prompt", missing_matches=True),)),
    ("name = 'a' AND tags.k LIKE 'v%' and tags.`x.y` = 'z'", False,
     (Condition("name", "=", "a"), Condition("tag", "like", "v%", "k"), Condition("tag", "=", "z", "x.y"))),
    ("name = 'it''s'", False, None),  # SQL doubling is not MLflow's escape
    ("name = 'it\\'s'", False, (Condition("name", "=", "it's"),)),
    ("run_id IN ('r1','r2') AND name='m'", True,
     (Condition("run_id", "in", ("r1", "r2")), Condition("name", "=", "m"))),
    ("run_id NOT IN ('r1')", True, (Condition("run_id", "not in", ("r1",)),)),
    ("source_path LIKE 's3://%'", True, (Condition("source", "like", "s3://%"),)),
    ("version_number >= 3", True, (Condition("version", ">=", "3"),)),
    ("version_number = '2'", True, (Condition("version", "=", "2"),)),
    ("", True, ()),
])
def test_filters_parse_into_conditions(text: str, versions: bool, expected: tuple[Condition, ...] | None) -> None:
    if expected is None:
        with pytest.raises(ValidationError):
            parse_filter(text, versions=versions)
    else:
        assert parse_filter(text, versions=versions) == expected


@pytest.mark.parametrize(("text", "versions", "says"), [
    ("name = 'a' OR name = 'b'", False, "AND only"),
    ("run_id = 'r'", False, "invalid attribute key 'run_id'"),
    ("current_stage = 'Production'", True, "invalid attribute key 'current_stage'"),
    ("name = 'unterminated", False, "unexpected text"),
    ("name LIKE", False, "expected a quoted string"),
    ("name = fraud", False, "expected a quoted string"),
    ("run_id LIKE 'x%'", True, "'LIKE' is not supported"),
    ("version_number = 'two'", True, "not a version number"),
    ("version_number IN (1, 2)", True, "is not supported"),
    ("name IN 'a'", False, "parenthesised list"),
    ("name IN ('a' 'b')", False, "parenthesised list"),
    ("tags.k > 'v'", False, "is not supported"),
    ("= 'x'", False, "expected a key"),
])
def test_bad_filters_are_refused_with_the_reason(text: str, versions: bool, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_filter(text, versions=versions)
    assert says in caught.value.detail and text in caught.value.detail


def test_order_by_maps_mlflow_columns_and_refuses_others() -> None:
    assert parse_order_by(["name DESC", "last_updated_timestamp"], versions=False) == (
        ("name", False), ("updated_at", True))
    assert parse_order_by(["version_number asc", "creation_timestamp DESC"], versions=True) == (
        ("version", True), ("created_at", False))
    for bad in (["version_number"], ["name sideways"], ["name ASC extra"]):
        with pytest.raises(ValidationError):
            parse_order_by(bad, versions=False)


def test_page_tokens_round_trip_and_forged_ones_are_refused() -> None:
    assert decode_page_token(encode_page_token(300)) == 300
    assert decode_page_token(None) == 0
    assert encode_page_token(3) == "eyJvZmZzZXQiOiAzfQ==", "MLflow's own token for offset 3"
    for forged in ("not base64!", "e30=", "eyJvZmZzZXQiOiAtMX0=", "eyJvZmZzZXQiOiB0cnVlfQ==", "WzFd"):
        with pytest.raises(ValidationError):
            decode_page_token(forged)


def test_max_results_is_bounded() -> None:
    assert search(None, [], 1000, None, versions=False, max_allowed=1000).limit == 1000
    for bad in (0, 1001):
        with pytest.raises(ValidationError):
            search(None, [], bad, None, versions=False, max_allowed=1000)
