"""Field rules of the domain: model names (MLflow's rule), aliases, tags and metrics; and the
edge's model-name pattern agreeing with the domain on every name."""

from __future__ import annotations

import math
import re

import msgspec
import pytest

from registry.api.schemas import MODEL_NAME_PATTERN, ModelName
from registry.domain.errors import ValidationError
from registry.domain.model import (
    validate_alias,
    validate_metrics,
    validate_model_name,
    validate_tags,
)

GOOD_NAMES = [
    "fraud",
    "a",
    "a" * 256,
    "fraud detector v2",          # spaces inside are fine
    "...",                        # only '.' and '..' are refused
    ".hidden",
    "a..b",
    "modèle-日本語-🙂",
    "name with\u00a0nbsp inside",
    "x" * 255 + "é",              # 256 characters, more bytes
    "under_score-dash.dot@at+plus",
]

BAD_NAMES = [
    "",
    "a" * 257,
    "é" * 257,
    ".",
    "..",
    "a/b",
    "/",
    "a:b",
    "models:/fraud",
    "tab\tinside",
    "new\nline",
    "nul\x00",
    "del\x7fete",
    "esc\x1b",
    " leading",
    "trailing ",
    "\ttab-led",
    "\u00a0nbsp-led",             # non-breaking space is white space too
    "ideographic\u3000",
    " ",
]


@pytest.mark.parametrize("name", GOOD_NAMES, ids=repr)
def test_a_good_model_name_is_accepted(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:40])
def test_a_bad_model_name_is_a_validation_error(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_model_name(name)


# Names where a regex and Python's own checks are most likely to part ways.
TRICKY_NAMES = [
    *GOOD_NAMES,
    *BAD_NAMES,
    "a" * 256 + " ",               # 257 with a trailing space
    " " + "a" * 255,
    "name\n",                      # '$' in a Python regex also matches before a final newline
    ".\n",
    "a\r\n",
    "zero\u200bwidth\u200b",       # U+200B is not white space for either
    "next-line\x85",               # U+0085 is white space (and not a C0 control)
    "\x85next-line",
    "line\u2028",                  # LINE SEPARATOR is white space
    "....",
    ". .",
    "a\x1fb",
    "\u3000",
]


def edge_accepts(name: str) -> bool:
    """What the HTTP edge does with the name: msgspec applies the length bounds and the pattern."""
    try:
        msgspec.convert(name, ModelName)
    except msgspec.ValidationError:
        return False
    return True


def domain_accepts(name: str) -> bool:
    try:
        validate_model_name(name)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", TRICKY_NAMES, ids=lambda n: repr(n)[:40])
def test_the_edge_and_the_domain_agree_on_every_model_name(name: str) -> None:
    assert edge_accepts(name) == domain_accepts(name)


@pytest.mark.parametrize("name", [n for n in TRICKY_NAMES if 1 <= len(n) <= 256],
                         ids=lambda n: repr(n)[:40])
def test_the_pattern_alone_agrees_with_the_domain_within_the_length_bounds(name: str) -> None:
    # msgspec (and schemathesis) apply the pattern with re.search.
    assert (re.search(MODEL_NAME_PATTERN, name) is not None) == domain_accepts(name)


def test_the_edge_refuses_257_characters_and_accepts_256() -> None:
    assert edge_accepts("a" * 256) and not edge_accepts("a" * 257)


# -- aliases ------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["champion", "a", "A_b-9", "v1a", "version2", "latest2",
                                   "x" * 255])
def test_a_good_alias_is_accepted(alias: str) -> None:
    assert validate_alias(alias) == alias


@pytest.mark.parametrize("alias", ["", "x" * 256, "with space", "dot.ted", "slash/ed", "colon:ed",
                                   "é", "trailing\n"])
def test_an_alias_outside_letters_digits_underscore_dash_is_refused(alias: str) -> None:
    with pytest.raises(ValidationError):
        validate_alias(alias)


@pytest.mark.parametrize("alias", ["latest", "Latest", "LATEST", "v1", "v42", "V7"])
def test_aliases_mlflow_reserves_are_refused(alias: str) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        validate_alias(alias)


# -- tags ---------------------------------------------------------------------------------------

def test_tags_within_bounds_are_accepted() -> None:
    tags = {"k": "", "team": "fraud", "x" * 250: "v" * 5000, "ünï": "ç"}
    assert validate_tags(tags) == tags


@pytest.mark.parametrize("tags", [{"": "v"}, {"x" * 251: "v"}, {"k": "v" * 5001},
                                  {"ok": "v", "": "empty key after a good one"}],
                         ids=["empty key", "key 251", "value 5001", "second key bad"])
def test_tags_out_of_bounds_are_refused(tags: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        validate_tags(tags)


# -- metrics ------------------------------------------------------------------------------------

def test_finite_metrics_are_accepted() -> None:
    metrics = {"auc": 0.91, "loss": -1.5, "count": 3, "zero": 0.0, "tiny": 5e-324,
               "huge": 1.7976931348623157e308, "m" * 250: 1.0}
    assert validate_metrics(metrics) == metrics


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("nan")],
                         ids=["nan", "inf", "-inf", "float-nan"])
def test_metrics_must_be_finite(value: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        validate_metrics({"auc": 0.9, "bad": value})


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_metrics(value: bool) -> None:
    with pytest.raises(ValidationError):
        validate_metrics({"passed": value})


@pytest.mark.parametrize("name", ["", "m" * 251])
def test_metric_names_are_1_to_250_characters(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_metrics({name: 1.0})
