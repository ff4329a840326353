"""Strict request reading (registry/api/strict.py) and validation messages in words
(registry/api/wording.py), without a server or a database."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, Router, post
from litestar.params import JSONBody
from litestar.testing import TestClient

from registry.__main__ import render_openapi
from registry.api.errors import EXCEPTION_HANDLERS
from registry.api.strict import StrictRequest, install, reject_loose_query
from registry.api.wording import humanize, pattern_words


def _patterns(node: Any, in_header: bool = False) -> Iterator[str]:
    if isinstance(node, dict):
        header = in_header or node.get("in") == "header"
        if isinstance(node.get("pattern"), str) and not header:
            yield node["pattern"]
        for value in node.values():
            yield from _patterns(value, header)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value, in_header)


def test_every_pattern_the_api_declares_is_said_in_words() -> None:
    """Headers are left out: none is validated by a pattern of msgspec's (the Idempotency-Key
    middleware says its own rule)."""
    patterns = set(_patterns(json.loads(render_openapi())))
    assert len(patterns) >= 10
    unworded = [p for p in patterns if pattern_words(p) == "a string of the documented form"]
    assert not unworded


@pytest.mark.parametrize(("message", "in_body", "words"), [
    ("Expected `float`, got `str`", True, "expected a number, got a string"),
    ("Expected `int | null`, got `float`", True, "expected a whole number or null, got a decimal number"),
    ("Expected `int | null`, got `str`", False, "expected a whole number"),
    ("Expected `str` of length <= 256", True, "expected a string of length <= 256"),
    ("Expected `str` matching regex '^(none|staging)$'", True, "expected one of none, staging"),
    ("Expected `str` matching regex '^[^\\\\x00]*$'", True, "expected text without NUL characters"),
    ("Expected `str` matching regex '^x{2,}(?=y)$'", True, "expected a string of the documented form"),
    ("Object contains unknown field `bogus`", True, "unknown field 'bogus'"),
    ("the body is not valid UTF-8", True, "the body is not valid UTF-8"),
])
def test_msgspec_messages_are_said_in_words(message: str, in_body: bool, words: str) -> None:
    assert humanize(message, in_body=in_body) == words


# -- a tiny app with the same wiring as registry.api.app ------------------------------------------------


@post("/free", status_code=200)
async def free(data: JSONBody[dict[str, Any]]) -> dict[str, int]:
    """A body type that nests freely: only the depth limit stands in the way."""
    return {"keys": len(data)}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    app = Litestar([Router("/", route_handlers=[free], request_class=StrictRequest,
                           before_request=reject_loose_query)],
                   exception_handlers=EXCEPTION_HANDLERS, logging_config=None)
    install(app)
    with TestClient(app) as test_client:
        yield test_client


def test_a_body_nested_past_the_recursion_limit_is_a_400(client: TestClient[Litestar]) -> None:
    r = client.post("/free", content=b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "body: the body is nested too deeply"


def test_a_duplicate_key_deep_inside_a_free_body_is_refused(client: TestClient[Litestar]) -> None:
    r = client.post("/free", content=b'{"a": [{"b": 1, "b": 2}]}')
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "body: duplicate key 'b'"


def test_a_free_body_still_passes(client: TestClient[Litestar]) -> None:
    r = client.post("/free", json={"a": [[[{"b": 1}]]], "c": None})
    assert (r.status_code, r.json()) == (200, {"keys": 2})


def test_a_literal_the_standard_library_alone_takes_is_refused(client: TestClient[Litestar]) -> None:
    r = client.post("/free", content=b'{"a": NaN}')
    assert r.status_code == 400, r.text
    assert re.match(r"body: the body is not valid JSON", r.json()["detail"])
