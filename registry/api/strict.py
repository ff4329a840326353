"""Requests read strictly, for every operation of the API, in one place.

Litestar 2 decodes a JSON body untyped and then converts it with msgspec ``strict=False``: a
string becomes a number (``"0.99"`` → 0.99), a duplicate key silently wins, and a body nested a
thousand deep or holding invalid UTF-8 escapes as a 500. Its query parsing keeps the last of a
repeated parameter and ignores undeclared ones, so a mistyped filter lists everything.

Here, instead:

- ``StrictRequest.json`` decodes the body straight into the operation's declared ``data`` type
  with ``strict=True`` (the handler then receives that Struct unchanged), and parses it once
  more with the standard library only to find duplicate keys. Any failure is a
  ``ValidationException`` (400 ``validation_error``) naming the field.
- ``reject_loose_query`` (the router's ``before_request``) refuses a query parameter the
  operation does not declare, or one given twice unless it is declared as a list.

``install`` computes each operation's rules once, from the same parameter model Litestar
builds, so the per-request cost is a dictionary lookup plus the two small parses.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import unquote_plus

import msgspec
from litestar import Litestar, Request
from litestar.enums import ParamType
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from registry.api.wording import humanize

RULES = "registry.strict"  # the key of an operation's rules in its handler's ``opt``


@dataclass(frozen=True, slots=True)
class OperationRules:
    query: frozenset[str]  # declared query parameters
    repeatable: frozenset[str]  # ... of which these are lists
    any_query: bool  # the handler takes the whole query mapping
    body: msgspec.json.Decoder[Any] | None  # the strict decoder of its ``data`` type


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


_PAIRS = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def invalid(message: str, key: str | None = None, source: str = "body") -> ValidationException:
    error = {"message": message, "source": source, **({"key": key} if key is not None else {})}
    return ValidationException(detail=message, extra=[error])


class StrictRequest(Request[Any, Any, Any]):
    """A request whose JSON body is decoded strictly into the operation's declared type."""

    __slots__ = ()

    async def json(self) -> Any:
        body = await self.body() or b"null"
        rules: OperationRules | None = self.route_handler.opt.get(RULES)
        decoder = rules.body if rules is not None and rules.body is not None else _ANY
        try:
            try:
                value = decoder.decode(body)
            except msgspec.ValidationError as exc:
                value = _with_whole_numbers(exc, decoder, body)  # its parse finds duplicate keys
            else:
                _PAIRS.decode(body.decode("utf-8"))
        except msgspec.ValidationError as exc:
            raise _type_error(str(exc), decoder, body) from None
        except msgspec.DecodeError as exc:
            raise invalid(f"the body is not valid JSON: {exc}") from None
        except UnicodeDecodeError:
            raise invalid("the body is not valid UTF-8") from None
        except RecursionError:
            raise invalid("the body is nested too deeply") from None
        except _DuplicateKey as exc:
            raise invalid(f"duplicate key '{exc.key}'") from None
        except ValueError as exc:  # what the standard library alone refuses
            raise invalid(f"the body is not valid JSON: {exc}") from None
        return value


def _with_whole_numbers(exc: msgspec.ValidationError, decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """JSON Schema's ``integer`` (the OpenAPI document's word) includes 1.0, which msgspec's strict
    mode refuses: on that refusal only, decode again with every whole float read as an integer."""
    if not str(exc).split(" - at ", 1)[0].endswith("got `float`"):
        raise exc
    document = _whole(_PAIRS.decode(body.decode("utf-8")))
    return msgspec.convert(document, decoder.type, strict=True, dec_hook=decoder.dec_hook)


def _whole(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise invalid("a number is out of range")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole(item) for item in value]
    return value


_ANY: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


async def reject_loose_query(request: Request[Any, Any, Any]) -> None:
    """Refuse an undeclared query parameter, or a repeated one not declared as a list."""
    query = request.scope.get("query_string")
    rules: OperationRules | None = request.route_handler.opt.get(RULES)
    if not query or rules is None or rules.any_query:
        return
    seen: set[str] = set()
    for part in query.split(b"&"):  # names as parse_qsl reads them, blank values included
        if not part:
            continue
        name = part.partition(b"=")[0].decode("latin-1")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name not in rules.query:
            raise invalid(f"unknown query parameter '{name}'", name, "query")
        if name in seen and name not in rules.repeatable:
            raise invalid(f"query parameter '{name}' given more than once", name, "query")
        seen.add(name)


def install(app: Litestar) -> None:
    """Give every operation of ``app`` its rules (after the routes are built)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler, model in route.route_handler_map.values():
            query = [p for p in model.expected_query_params if p.param_type == ParamType.QUERY]
            # A copy of ``opt``: handler copies share the decorator's dict.
            handler.opt = {**handler.opt, RULES: OperationRules(
                query=frozenset(p.field_alias for p in query),
                repeatable=frozenset(model.sequence_query_parameter_names),
                any_query="query" in model.expected_reserved_kwargs,
                body=_body_decoder(handler))}


def _body_decoder(handler: HTTPRouteHandler) -> msgspec.json.Decoder[Any] | None:
    field = handler.parsed_data_field
    if field is None:
        return None
    return msgspec.json.Decoder(field.annotation, strict=True, dec_hook=handler.default_deserializer)


# -- naming the field of a type error ---------------------------------------------------------------

_AT = re.compile(r"^(?P<message>.*?) - at `(?P<path>[^`]*)`(?: in `(?P<within>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")


def _type_error(text: str, decoder: msgspec.json.Decoder[Any], body: bytes) -> ValidationException:
    """'metrics.auc: expected a number, got a string', from msgspec's
    'Expected `float`, got `str` - at `$.metrics[...]`'."""
    found = _AT.match(text)
    if found is None:
        return invalid(humanize(text))
    message, path = humanize(found.group("message")), found.group("path")
    if found.group("within") is not None:  # a map's key: "- at `key` in `$.tags`"
        message, path = f"a key is invalid: {message}", found.group("within")
    return invalid(message, _concrete(path, decoder.type, body) or None)


def _concrete(path: str, annotation: Any, body: bytes) -> str:
    """msgspec's path ('$.metrics[...].min') with each map key filled in ('metrics.auc.min')."""
    steps = [(m.group(1), m.group(2)) for m in _STEP.finditer(path.removeprefix("$"))]
    document: Any = None
    if any(name is None and index is None for name, index in steps):
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
    out: list[str] = []
    for name, index in steps:
        if name is not None:
            out.append(("." if out else "") + name)
            annotation = _field_type(annotation, name)
            document = document.get(name) if isinstance(document, dict) else None
        elif index is not None:
            out.append(f"[{index}]")
            annotation = _item_type(annotation, list)
            document = document[int(index)] if isinstance(document, list) and int(index) < len(document) else None
        else:
            annotation = _item_type(annotation, dict)
            key = _failing_key(document, annotation)
            out.append(("." if out else "") + (key if key is not None else "*"))
            document = document.get(key) if isinstance(document, dict) and key is not None else None
    return "".join(out)


def _options(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _options(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        return [option for arg in get_args(annotation) for option in _options(arg)]
    return [annotation]


def _field_type(annotation: Any, name: str) -> Any:
    for option in _options(annotation):
        if isinstance(option, type) and issubclass(option, msgspec.Struct):
            for field in msgspec.structs.fields(option):
                if field.encode_name == name:
                    return field.type
    return Any


def _item_type(annotation: Any, container: type) -> Any:
    for option in _options(annotation):
        if get_origin(option) is container:
            return get_args(option)[-1]
    return Any


def _failing_key(document: Any, value_type: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    for key, value in document.items():
        try:
            msgspec.convert(value, value_type, strict=True)
        except (msgspec.ValidationError, RecursionError):
            return str(key)
    return None
