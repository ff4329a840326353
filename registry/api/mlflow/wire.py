"""MLflow's wire format: reading a call's parameters (GET: the query string; other methods: a JSON
body, and for DELETE the query string too, as the Databricks SDK sends it) and writing registered
models and versions as MLflow's protobuf JSON does: ``version`` a string, timestamps in epoch
milliseconds, stages as ``None``/``Staging``/``Production``/``Archived``, unset fields left out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request

from registry.api.mlflow.errors import STAGE_NAMES
from registry.domain.errors import ValidationError
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.stages import Stage

MAX_DEPTH = 32  # a body nested deeper is no MLflow request
_DIGITS = re.compile(r"[0-9]{1,10}")  # a version number: 1 to 2**31 - 1
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def missing(name: str) -> ValidationError:
    return ValidationError(f"Missing value for required parameter '{name}'. See the API docs for "
                           "more information about request parameters.")


class Params:
    """The parameters of one call, read and checked one by one (each wrong type is a 400 that
    names the parameter, as MLflow's own validation does)."""

    def __init__(self, values: dict[str, Any], repeated: dict[str, list[str]]) -> None:
        self._values, self._repeated = values, repeated

    @classmethod
    async def of(cls, request: Request[Any, Any, Any]) -> Params:
        values: dict[str, Any] = {}
        repeated: dict[str, list[str]] = {}
        if request.method in ("GET", "DELETE"):
            for key, items in request.query_params.dict().items():
                values[key], repeated[key] = items[-1], list(items)
        if request.method != "GET":
            raw = await request.body()
            if raw.strip():
                try:
                    body = msgspec.json.decode(raw)
                except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
                    raise ValidationError("the request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise ValidationError("the request body must be a JSON object")
                _check_depth(body)
                values.update(body)
                repeated.update({k: v for k, v in body.items() if isinstance(v, list)})
        return cls(values, repeated)

    def string(self, name: str, *, required: bool = False) -> str | None:
        value = self._values.get(name)
        if value is None:
            if required:
                raise missing(name)
            return None
        if not isinstance(value, str):
            raise ValidationError(f"Invalid value {value!r} for parameter '{name}' supplied: "
                                  "expected a string")
        if "\x00" in value:
            raise ValidationError(f"parameter '{name}' must not contain NUL characters")
        if required and value == "":
            raise missing(name)
        return value

    def required(self, name: str) -> str:
        value = self.string(name, required=True)
        assert value is not None
        return value

    def version(self, name: str = "version") -> int:
        """A version number: MLflow sends it as a string ("3"); a JSON number is taken too."""
        value = self._values.get(name)
        if value is None or value == "":
            raise missing(name)
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _DIGITS.fullmatch(text) or not 1 <= int(text) < 2**31:
            raise ValidationError(f"Parameter '{name}' must be an integer, got '{value}'.")
        return int(text)

    def boolean(self, name: str) -> bool:
        value = self._values.get(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValidationError(f"Invalid value {value!r} for parameter '{name}' supplied: expected true or false")

    def integer(self, name: str, default: int) -> int:
        value = self._values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(f"Invalid value {value!r} for parameter '{name}' supplied: expected an integer")
        return value

    def strings(self, name: str) -> list[str]:
        values = self._repeated.get(name, [] if self._values.get(name) is None else [self._values[name]])
        if not all(isinstance(v, str) for v in values):
            raise ValidationError(f"Invalid value for parameter '{name}' supplied: expected a list of strings")
        return list(values)

    def tags(self, name: str = "tags") -> dict[str, str]:
        """``[{"key": k, "value": v}, ...]`` as a dict (a later key wins, as in MLflow)."""
        value = self._values.get(name)
        if value is None:
            return {}
        if not isinstance(value, list):
            raise ValidationError(f"Invalid value for parameter '{name}' supplied: expected a list of tags")
        tags: dict[str, str] = {}
        for tag in value:
            if not isinstance(tag, dict) or not isinstance(tag.get("key"), str) \
                    or not isinstance(tag.get("value", ""), str):
                raise ValidationError(f"Invalid value for parameter '{name}' supplied: each tag is "
                                      '{"key": string, "value": string}')
            tags[tag["key"]] = tag.get("value", "")
        _no_nul(tags, name)
        return tags


def _no_nul(tags: dict[str, str], name: str) -> None:
    if any("\x00" in k or "\x00" in v for k, v in tags.items()):
        raise ValidationError(f"parameter '{name}' must not contain NUL characters")


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ValidationError("the request body is nested too deeply")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def parse_stage(value: str) -> Stage:
    """An MLflow stage name, in any case."""
    for stage, name in STAGE_NAMES.items():
        if value.lower() == name.lower():
            return stage
    raise ValidationError(f"Invalid Model Version stage: {value}. Value must be one of "
                          f"{', '.join(STAGE_NAMES.values())}.")


def millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def model_version(v: ModelVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": v.model, "version": str(v.version), "creation_timestamp": millis(v.created_at),
        "last_updated_timestamp": millis(v.updated_at), "user_id": v.created_by,
        "current_stage": STAGE_NAMES[v.stage], "description": v.description, "source": v.source,
    }
    if v.run_id:
        out["run_id"] = v.run_id
    out["status"] = "READY"  # registration is synchronous here: a client polling for READY never waits
    if v.tags:
        out["tags"] = tag_list(v.tags)
    if v.aliases:
        out["aliases"] = list(v.aliases)
    return out


def registered_model(m: RegisteredModel, latest: list[ModelVersion] | None = None,
                     aliases: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.name, "creation_timestamp": millis(m.created_at),
                           "last_updated_timestamp": millis(m.updated_at), "user_id": m.created_by}
    if m.description:
        out["description"] = m.description
    if latest:
        out["latest_versions"] = [model_version(v) for v in latest]
    if m.tags:
        out["tags"] = tag_list(m.tags)
    if aliases:
        out["aliases"] = [{"alias": a, "version": str(n)} for a, n in aliases]
    return out
