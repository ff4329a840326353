"""MLflow's search grammar for registered models and model versions, parsed into a
:class:`~registry.services.search.Search`: conditions joined by ``AND``; ``name`` with ``=``,
``!=``, ``LIKE``, ``ILIKE``, ``IN``, ``NOT IN``; ``tags.key`` (or ``tags.`key```) with ``=``,
``!=``, ``LIKE``, ``ILIKE``; for versions also ``run_id`` (``=``, ``!=``, ``IN``, ``NOT IN``),
``source_path`` (``=``, ``!=``, ``LIKE``, ``ILIKE``) and ``version_number`` (``=``, ``!=``, ``<``, ``<=``, ``>``,
``>=``). Strings in single or double quotes; ``order_by`` as ``column [ASC|DESC]``;
``page_token`` an opaque offset."""

from __future__ import annotations

import base64
import json
import re

from registry.domain.errors import ValidationError
from registry.services.search import Condition, Search

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<ident>(?:`[^`]*`|[A-Za-z_][A-Za-z0-9_]*)(?:\.(?:`[^`]*`|"[^"]*"|[A-Za-z_][A-Za-z0-9_.]*))*)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op>!=|<=|>=|=|<|>)
    | (?P<punct>[(),])
    )""", re.VERBOSE)

_MODEL_ATTRIBUTES = {"name": "name"}
_VERSION_ATTRIBUTES = {"name": "name", "run_id": "run_id", "source_path": "source",
                       "version_number": "version"}
_STRING_OPS = {"=", "!=", "like", "ilike"}
_ALLOWED_OPS = {"name": _STRING_OPS | {"in", "not in"}, "tag": _STRING_OPS, "source": _STRING_OPS,
                "run_id": {"=", "!=", "in", "not in"}, "version": {"=", "!=", "<", "<=", ">", ">="}}
PROMPT_TAG = "mlflow.prompt.is_prompt"  # no model here is a prompt: a missing tag means "not one"
_MODEL_ORDER = {"name": "name", "timestamp": "updated_at", "last_updated_timestamp": "updated_at",
                "creation_timestamp": "created_at"}
_VERSION_ORDER = {"name": "name", "version_number": "version", "timestamp": "updated_at",
                  "last_updated_timestamp": "updated_at", "creation_timestamp": "created_at"}


def _bad(filter_string: str, why: str) -> ValidationError:
    return ValidationError(f"Invalid filter '{filter_string}': {why}")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _bad(text, f"unexpected text at {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _identifier(text: str, ident: str, attributes: dict[str, str]) -> tuple[str, str | None]:
    """(field, tag key) of an identifier: ``name``, ``attributes.name``, ``tags.key``,
    ``tags.`key with spaces```."""
    head, _, rest = ident.partition(".")
    parts = [head] if not rest else [head, rest]
    parts = [p[1:-1] if len(p) > 1 and p[0] == p[-1] and p[0] in "`\"" else p for p in parts]
    if len(parts) == 2 and parts[0].lower() in ("tags", "tag"):
        return "tag", parts[1]
    if len(parts) == 2 and parts[0].lower() in ("attributes", "attribute", "attr"):
        parts = parts[1:]
    if len(parts) == 1 and parts[0] in attributes:
        return attributes[parts[0]], None
    raise _bad(text, f"invalid attribute key '{ident}'; filter on "
                     f"{', '.join(attributes)} or tags.<key>")


def parse_filter(text: str | None, *, versions: bool) -> tuple[Condition, ...]:
    if not text or not text.strip():
        return ()
    attributes = _VERSION_ATTRIBUTES if versions else _MODEL_ATTRIBUTES
    tokens = _tokens(text)
    conditions: list[Condition] = []
    i = 0
    while True:
        if i >= len(tokens) or tokens[i][0] != "ident":
            raise _bad(text, "expected a key such as name or tags.<key>")
        ident = tokens[i][1]
        field, key = _identifier(text, ident, attributes)
        op, i = _operator(text, tokens, i + 1)
        if op not in _ALLOWED_OPS[field]:
            raise _bad(text, f"'{op.upper()}' is not supported for {ident if key is None else 'tags'}")
        value, i = _value(text, tokens, i, listed=op in ("in", "not in"), number=field == "version")
        conditions.append(Condition(field, op, value, key,
                                    missing_matches=field == "tag" and key == PROMPT_TAG and op == "!="))
        if i == len(tokens):
            return tuple(conditions)
        if tokens[i] != ("ident", tokens[i][1]) or tokens[i][1].lower() != "and":
            raise _bad(text, "conditions are joined with AND only")
        i += 1


def _operator(text: str, tokens: list[tuple[str, str]], i: int) -> tuple[str, int]:
    if i < len(tokens) and tokens[i][0] == "op":
        return tokens[i][1], i + 1
    if i < len(tokens) and tokens[i][0] == "ident":
        word = tokens[i][1].lower()
        if word in ("like", "ilike", "in"):
            return word, i + 1
        if word == "not" and i + 1 < len(tokens) and tokens[i + 1][1].lower() == "in":
            return "not in", i + 2
    raise _bad(text, "expected one of =, !=, LIKE, ILIKE, IN, NOT IN")


def _value(text: str, tokens: list[tuple[str, str]], i: int, *, listed: bool,
           number: bool) -> tuple[str | tuple[str, ...], int]:
    if not listed:
        if i < len(tokens) and (tokens[i][0] == "string" or (number and tokens[i][0] == "number")):
            kind, raw = tokens[i]
            value = _unquote(raw) if kind == "string" else raw
            if number and not _version_number(value):
                raise _bad(text, f"{value!r} is not a version number")
            return value, i + 1
        raise _bad(text, "expected a quoted string value")
    if i >= len(tokens) or tokens[i] != ("punct", "("):
        raise _bad(text, "IN takes a parenthesised list of quoted values")
    values, i = [], i + 1
    while True:
        if i < len(tokens) and (tokens[i][0] == "string" or (number and tokens[i][0] == "number")):
            values.append(_unquote(tokens[i][1]) if tokens[i][0] == "string" else tokens[i][1])
            i += 1
        else:
            raise _bad(text, "IN takes a parenthesised list of quoted values")
        if i < len(tokens) and tokens[i] == ("punct", ","):
            i += 1
            continue
        if i < len(tokens) and tokens[i] == ("punct", ")"):
            if number and not all(_version_number(v) for v in values):
                raise _bad(text, "version numbers are whole numbers")
            return tuple(values), i + 1
        raise _bad(text, "IN takes a parenthesised list of quoted values")


def _version_number(value: str) -> bool:
    return re.fullmatch(r"[0-9]{1,10}", value) is not None and 1 <= int(value) < 2**31


def parse_order_by(clauses: list[str], *, versions: bool) -> tuple[tuple[str, bool], ...]:
    columns = _VERSION_ORDER if versions else _MODEL_ORDER
    order = []
    for clause in clauses:
        parts = clause.split()
        if not 1 <= len(parts) <= 2 or (len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC")):
            raise ValidationError(f"Invalid order_by clause '{clause}'")
        column = parts[0].removeprefix("attributes.").strip("`")
        if column not in columns:
            raise ValidationError(f"Invalid order by key '{parts[0]}' specified. Valid keys are "
                                  f"{sorted(columns)}")
        order.append((columns[column], len(parts) == 1 or parts[1].upper() == "ASC"))
    return tuple(order)


def encode_page_token(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.b64decode(token, validate=True))["offset"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ValidationError("Invalid page token, could not base64-decode") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValidationError("Invalid page token: its offset must be a non-negative integer")
    return offset


def search(filter_text: str | None, order_by: list[str], max_results: int, page_token: str | None,
           *, versions: bool, max_allowed: int) -> Search:
    if not 1 <= max_results <= max_allowed:
        raise ValidationError(f"Invalid value for max_results. It must be between 1 and {max_allowed}, "
                              f"but got value {max_results}")
    return Search(parse_filter(filter_text, versions=versions), parse_order_by(order_by, versions=versions),
                  decode_page_token(page_token), max_results)
