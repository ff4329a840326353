"""Validation messages a person reads: msgspec's wording, with each regular expression said as
the rule it encodes and each type as the JSON a client sends.

msgspec reports a failed pattern as "Expected `str` matching regex '<the regex>'", and a type as
"Expected `float`, got `str`". The table below maps every pattern the API declares to its words;
an unlisted enumeration (``^(a|b)$``) is read out, anything else is named without its regex.
"""

from __future__ import annotations

import ast
import re
from typing import Any, get_args

from msgspec import Meta

from registry.api import artifact_schemas, comment_schemas, gate_schemas, schemas


def _pattern(annotated: Any) -> str:
    """The pattern of an annotated string type declared in another module."""
    meta = next(m for m in get_args(annotated)[1:] if isinstance(m, Meta))
    assert meta.pattern is not None
    return meta.pattern


PATTERN_WORDS: dict[str, str] = {
    schemas.MODEL_NAME_PATTERN: "a model name: 1-256 characters, not '.' or '..', without '/', ':' "
                                "or control characters, and no white space at either end",
    schemas.MODEL_PATTERN: "a model name or a glob of one ('*' and '?' as wildcards), without '/', "
                           "':', '[', ']' or control characters",
    schemas.ALIAS_PATTERN: "an alias: 1-255 letters, digits, '_' or '-', not 'latest' or 'v' "
                           "followed by digits (in any case)",
    schemas.RFC3339: "an RFC 3339 timestamp with its offset, e.g. 2024-05-01T12:00:00Z",
    schemas.NO_NUL: "text without NUL characters",
    schemas.TAG_FILTER: "key:value, the key not empty",
    _pattern(schemas.WebhookUrl): "an http:// or https:// URL without spaces or control characters",
    _pattern(schemas.EventTypePattern): "an event type or a glob of one (lower-case letters, '_', "
                                        "'.', '*' and '?'), e.g. model_version.*",
    _pattern(gate_schemas.CheckName): "a check name: printable characters, no white space at either end",
    _pattern(comment_schemas.CommentBody): "text that is not only white space, without NUL characters",
    _pattern(gate_schemas.DetailsUrl): "an http:// or https:// URL without spaces or control characters",
    _pattern(artifact_schemas.ArtifactPathField): "a relative artifact path, without backslashes or "
                                                  "control characters",
    _pattern(artifact_schemas.Sha256): "a sha256 digest: 64 hexadecimal digits",
}

_ENUM = re.compile(r"\^\(([\w|]+)\)\$")
_REGEX = re.compile(r"^Expected `str` matching regex ('.*')$", re.DOTALL)
_TYPE = re.compile(r"^Expected `([^`]+)`, got `([^`]+)`$")
_NAMED = re.compile(r" `([^`]+)`")
_FIELD = re.compile(r"^Object (contains unknown|missing required) field `(.*)`$", re.DOTALL)
_TYPES = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false",
          "null": "null", "object": "an object", "array": "an array", "decimal": "a number"}
_SENT = {"float": "a decimal number"}  # what was sent: 1.0 is not a whole number to msgspec


def pattern_words(pattern: str) -> str:
    """The rule a declared pattern encodes, in words."""
    if (words := PATTERN_WORDS.get(pattern)) is not None:
        return words
    if enum := _ENUM.fullmatch(pattern):
        return "one of " + ", ".join(enum.group(1).split("|"))
    return "a string of the documented form"


def _type_words(names: str, *, sent: bool = False) -> str:
    words = (_SENT if sent else _TYPES)
    return " or ".join(words.get(name, _TYPES.get(name, name)) for name in names.split(" | "))


def humanize(message: str, *, in_body: bool = True) -> str:
    """msgspec's (or Litestar's) message for one failed value, without regexes. Outside a body
    (query, path, header) every value is a string that is never null: neither is said."""
    if found := _REGEX.match(message):
        try:
            pattern = ast.literal_eval(found.group(1))
        except (ValueError, SyntaxError):
            return "expected a string of the documented form"
        return "expected " + pattern_words(pattern)
    if found := _FIELD.match(message):
        return f"{'unknown' if found.group(1) == 'contains unknown' else 'missing required'} " \
               f"field '{found.group(2)}'"
    if found := _TYPE.match(message):
        expected = found.group(1) if in_body else found.group(1).replace(" | null", "")
        got = f", got {_type_words(found.group(2), sent=True)}" if in_body else ""
        return f"expected {_type_words(expected)}{got}"
    if message.startswith("Expected `"):  # e.g. "Expected `str` of length <= 256"
        return "expected" + _NAMED.sub(lambda m: " " + _type_words(m.group(1)), message[len("Expected"):])
    return message
