"""The committed OpenAPI document is the one the app generates, and it declares the contracts."""

from __future__ import annotations

import json
from pathlib import Path

from registry.__main__ import render_openapi

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_document_is_current() -> None:
    assert COMMITTED.read_text() == render_openapi(), (
        "openapi/openapi.json is stale: run `python -m registry openapi` and commit it"
    )


def test_every_api_operation_declares_its_problem_responses() -> None:
    doc = json.loads(COMMITTED.read_text())
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if not path.startswith("/api/v1/"):
                continue
            for status in ("400", "401", "503"):
                media = op["responses"][status]["content"]
                assert list(media) == ["application/problem+json"], (method, path, status)
    transition = doc["paths"]["/api/v1/models/{name}/versions/{version}/transitions"]["post"]
    assert {"404", "409", "412", "422"} <= set(transition["responses"])


def test_version_path_parameters_are_bounded() -> None:
    doc = json.loads(COMMITTED.read_text())
    seen = 0
    for _path, ops in doc["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] == "version":
                    assert param["schema"]["minimum"] == 1
                    assert param["schema"]["maximum"] == 2**31 - 1
                    seen += 1
    assert seen >= 4


def test_request_bodies_refuse_unknown_fields() -> None:
    schemas = json.loads(COMMITTED.read_text())["components"]["schemas"]
    for name in ("CreateModelRequest", "RegisterVersionRequest", "TransitionRequest",
                 "UpdateVersionRequest", "SetAliasRequest"):
        assert schemas[name]["additionalProperties"] is False, name
