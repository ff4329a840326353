"""Hostile and sloppy requests to the MLflow surface, sent with httpx (no MLflow client): broken
and oddly shaped JSON, wrong types, NUL characters, absurd paging, broken filters, endpoints and
methods MLflow's registry does not have, bad credentials. Each must be answered with a 4xx and
MLflow's error document ``{"error_code", "message"}`` (never a 5xx, never another format), and
must write nothing: every audit chain's head is the same before and after."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import BACKENDS, unique
from tests.mlflow.helpers import Registry

PREFIXES = ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"]
STATUS = {"INVALID_PARAMETER_VALUE": 400, "BAD_REQUEST": 400, "ENDPOINT_NOT_FOUND": 404,
          "UNAUTHENTICATED": 401, "RESOURCE_DOES_NOT_EXIST": 404}
M = "{model}"  # stands for the test's model (version 1 in Staging) in paths, bodies and queries


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] | None = None  # None: the admin's Bearer token
    code: str = "INVALID_PARAMETER_VALUE"
    status: int | None = None  # when it is not the code's usual one


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def create(body: bytes) -> Case:
    return Case("POST", "/registered-models/create", content=body)


def transition(**fields: Any) -> Case:
    return Case("POST", "/model-versions/transition-stage",
                json={"name": M, "version": "1", "stage": "Production", **fields})


def search_models(**params: Any) -> Case:
    return Case("GET", "/registered-models/search", params=params)


def search_versions(**params: Any) -> Case:
    return Case("GET", "/model-versions/search", params=params)


def nested(depth: int) -> bytes:
    return b'{"name": "deep", "tags": ' + b"[" * depth + b"]" * depth + b"}"


CASES: dict[str, Any] = {
    # -- bodies that are not a JSON object ---------------------------------------------------------
    "truncated JSON": create(b'{"name": "x"'),
    "trailing garbage": create(b'{"name": "x"} {}'),
    "form encoded": create(b"name=x"),
    "NaN": create(b'{"name": NaN}'),
    "invalid UTF-8 in a value": create(b'{"name": "caf\xc3\x28"}'),
    "invalid UTF-8 in a key": create(b'{"\xff": "x", "name": "x"}'),
    "body an array": create(b'[{"name": "x"}]'),
    "body a string": create(b'"x"'),
    "body null": create(b"null"),
    "body a number": create(b"7"),
    "nested 40 deep": create(nested(40)),
    "nested 100,000 deep": create(nested(100_000)),
    "11 MB body": Case("POST", "/registered-models/create",
                       json={"name": "big", "description": "x" * 11_000_000}, code="BAD_REQUEST", status=413),
    # -- wrong types and values --------------------------------------------------------------------
    "name a number": Case("POST", "/registered-models/create", json={"name": 123}),
    "name a list": Case("POST", "/registered-models/create", json={"name": ["a"]}),
    "name an object": Case("POST", "/registered-models/create", json={"name": {"a": 1}}),
    "name null": Case("POST", "/registered-models/create", json={"name": None}),
    "name empty": Case("POST", "/registered-models/create", json={"name": ""}),
    "name 300 characters": Case("POST", "/registered-models/create", json={"name": "n" * 300}),
    "name with a slash": Case("POST", "/registered-models/create", json={"name": "a/b"}),
    "description a number": Case("POST", "/registered-models/create", json={"name": "x", "description": 42}),
    "tags an object": Case("POST", "/registered-models/create", json={"name": "x", "tags": {"k": "v"}}),
    "tags of numbers": Case("POST", "/registered-models/create", json={"name": "x", "tags": [1, 2]}),
    "tag key a number": Case("POST", "/registered-models/create",
                             json={"name": "x", "tags": [{"key": 1, "value": "v"}]}),
    "version not a number": transition(version="abc"),
    "version negative": transition(version="-1"),
    "version zero": transition(version="0"),
    "version 2**31": transition(version=str(2**31)),
    "version a fraction": transition(version=1.5),
    "version true": transition(version=True),
    "version with a space": transition(version=" 1"),
    "archive_existing_versions maybe": transition(archive_existing_versions="maybe"),
    "archive_existing_versions 1": transition(archive_existing_versions=1),
    "archive_existing_versions a list": transition(archive_existing_versions=[True]),
    "stage a number": transition(stage=5),
    "stage unknown": transition(stage="Live"),
    "stage missing": Case("POST", "/model-versions/transition-stage", json={"name": M, "version": "1"}),
    "source missing": Case("POST", "/model-versions/create", json={"name": M}),
    "source a number": Case("POST", "/model-versions/create", json={"name": M, "source": 7}),
    "new_name missing": Case("POST", "/registered-models/rename", json={"name": M}),
    "tag key a number on set-tag": Case("POST", "/registered-models/set-tag", json={"name": M, "key": 5, "value": "v"}),
    "alias version not a number": Case("POST", "/registered-models/alias",
                                       json={"name": M, "alias": "champion", "version": "one"}),
    "alias with spaces": Case("POST", "/registered-models/alias", json={"name": M, "alias": "a b", "version": "1"}),
    "GET version not a number": Case("GET", "/model-versions/get", params={"name": M, "version": "abc"}),
    "GET version of 5000 digits": Case("GET", "/model-versions/get", params={"name": M, "version": "9" * 5000}),
    "DELETE version not a number": Case("DELETE", "/model-versions/delete", json={"name": M, "version": "x"}),
    # -- NUL characters ----------------------------------------------------------------------------
    "NUL in a name": Case("POST", "/registered-models/create", json={"name": "a\x00b"}),
    "NUL in a description": Case("PATCH", "/registered-models/update", json={"name": M, "description": "a\x00"}),
    "NUL in a tag value": Case("POST", "/registered-models/create",
                               json={"name": "x", "tags": [{"key": "k", "value": "v\x00"}]}),
    "NUL in a source": Case("POST", "/model-versions/create", json={"name": M, "source": "s3://b/\x00"}),
    "NUL in a run_id": Case("POST", "/model-versions/create", json={"name": M, "source": "s3://b/x", "run_id": "\x00"}),
    "NUL in an alias": Case("POST", "/registered-models/alias", json={"name": M, "alias": "a\x00", "version": "1"}),
    "NUL in a query name": Case("GET", "/registered-models/get", params={"name": "a\x00b"}),
    "NUL in a filter": search_models(filter="name = 'a\x00'"),
    "NUL in a tag filter": search_versions(filter="tags.k = '\x00'"),
    # -- paging --------------------------------------------------------------------------------------
    "max_results 10**30": search_models(max_results=str(10**30)),
    "max_results negative": search_models(max_results="-1"),
    "max_results zero": search_models(max_results="0"),
    "max_results not a number": search_models(max_results="abc"),
    "max_results a fraction": search_models(max_results="1.5"),
    "max_results 1001 models": search_models(max_results="1001"),
    "max_results 200001 versions": search_versions(max_results="200001"),
    "max_results two minus signs": search_models(max_results="--5"),
    "max_results of 5000 digits": search_models(max_results="9" * 5000),
    "page_token past a million results": search_versions(page_token=b64({"offset": 999_999}), max_results="2"),
    "page_token not base64": search_models(page_token="%%%"),
    "page_token not JSON": search_models(page_token=b64(b"\xff\xfe")),
    "page_token a list": search_models(page_token=b64([1])),
    "page_token offset negative": search_models(page_token=b64({"offset": -1})),
    "page_token offset a string": search_versions(page_token=b64({"offset": "1"})),
    "page_token offset infinite": search_versions(page_token=b64(b'{"offset": Infinity}')),
    "page_token offset true": search_models(page_token=b64({"offset": True})),
    "page_token offset 10**30": search_models(page_token=b64({"offset": 10**30})),
    # -- filters and order -------------------------------------------------------------------------
    "filter with OR": search_models(filter="name = 'a' OR name = 'b'"),
    "version_number past 2**31": search_versions(filter="version_number = 99999999999999999999"),
    "version_number of 5000 digits": search_versions(filter="version_number > " + "9" * 5000),
    "version_number IN past 2**31": search_versions(filter="version_number = '2147483648'"),
    "filter on an unknown attribute": search_models(filter="foo = 'x'"),
    "filter with an unterminated quote": search_models(filter="name = 'abc"),
    "filter without a value": search_models(filter="name LIKE"),
    "filter with an unquoted value": search_models(filter="name = x"),
    "filter in parentheses": search_models(filter="(name = 'a')"),
    "filter ending in AND": search_models(filter="name = 'a' AND"),
    "filter on an empty tag key": search_models(filter="tags. = 'x'"),
    "filter with an unclosed IN": search_versions(filter="run_id IN ('a', 'b'"),
    "filter on a version number word": search_versions(filter="version_number = 'abc'"),
    "filter on a version number fraction": search_versions(filter="version_number > 1.5"),
    "filter on current_stage": search_versions(filter="current_stage = 'Production'"),
    "filter run_id LIKE": search_versions(filter="run_id LIKE 'a%'"),
    "order_by an unknown key": search_models(order_by="bogus DESC"),
    "order_by sideways": search_models(order_by="name SIDEWAYS"),
    "order_by three words": search_versions(order_by="name ASC extra"),
    # -- endpoints and methods MLflow's registry does not have -------------------------------------
    "experiments": Case("GET", "/experiments/search", code="ENDPOINT_NOT_FOUND"),
    "runs": Case("POST", "/runs/create", json={}, code="ENDPOINT_NOT_FOUND"),
    "unknown registered-models path": Case("GET", "/registered-models/nope", code="ENDPOINT_NOT_FOUND"),
    "unknown model-versions path": Case("GET", "/model-versions", code="ENDPOINT_NOT_FOUND"),
    "PUT on create": Case("PUT", "/registered-models/create", json={"name": "x"},
                          code="ENDPOINT_NOT_FOUND"),
    "GET on create": Case("GET", "/registered-models/create", params={"name": "x"},
                          code="ENDPOINT_NOT_FOUND"),
    "POST on get": Case("POST", "/registered-models/get", json={"name": M},
                          code="ENDPOINT_NOT_FOUND"),
    "DELETE on get": Case("DELETE", "/model-versions/get", json={"name": M, "version": "1"},
                          code="ENDPOINT_NOT_FOUND"),
    "PATCH on alias": Case("PATCH", "/registered-models/alias",
                                        json={"name": M, "alias": "a", "version": "1"},
                                                code="ENDPOINT_NOT_FOUND"),
    # -- credentials ---------------------------------------------------------------------------------
    "no credentials": Case("POST", "/registered-models/create", json={"name": "x"}, headers={},
                           code="UNAUTHENTICATED"),
    "unknown bearer token": Case("POST", "/registered-models/create", json={"name": "x"},
                                 headers={"Authorization": "Bearer mrt_forged"}, code="UNAUTHENTICATED"),
    "Basic not base64": Case("GET", "/registered-models/search", headers={"Authorization": "Basic !!!"},
                             code="UNAUTHENTICATED"),
    "Basic without a password": Case("GET", "/registered-models/search",
                                     headers={"Authorization": "Basic " + b64(b"user:")}, code="UNAUTHENTICATED"),
    "an unknown scheme": Case("GET", "/registered-models/search", headers={"Authorization": "Token abc"},
                              code="UNAUTHENTICATED"),
}

_models: dict[str, str] = {}


def model_of(registry: Registry) -> str:
    """The backend's target model: version 1 in Staging, made once through the native API."""
    if registry.backend not in _models:
        name = unique("hostile")
        with registry.http() as c:
            assert c.post("/models", json={"name": name}).status_code == 201
            assert c.post(f"/models/{name}/versions", json={"source": "s3://b/1"}).status_code == 201
            r = c.post(f"/models/{name}/versions/1/transitions", json={"to_stage": "staging"})
            assert r.status_code == 200, r.text
        _models[registry.backend] = name
    return _models[registry.backend]


def fill(value: Any, model: str) -> Any:
    if isinstance(value, str):
        return value.replace(M, model)
    if isinstance(value, dict):
        return {k: fill(v, model) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, model) for v in value]
    return value


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("prefix", PREFIXES, ids=["api", "ajax-api"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_request_is_a_4xx_mlflow_error_and_writes_nothing(
        backend: str, prefix: str, case: Case, mlflow_server: Callable[[str], Registry]) -> None:
    registry = mlflow_server(backend)
    model = model_of(registry)
    heads, mark = registry.audit_heads(), registry.log_mark()
    headers = {"Authorization": f"Bearer {registry.admin}"} if case.headers is None else case.headers
    kwargs: dict[str, Any] = {"params": fill(case.params, model)}
    if case.content is not None:
        kwargs.update(content=case.content, headers={**headers, "Content-Type": "application/json"})
    else:
        kwargs.update(headers=headers)
        if case.json is not None:
            kwargs["json"] = fill(case.json, model)
    r = registry.raw.request(case.method, prefix + case.path.replace(M, model), **kwargs)

    assert r.status_code < 500, r.text[:500]
    assert r.status_code == (case.status or STATUS[case.code]), (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), (r.headers, r.text[:500])
    body = r.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == case.code, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    assert registry.audit_heads() == heads, "a refused request wrote to the audit log"
    registry.assert_log_clean(mark)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_idempotency_key_on_the_mlflow_surface_is_not_in_its_contract_and_changes_nothing(
        backend: str, mlflow_server: Callable[[str], Registry]) -> None:
    """MLflow's API has no Idempotency-Key: a client that sends one gets MLflow's answer, the
    change it asked for read back in the same response (no held transaction hides it)."""
    registry = mlflow_server(backend)
    name, new_name = unique("keyed"), unique("keyed-renamed")
    headers = {"Authorization": f"Bearer {registry.admin}", "Idempotency-Key": unique("key")}
    created = registry.raw.post("/api/2.0/mlflow/registered-models/create", json={"name": name}, headers=headers)
    assert created.status_code == 200, created.text
    renamed = registry.raw.post("/api/2.0/mlflow/registered-models/rename", headers=headers,
                                json={"name": name, "new_name": new_name})
    assert (renamed.status_code, renamed.json()["registered_model"]["name"]) == (200, new_name), renamed.text
    assert "idempotent-replayed" not in renamed.headers
