"""Opaque list cursors, the page split and the shared limit rule."""

from __future__ import annotations

import base64
import json

import pytest

from registry.domain.errors import ValidationError
from registry.services.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    check_limit,
    decode_cursor,
    encode_cursor,
    page,
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(("key", "kind"), [
    ("fraud", str), ("a", str), ("", str), ("modèle/日本 🙂", str), ("ends with =", str),
    (1, int), (0, int), (2**31 - 1, int), (123456789012, int),
])
def test_a_cursor_decodes_to_the_key_it_encodes(key: object, kind: type) -> None:
    cursor = encode_cursor(key)
    assert decode_cursor(cursor, kind) == key
    assert type(decode_cursor(cursor, kind)) is kind


def test_a_cursor_is_opaque_and_url_safe() -> None:
    cursor = encode_cursor("a/b+c?d=e&f")
    assert "fraud" not in encode_cursor("fraud")
    assert all(c.isalnum() or c in "-_" for c in cursor)


@pytest.mark.parametrize("cursor", [None, ""])
def test_no_cursor_means_the_first_page(cursor: str | None) -> None:
    assert decode_cursor(cursor, str) is None
    assert decode_cursor(cursor, int) is None


@pytest.mark.parametrize("cursor", [
    "not a cursor!",
    "%%%",
    "é",
    "abc",                                   # base64 of garbage bytes
    b64(b"\xff\xfe\x00"),                    # not UTF-8
    b64(b"not json"),
    b64(b"[]"),
    b64(b'["a", "b"]'),
    b64(b"[null]"),
    b64(b"[1.5]"),
    b64(b"[true]"),
    b64(b"[[1]]"),
    b64(b"42"),
], ids=repr)
def test_a_garbage_cursor_is_a_validation_error(cursor: str) -> None:
    for kind in (str, int):
        with pytest.raises(ValidationError):
            decode_cursor(cursor, kind)


def test_a_cursor_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(ValidationError):
        decode_cursor(encode_cursor("fraud"), int)
    with pytest.raises(ValidationError):
        decode_cursor(encode_cursor(7), str)


def test_a_boolean_is_not_an_integer_cursor() -> None:
    with pytest.raises(ValidationError):
        decode_cursor(b64(b"[true]"), int)


@pytest.mark.parametrize("raw", [b'"a"', b'{"fraud": 1}'], ids=["one-char string", "one-key object"])
def test_a_foreign_cursor_that_is_not_our_one_element_list_is_refused(raw: bytes) -> None:
    # Unpacking ``(key,) = value`` also succeeds on a 1-character string or a 1-key object.
    with pytest.raises(ValidationError):
        decode_cursor(b64(raw), str)


@pytest.mark.parametrize("key", [2**63, -(2**63) - 1, 10**30])
def test_an_integer_cursor_outside_the_database_range_is_refused(key: int) -> None:
    # Such a key reaches SQL as a bind parameter: OverflowError on SQLite, DataError on asyncpg.
    with pytest.raises(ValidationError):
        decode_cursor(b64(json.dumps([key]).encode()), int)


def test_the_page_split_keeps_limit_items_and_points_at_the_last_one() -> None:
    items, cursor = page(["a", "b", "c", "d"], 3, lambda s: s)
    assert items == ["a", "b", "c"]
    assert cursor is not None and decode_cursor(cursor, str) == "c"


def test_the_last_page_has_no_cursor() -> None:
    assert page(["a", "b", "c"], 3, lambda s: s) == (["a", "b", "c"], None)
    assert page([], 3, lambda s: s) == ([], None)


def test_the_limit_defaults_to_50() -> None:
    assert DEFAULT_LIMIT == 50
    assert check_limit(None) == 50


@pytest.mark.parametrize("limit", [1, 2, 999, 1000])
def test_a_limit_from_1_to_1000_is_kept(limit: int) -> None:
    assert MAX_LIMIT == 1000
    assert check_limit(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9])
def test_a_limit_outside_1_to_1000_is_a_validation_error(limit: int) -> None:
    with pytest.raises(ValidationError):
        check_limit(limit)
