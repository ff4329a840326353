"""Checks an OpenLineage event against the 2-0-2 JSON Schemas copied into tests/data, offline.

``validate_run_event(event)`` validates the event as ``$defs/RunEvent`` of OpenLineage.json, then
every facet it carries against the schema its ``_schemaURL`` names: the standard facets' files in
``tests/data/openlineage-spec/facets/`` and our ``modelRegistry`` facet's shipped schema. A facet
whose schema is not known here is a violation too (nothing would have checked it). Formats are
checked: ``uuid`` by jsonschema, and ``date-time`` and ``uri`` by the strict checkers below, since
jsonschema skips them silently unless optional packages are installed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from registry.adapters.lineage import facet_schema

SPEC_DIR = Path(__file__).resolve().parent / "data" / "openlineage-spec"
OPENLINEAGE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
RUN_EVENT_URL = f"{OPENLINEAGE_ID}#/$defs/RunEvent"

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]+")


class SpecViolation(AssertionError):
    """The event breaks the OpenLineage schema or one of its facets' schemas."""


def _formats() -> FormatChecker:
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.fullmatch(value):
            return False
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # month 13, day 32, ...
        return True

    @checker.checks("uri")
    def uri(value: object) -> bool:
        return not isinstance(value, str) or bool(_URI.fullmatch(value))

    return checker


FORMATS = _formats()


@functools.cache
def schemas() -> dict[str, dict[str, Any]]:
    """Every schema document known offline, by its ``$id``."""
    docs = [json.loads(p.read_text()) for p in [SPEC_DIR / "OpenLineage.json",
                                                 *sorted((SPEC_DIR / "facets").glob("*.json"))]]
    docs.append(facet_schema())
    return {doc["$id"]: doc for doc in docs}


@functools.cache
def registry() -> Registry:
    return Registry().with_resources(
        (uri, Resource.from_contents(doc)) for uri, doc in schemas().items())


def validator(ref: str) -> Draft202012Validator:
    """A validator for the schema at ``ref`` (an absolute URI, optionally with a fragment)."""
    return Draft202012Validator({"$ref": ref}, registry=registry(), format_checker=FORMATS)


def _errors(instance: Any, ref: str, where: str) -> Iterator[str]:
    for error in validator(ref).iter_errors(instance):
        path = "".join(f"[{p!r}]" for p in error.absolute_path)
        yield f"{where}{path}: {error.message}"


def _facets(event: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(where, key, facet) for every facet of the run, the job and each dataset."""
    run, job = event.get("run") or {}, event.get("job") or {}
    yield from (("run.facets", k, f) for k, f in (run.get("facets") or {}).items())
    yield from (("job.facets", k, f) for k, f in (job.get("facets") or {}).items())
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for i, dataset in enumerate(event.get(side) or []):
            for group in ("facets", extra):
                for k, f in (dataset.get(group) or {}).items():
                    yield f"{side}[{i}].{group}", k, f


def _facet_errors(where: str, key: str, facet: Any) -> Iterator[str]:
    label = f"{where}[{key!r}]"
    url = facet.get("_schemaURL") if isinstance(facet, dict) else None
    if not isinstance(url, str):
        yield f"{label}: no _schemaURL"
        return
    document_id = url.split("#", 1)[0]
    document = schemas().get(document_id)
    if document is None:
        yield f"{label}: _schemaURL {url} names no schema known offline"
        return
    # The facet document's root maps the facet's key to its definition: a facet filed under
    # another key would otherwise pass.
    fragment = url[len(document_id):]
    named = document.get("properties", {}).get(key, {}).get("$ref")
    if named != fragment:
        yield f"{label}: {document_id} does not define {key!r} as {fragment or 'its root'}"
        return
    yield from _errors(facet, url, label)


def violations(event: dict[str, Any]) -> list[str]:
    """Every violation found, each with where it is in the event."""
    found = list(_errors(event, RUN_EVENT_URL, "event"))
    if event.get("schemaURL") != RUN_EVENT_URL:
        found.append(f"event['schemaURL']: {event.get('schemaURL')!r} is not {RUN_EVENT_URL}")
    for where, key, facet in _facets(event):
        found.extend(_facet_errors(where, key, facet))
    return found


def validate_run_event(event: dict[str, Any]) -> None:
    """Raise SpecViolation unless the event is a valid OpenLineage 2-0-2 RunEvent whose facets
    all validate against their own schemas."""
    found = violations(event)
    if found:
        raise SpecViolation("OpenLineage RunEvent is invalid:\n  " + "\n  ".join(found))
