"""Schemathesis over every operation of the committed OpenAPI document, against a real server.

The run is authenticated as admin and works on seeded data: before the fuzzing starts, a few models
with versions in every stage, three aliases, a few webhooks (each with a delivery) and a few
transition requests (opened by an editor, so the admin may approve them) and comments are created
through the API, and every generated path parameter is, three times in four, replaced by a seeded
value (a model, a version of it, an alias, a stage, a webhook and its delivery, a lineage sink, a
transition request, a comment), so that every operation reaches its 2xx branch as well as its
refusals. ``deleteModel`` is steered to disposable names created just before the call, every
``deleteWebhook`` to a disposable webhook, every ``deleteComment`` to a disposable comment, and the
aliases are put back before the alias reads and deletes, so no
operation destroys what the next one needs. The server refuses private webhook targets, as in
production: a fuzzed URL names a host that does not resolve or a refused address, and is refused
at once (400, see ``filter_failure``).

Checks: every built-in response check of schemathesis 4 (``not_a_server_error``,
``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``,
``response_headers_conformance``, ``positive_data_acceptance``, ``negative_data_rejection``, …).
The refusals that are correct for well-formed requests are declared per operation in ``EXPECTED``
(``positive_data_acceptance`` then accepts them); any 5xx is always a failure.

Each operation also gets one explicit example (``HAPPY_PATHS``) on a model of its own, which must
answer 2xx (the gates examples have three: checks, gates and policies; rollback; transition
requests, each decided on a fresh one). The statuses seen are recorded per backend and operation;
``test_every_operation_returned_2xx`` (which runs after the fuzzing of its backend, as pytest keeps
file order within a module-scoped parameter) fails when an operation never answered 2xx, and prints
the summary: operations, cases generated, failing operations.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.generation.value import GeneratedValue
from schemathesis.openapi.checks import RejectedPositiveData

from tests.support import REPO, Server, server_for

DOCUMENT = REPO / "openapi" / "openapi.json"

# Correct refusals of a well-formed request, per operation (besides its 2xx). Anything else a
# positive case gets back is a failure: a 400 means the document is looser than the server.
EXPECTED: dict[str, list[str]] = {
    "healthz": [],
    "readyz": [],
    "listModels": [],
    "createModel": ["409"],
    "getModel": ["404"],
    "updateModel": ["404"],
    "deleteModel": ["404", "409"],
    "renameModel": ["404", "409"],          # 409: the new name is taken
    "deleteModelVersion": ["404", "409"],   # 409: in production
    "registerModelVersion": ["404"],
    "listModelVersions": ["404"],
    "getModelVersion": ["404"],
    "updateModelVersion": ["404", "409", "412"],
    "transitionModelVersion": ["404", "409", "412", "422"],
    "getStageHistory": ["404"],
    "getVersionsInStage": ["404"],
    "setAlias": ["404"],
    "listAliases": ["404"],
    "getAlias": ["404"],
    "deleteAlias": ["404"],
    "listAudit": ["404"],
    "verifyAudit": ["404"],
    "listEvents": ["404"],
    "getAuditHeads": ["404"],
    "getModelHistory": ["404"],
    "createToken": [],
    "listTokens": [],
    "revokeToken": ["404"],
    "createWebhook": [],          # refused URLs and event types: see filter_failure
    "listWebhooks": [],
    "getWebhook": ["404"],
    "updateWebhook": ["404"],
    "deleteWebhook": ["404"],
    "rotateWebhookSecret": ["404"],
    "pingWebhook": ["404", "409"],          # 409: the fuzzing paused it
    "listWebhookDeliveries": ["404"],
    "redeliverWebhook": ["404", "409"],     # 409: being sent right now
    "recoverWebhook": ["404"],
    "listLineageDeliveries": [],
    "redeliverLineage": ["404", "409"],
    "recoverLineage": [],
    "getVersionLineage": ["404"],
    "reportCheck": ["404"],
    "listChecks": ["404"],
    "checkGates": ["404"],
    "setPolicy": ["404"],                   # and rules no schema can judge: see filter_failure
    "getPolicy": ["404"],
    "deletePolicy": ["404"],                # 404: the model has no policy of its own for the stage
    "rollbackModel": ["404", "412", "422"],
    "requestTransition": ["404", "409"],    # 409: no such edge, or one is open for the move
    "listTransitionRequests": [],
    "getTransitionRequest": ["404"],
    "approveTransitionRequest": ["403", "404", "409"],   # 403: a request the admin opened itself
    "rejectTransitionRequest": ["404", "409"],
    "cancelTransitionRequest": ["404", "409"],
    "uploadArtifact": ["404", "409"],       # 409: sealed; refused paths and digests: see filter_failure
    "listArtifacts": ["404"],
    "downloadArtifact": ["404"],
    "deleteArtifact": ["404", "409"],
    "requestArtifactUpload": ["404", "409"],   # 409: the local store hands out no upload URLs
    "sealVersion": ["404", "409"],          # 409: already sealed
    "resolveModelUri": ["404"],             # malformed URIs: see filter_failure
    "addVersionComment": ["404"],
    "listVersionComments": ["404"],
    "addRequestComment": ["404"],
    "listRequestComments": ["404"],
    "getComment": ["404"],
    "editComment": ["404"],                 # every seeded comment is the admin's own
    "deleteComment": ["404"],
}
# Explicit examples that are refused by design on this server (the local store): the status they
# must get instead of a 2xx. The S3 store's 201 is tested in test_artifacts_api.py.
EXAMPLE_REFUSED = {"requestArtifactUpload": 409}

CONFIG = schemathesis.Config.from_dict({
    "seed": 20260602,
    "suppress-health-check": ["filter_too_much", "too_slow", "data_too_large"],
    "generation": {"max-examples": int(os.environ.get("REGISTRY_FUZZ_EXAMPLES", "20")),
                   "deterministic": True, "database": "none"},
    "operations": [
        {"include-operation-id": op,
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", *refusals]}}}
        for op, refusals in EXPECTED.items()
    ],
})

schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)

# The seeded world. Each server has its own database, so fixed names are safe. Fuzzing is steered
# to MODELS and ALIASES; HAPPY belongs to the explicit examples alone, so its state stays known.
MODELS = {"st-alpha": 6, "st-beta": 3, "st-gamma": 0}   # name -> number of versions
ALIASES = {("st-alpha", "champion"): 2, ("st-alpha", "challenger"): 3, ("st-beta", "best"): 1}
STAGES = ["none", "staging", "production", "archived"]
DISPOSABLE = "st-disposable-"
HAPPY = "st-happy"
# Webhooks: the fuzzed ones, and two of the explicit examples' own. Private addresses are refused
# (the default), so the URLs name a global address: 192.0.0.9 (IANA: globally reachable). The
# fuzzed ones are pinged once so they have deliveries; the happy ones hear of nothing.
HOOK_URL = "https://192.0.0.9/st"
FUZZED_HOOKS = 3
HAPPY_HOOKS = ("happy", "redeliver")
SINKS = ["file", "http"]
EXAMPLE_ID = "st-example-"   # X-Request-ID prefix of the explicit examples (and their log lines)
# Gates: the explicit examples' own models (checks, gates and policies; rollback; transition
# requests), and the requests the fuzzing is steered to, opened by an editor other than the run's
# admin so that the admin may approve them.
GATES, ROLLBACK, REQUESTS = "st-gates", "st-rollback", "st-requests"
REQUESTER = "st-requester"
SEEDED_REQUESTS = (("st-alpha", 4, "staging"), ("st-alpha", 5, "staging"), ("st-beta", 2, "staging"),
                   ("st-beta", 3, "archived"))
POLICY_STAGES = ["staging", "production"]
# Artifacts: the explicit examples' model (v1 stays unsealed and holds ARTIFACT), and files on
# unsealed seeded versions that fuzzing is steered to (with a path that does not exist).
ART, ARTIFACT = "st-artifacts", "weights/model.bin"
SEEDED_FILES = (("st-alpha", 4, ARTIFACT), ("st-alpha", 5, "config.json"))
ARTIFACT_PATHS = [ARTIFACT, "config.json", "missing.bin"]
# Comments: the admin's, on a model of their own (ids 1..SEEDED_COMMENTS; fuzzing edits them, and
# every deleteComment is steered to a disposable one made just before).
COMMENTS, SEEDED_COMMENTS = "st-comments", 3
URIS = ["models:/st-alpha/Production", "models:/st-alpha/staging", "models:/st-alpha@champion",
        "models:/st-beta/1", "models:/st-alpha/latest", "models:/st-alpha/archived", "models:/st-gamma/latest"]


def _seed(server: Server) -> None:
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as c:
        def ok(r: httpx.Response) -> None:
            assert r.is_success, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"

        # Webhooks first, so that their deliveries are the first ones (ids 1..FUZZED_HOOKS).
        hooks = [c.post("/webhooks", json={"url": HOOK_URL, "event_types": ["webhook.ping"]})
                 for _ in range(FUZZED_HOOKS)]
        happy = {k: c.post("/webhooks", json={"url": f"{HOOK_URL}-{k}", "event_types": ["webhook.disabled"]})
                 for k in HAPPY_HOOKS}
        for r in [*hooks, *happy.values()]:
            ok(r)
        for r in hooks:
            ok(c.post(f"/webhooks/{r.json()['id']}/ping"))   # deliveries 1..FUZZED_HOOKS, in order
        assert [r.json()["id"] for r in hooks] == list(range(1, FUZZED_HOOKS + 1)), "not a fresh database"
        HOOKS[server.url] = {k: r.json()["id"] for k, r in happy.items()}
        # The redelivery example's webhook: one delivery (its ping), then paused, so that no
        # worker ever holds it when the example asks for it again.
        redeliver = HOOKS[server.url]["redeliver"]
        ok(c.post(f"/webhooks/{redeliver}/ping"))
        _first_delivery(c, f"/webhooks/{redeliver}/deliveries")
        ok(c.patch(f"/webhooks/{redeliver}", json={"status": "paused"}))

        for name, versions in {**MODELS, HAPPY: 2}.items():
            ok(c.post("/models", json={"name": name, "description": "seeded", "tags": {"team": "st"}}))
            for _ in range(versions):
                ok(c.post(f"/models/{name}/versions",
                          json={"source": f"s3://bucket/{name}", "run_id": "run-1",
                                "tags": {"k": "v"}, "metrics": {"auc": 0.9},
                                "inputs": [{"namespace": "s3://data", "name": "train"}]}))

        def move(name: str, version: int, *stages: str) -> None:
            for stage in stages:
                ok(c.post(f"/models/{name}/versions/{version}/transitions",
                          json={"to_stage": stage, "comment": "seed"}))

        # st-alpha: v1 archived (was production), v2 production, v3 and v6 staging, v4 and v5 none.
        move("st-alpha", 1, "staging", "production")
        move("st-alpha", 2, "staging", "production")
        move("st-alpha", 3, "staging")
        move("st-alpha", 6, "staging")
        move("st-beta", 1, "staging")
        move(HAPPY, 1, "staging")
        for (name, alias), version in ALIASES.items():
            ok(c.put(f"/models/{name}/aliases/{alias}", json={"version": version}))
        _seed_gates(c, server, ok, move)
        ok(c.post("/models", json={"name": ART}))
        ok(c.post(f"/models/{ART}/versions", json={"source": f"s3://bucket/{ART}"}))
        for name, version, path in ((ART, 1, ARTIFACT), *SEEDED_FILES):
            ok(c.put(f"/models/{name}/versions/{version}/artifacts/{path}", content=os.urandom(64)))
        ok(c.post("/models", json={"name": COMMENTS}))
        ok(c.post(f"/models/{COMMENTS}/versions", json={"source": f"s3://bucket/{COMMENTS}"}))
        made = [c.post(f"/models/{COMMENTS}/versions/1/comments", json={"body": f"seed {i}"})
                for i in range(SEEDED_COMMENTS)]
        for r in made:
            ok(r)
        assert [r.json()["id"] for r in made] == list(range(1, SEEDED_COMMENTS + 1)), "not a fresh database"


def _seed_gates(c: httpx.Client, server: Server, ok: Callable[[httpx.Response], None],
                move: Callable[..., None]) -> None:
    """The gates examples' models, the requester's token, and the requests fuzzing is steered to."""
    for name, versions in {GATES: 1, ROLLBACK: 2, REQUESTS: 0}.items():
        ok(c.post("/models", json={"name": name}))
        for _ in range(versions):
            ok(c.post(f"/models/{name}/versions", json={"source": f"s3://bucket/{name}", "run_id": "run-1",
                                                        "metrics": {"auc": 0.9}}))
    move(GATES, 1, "staging")
    ok(c.post(f"/models/{GATES}/versions/1/checks", json={"name": "ci/unit", "status": "success"}))
    ok(c.put(f"/models/{GATES}/policies/production",
             json={"required_checks": ["ci/unit"], "metrics": {"auc": {"min": 0.5}}}))
    move(ROLLBACK, 1, "staging", "production")
    move(ROLLBACK, 2, "staging", "production")   # v1 archived: the version a rollback brings back
    created = c.post("/tokens", json={"name": REQUESTER, "role": "editor"})
    ok(created)
    requester = httpx.Client(base_url=server.api, timeout=30,
                             headers={"Authorization": f"Bearer {created.json()['token']}"})
    REQUESTERS[server.url] = requester
    opened = [requester.post(f"/models/{name}/versions/{version}/transition-requests",
                             json={"to_stage": stage, "comment": "seed"})
              for name, version, stage in SEEDED_REQUESTS]
    for r in opened:
        ok(r)
    assert [r.json()["id"] for r in opened] == list(range(1, len(SEEDED_REQUESTS) + 1)), "not a fresh database"


def _fresh_comment(c: httpx.Client) -> int:
    r = c.post(f"/models/{COMMENTS}/versions/1/comments", json={"body": "disposable"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _fresh_request(c: httpx.Client, server: Server) -> tuple[int, int]:
    """A new version of REQUESTS and the requester's open request to stage it: (version, id)."""
    r = c.post(f"/models/{REQUESTS}/versions", json={"source": f"s3://bucket/{REQUESTS}"})
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    opened = REQUESTERS[server.url].post(f"/models/{REQUESTS}/versions/{version}/transition-requests",
                                         json={"to_stage": "staging"})
    assert opened.status_code == 201, opened.text
    return version, opened.json()["id"]


HOOKS: dict[str, dict[str, int]] = {}   # server url -> {"happy": id, "redeliver": id}
REQUESTERS: dict[str, httpx.Client] = {}   # server url -> the requester's client


def _first_delivery(c: httpx.Client, path: str, timeout: float = 30.0) -> int:
    """The id of the oldest delivery listed at ``path``, once one exists that no worker holds
    (the relay makes them asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(path, params={"limit": 1000})
        assert r.status_code == 200, r.text
        idle = [d for d in r.json()["items"] if not d["in_flight"]]
        if idle:
            return idle[-1]["id"]
        assert time.monotonic() < deadline, f"no idle delivery at {path}: {r.text}"
        time.sleep(0.05)


def _versions_of(name: str) -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=max(MODELS[name], 1))


_seeded_name = st.sampled_from([n for n, v in MODELS.items() if v])
_seeded_model_version = _seeded_name.flatmap(lambda n: st.tuples(st.just(n), _versions_of(n)))
_seeded_alias = st.sampled_from(sorted(ALIASES))


def _steered(operation_id: str, params: set[str]) -> st.SearchStrategy[dict[str, Any]] | None:
    """Path parameters drawn from the seeded world for one operation."""
    if "webhook_id" in params:
        # The seeded ids are 1..FUZZED_HOOKS (each server has its own database).
        hook = st.integers(min_value=1, max_value=FUZZED_HOOKS)
        if "delivery_id" in params:
            return st.tuples(hook, st.integers(min_value=1, max_value=FUZZED_HOOKS)).map(
                lambda hd: {"webhook_id": hd[0], "delivery_id": hd[1]})
        return hook.map(lambda h: {"webhook_id": h})
    if "request_id" in params:
        return st.integers(min_value=1, max_value=len(SEEDED_REQUESTS)).map(lambda i: {"request_id": i})
    if "comment_id" in params:
        return st.integers(min_value=1, max_value=SEEDED_COMMENTS).map(lambda i: {"comment_id": i})
    if operation_id in {"setPolicy", "getPolicy", "deletePolicy"}:
        return st.tuples(_seeded_name, st.sampled_from(POLICY_STAGES)).map(
            lambda ns: {"name": ns[0], "stage": ns[1]})
    if "sink" in params:
        sink = st.sampled_from(SINKS)
        if "delivery_id" in params:
            return st.tuples(sink, st.integers(min_value=1, max_value=100)).map(
                lambda sd: {"sink": sd[0], "delivery_id": sd[1]})
        return sink.map(lambda s: {"sink": s})
    if "path" in params:  # an artifact: a seeded version and a path, most of them stored
        return st.tuples(_seeded_model_version, st.sampled_from(ARTIFACT_PATHS)).map(
            lambda vp: {"name": vp[0][0], "version": vp[0][1], "path": vp[1]})
    if operation_id in {"deleteModel", "renameModel"}:
        return st.integers(min_value=0, max_value=10_000).map(lambda i: {"name": f"{DISPOSABLE}{i}"})
    if operation_id == "deleteModelVersion":
        return st.integers(min_value=0, max_value=10_000).map(lambda i: {"name": f"{DISPOSABLE}{i}", "version": 1})
    if "alias" in params:
        return _seeded_alias.map(lambda na: {"name": na[0], "alias": na[1]})
    if "version" in params:
        return _seeded_model_version.map(lambda nv: {"name": nv[0], "version": nv[1]})
    if "stage" in params:
        return st.tuples(_seeded_name, st.sampled_from(STAGES)).map(
            lambda ns: {"name": ns[0], "stage": ns[1]})
    if params == {"name"}:
        return st.sampled_from(sorted(MODELS)).map(lambda n: {"name": n})
    return None


def _either(drawn: st.SearchStrategy, seeded: st.SearchStrategy) -> st.SearchStrategy:
    return st.sampled_from([False, True, True, True]).flatmap(lambda steer: seeded if steer else drawn)


def _steer(strategy: st.SearchStrategy,
           seeded: Callable[[dict[str, Any]], st.SearchStrategy[dict[str, Any]]]) -> st.SearchStrategy:
    """Three drawn values in four are replaced by ``seeded(value)``; mutated (negative) ones never are.

    Negative strategies wrap their values in ``GeneratedValue`` with the mutation in ``meta``:
    overwriting a mutated part would send valid data that the run still believes invalid.
    """
    def choose(drawn: Any) -> st.SearchStrategy:
        if isinstance(drawn, GeneratedValue):
            if drawn.meta is not None:
                return st.just(drawn)
            return _either(st.just(drawn), seeded(drawn.value or {}).map(
                lambda v: drawn.map_value(lambda _: v)))
        return _either(st.just(drawn), seeded(drawn or {}))

    return strategy.flatmap(choose)


@schema.hook
def before_generate_path_parameters(context: schemathesis.HookContext,
                                    strategy: st.SearchStrategy) -> st.SearchStrategy:
    operation = context.operation
    assert operation is not None
    params = {p.name for p in operation.path_parameters}
    steered = _steered(operation.definition.raw.get("operationId", ""), params)
    return strategy if steered is None else _steer(strategy, lambda _: steered)


@schema.hook
def before_generate_query(context: schemathesis.HookContext,
                          strategy: st.SearchStrategy) -> st.SearchStrategy:
    """``model`` filters (audit, events) name a seeded model three times in four, and so do the
    URIs to resolve."""
    operation = context.operation
    assert operation is not None
    if operation.definition.raw.get("operationId") == "resolveModelUri":
        return _steer(strategy, lambda query: st.sampled_from(URIS).map(lambda uri: {**query, "uri": uri}))
    if not any(p.name == "model" for p in operation.query):
        return strategy
    return _steer(strategy, lambda query: st.sampled_from(sorted(MODELS)).map(
        lambda name: {**query, "model": name}))


@schema.hook
def before_generate_headers(context: schemathesis.HookContext,
                            strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Three writes to a version in four go without a (most likely stale) ``If-Match``, and three
    uploads in four without a digest header (a fuzzed one cannot match the fuzzed body)."""
    operation = context.operation
    assert operation is not None
    if operation.definition.raw.get("operationId") == "uploadArtifact":
        return _steer(strategy, lambda headers: st.just(
            {k: v for k, v in headers.items() if k.lower() not in DIGEST_HEADERS}))
    if not any(p.name == "If-Match" for p in operation.headers):
        return strategy
    return _steer(strategy, lambda headers: st.just(
        {k: v for k, v in headers.items() if k.lower() != "if-match"}))


@schema.hook
def before_generate_body(context: schemathesis.HookContext,
                         strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Three transitions in four ask for a bare target stage, without stale ``expected_*`` fields."""
    operation = context.operation
    assert operation is not None
    if operation.definition.raw.get("operationId") != "transitionModelVersion":
        return strategy
    return _steer(strategy, lambda _: st.sampled_from(STAGES).map(lambda s: {"to_stage": s}))


# One request per operation that must succeed: on HAPPY, after ``_prepare`` has set the stage.
HAPPY_PATHS: dict[str, dict[str, Any]] = {
    "healthz": {},
    "readyz": {},
    "listModels": {"query": {"limit": 10, "name_prefix": "st-"}},
    "createModel": {"body": {"name": f"{HAPPY}-created", "description": "d", "tags": {"k": "v"}}},
    "getModel": {"path_parameters": {"name": HAPPY}},
    "updateModel": {"path_parameters": {"name": HAPPY},
                    "body": {"description": "patched", "tags": {"k": None, "n": "w"}}},
    "deleteModel": {"path_parameters": {"name": f"{HAPPY}-doomed"}},
    "renameModel": {"path_parameters": {"name": f"{HAPPY}-renaming"}, "body": {"new_name": f"{HAPPY}-renamed"}},
    "deleteModelVersion": {"path_parameters": {"name": f"{HAPPY}-pruned", "version": 1}},
    "registerModelVersion": {"path_parameters": {"name": HAPPY},
                             "body": {"source": "s3://bucket/happy", "metrics": {"auc": 0.5},
                                      "inputs": [{"namespace": "s3://data", "name": "train",
                                                  "version": "7"}]}},
    "listModelVersions": {"path_parameters": {"name": HAPPY},
                          "query": {"stage": "none", "tag": ["k:v"], "limit": 5}},
    "getModelVersion": {"path_parameters": {"name": HAPPY, "version": 1}},
    "updateModelVersion": {"path_parameters": {"name": HAPPY, "version": 2},
                           "body": {"description": "patched", "metrics": {"auc": 0.7}}},
    "transitionModelVersion": {"path_parameters": {"name": HAPPY, "version": 1},
                               "body": {"to_stage": "production", "expected_stage": "staging",
                                        "comment": "happy"}},
    "getStageHistory": {"path_parameters": {"name": HAPPY, "version": 1}},
    "getVersionsInStage": {"path_parameters": {"name": HAPPY, "stage": "none"}},
    "setAlias": {"path_parameters": {"name": HAPPY, "alias": "current"}, "body": {"version": 1}},
    "listAliases": {"path_parameters": {"name": HAPPY}, "query": {"limit": 5}},
    "getAlias": {"path_parameters": {"name": HAPPY, "alias": "current"}},
    "deleteAlias": {"path_parameters": {"name": HAPPY, "alias": "doomed"}},
    "listAudit": {"query": {"model": HAPPY, "limit": 5}},
    "verifyAudit": {"query": {"model": HAPPY}},
    "listEvents": {"query": {"model": HAPPY, "after": 0, "limit": 5}},
    "getAuditHeads": {"query": {"model": HAPPY}},
    "getModelHistory": {"path_parameters": {"name": HAPPY}, "query": {"at": "2030-01-01T00:00:00Z"}},
    "createToken": {"body": {"name": "happy-token", "role": "viewer", "models": [f"{HAPPY}*"]}},
    "listTokens": {"query": {"limit": 5}},
    "revokeToken": {"path_parameters": {"token_id": 2}},
    # Webhook ids and delivery ids are put in by ``_prepare`` (they are the server's).
    "createWebhook": {"body": {"url": f"{HOOK_URL}-created", "event_types": ["webhook.disabled"],
                               "models": [f"{HAPPY}*"], "description": "happy"}},
    "listWebhooks": {"query": {"limit": 5}},
    "getWebhook": {"path_parameters": {"webhook_id": 1}},
    "updateWebhook": {"path_parameters": {"webhook_id": 1},
                      "body": {"description": "patched", "models": None, "status": "active"}},
    "deleteWebhook": {"path_parameters": {"webhook_id": 1}},
    "rotateWebhookSecret": {"path_parameters": {"webhook_id": 1}, "body": {"overlap_seconds": 60}},
    "pingWebhook": {"path_parameters": {"webhook_id": 1}},
    "listWebhookDeliveries": {"path_parameters": {"webhook_id": 1}, "query": {"state": "pending", "limit": 5}},
    "redeliverWebhook": {"path_parameters": {"webhook_id": 1, "delivery_id": 1}},
    "recoverWebhook": {"path_parameters": {"webhook_id": 1}, "body": {"since": "2020-01-01T00:00:00Z"}},
    "listLineageDeliveries": {"path_parameters": {"sink": "file"}, "query": {"limit": 5}},
    "redeliverLineage": {"path_parameters": {"sink": "file", "delivery_id": 1}},
    "recoverLineage": {"path_parameters": {"sink": "file"}, "body": {"since": "2020-01-01T00:00:00Z"}},
    "getVersionLineage": {"path_parameters": {"name": HAPPY, "version": 1}},
    "reportCheck": {"path_parameters": {"name": GATES, "version": 1},
                    "body": {"name": "ci/e2e", "status": "success", "details_url": "https://ci.example/runs/1",
                             "summary": "all green"}},
    "listChecks": {"path_parameters": {"name": GATES, "version": 1}},
    "checkGates": {"path_parameters": {"name": GATES, "version": 1},
                   "query": {"to_stage": "production", "comment": "happy"}},
    "setPolicy": {"path_parameters": {"name": GATES, "stage": "production"},
                  "body": {"metrics": {"auc": {"min": 0.5, "min_delta_vs_production": -0.1}},
                           "required_checks": ["ci/unit"], "required_approvals": 0, "auto_apply": True,
                           "min_staging_seconds": 0, "required_fields": ["run_id"]}},
    "getPolicy": {"path_parameters": {"name": GATES, "stage": "production"}},
    "deletePolicy": {"path_parameters": {"name": GATES, "stage": "staging"}},
    "rollbackModel": {"path_parameters": {"name": ROLLBACK}, "body": {"comment": "happy rollback"}},
    # The version and the request ids are put in by ``_prepare`` (a fresh one each time).
    "requestTransition": {"path_parameters": {"name": REQUESTS, "version": 1},
                          "body": {"to_stage": "staging", "comment": "happy"}},
    "listTransitionRequests": {"query": {"model": REQUESTS, "state": "pending", "requester": REQUESTER,
                                         "limit": 5}},
    "getTransitionRequest": {"path_parameters": {"request_id": 1}},
    "approveTransitionRequest": {"path_parameters": {"request_id": 1}, "body": {"comment": "happy"}},
    "rejectTransitionRequest": {"path_parameters": {"request_id": 1}, "body": {"comment": "happy"}},
    "cancelTransitionRequest": {"path_parameters": {"request_id": 1}, "body": {"comment": "happy"}},
    "uploadArtifact": {"path_parameters": {"name": ART, "version": 1, "path": "weights/happy.bin"},
                       "body": bytes(range(256)), "media_type": "application/octet-stream",
                       "headers": {"Content-Digest": "sha-256=:" + base64.b64encode(
                           hashlib.sha256(bytes(range(256))).digest()).decode() + ":"}},
    "listArtifacts": {"path_parameters": {"name": ART, "version": 1}, "query": {"limit": 5}},
    "downloadArtifact": {"path_parameters": {"name": ART, "version": 1, "path": ARTIFACT}},
    "deleteArtifact": {"path_parameters": {"name": ART, "version": 1, "path": "doomed.bin"}},
    "requestArtifactUpload": {"path_parameters": {"name": ART, "version": 1},
                              "body": {"path": "big.bin", "size": 3, "sha256": "0" * 64}},
    # The version is put in by ``_prepare`` (a fresh one each time).
    "sealVersion": {"path_parameters": {"name": ART, "version": 1}},
    "resolveModelUri": {"query": {"uri": f"models:/{ART}/latest"}},
    "addVersionComment": {"path_parameters": {"name": COMMENTS, "version": 1}, "body": {"body": "happy\n\n- ok"}},
    "listVersionComments": {"path_parameters": {"name": COMMENTS, "version": 1}, "query": {"limit": 5}},
    # The request and comment ids are put in by ``_prepare`` (a fresh one each time).
    "addRequestComment": {"path_parameters": {"request_id": 1}, "body": {"body": "happy"}},
    "listRequestComments": {"path_parameters": {"request_id": 1}, "query": {"limit": 5}},
    "getComment": {"path_parameters": {"comment_id": 1}},
    "editComment": {"path_parameters": {"comment_id": 1}, "body": {"body": "happier"}},
    "deleteComment": {"path_parameters": {"comment_id": 1}},
}


@schema.hook
def before_add_examples(context: schemathesis.HookContext, examples: list[schemathesis.Case]) -> None:
    operation = context.operation
    assert operation is not None
    op = operation.definition.raw.get("operationId")
    example = dict(HAPPY_PATHS[op])
    headers = {"X-Request-ID": f"{EXAMPLE_ID}{op}", **example.pop("headers", {})}
    examples.append(operation.Case(headers=headers, **example))


@schema.hook
def filter_failure(context: schemathesis.HookContext, failure: Any, case: schemathesis.Case,
                   response: schemathesis.Response) -> bool:
    """Keep every failure but these, all 400s for what no schema can tell:

    - a cursor this service never issued: cursors are opaque, so no schema can tell a forged one
      from a real one;
    - a webhook URL the service will not send to (its host does not resolve, or resolves to a
      refused address) or event type globs that match no event type: that depends on DNS and on
      the set of event types, not on the form;
    - policy rules that contradict each other or the stage (a metric's min above its max, a
      metric without a bound, a time in staging required for entering staging).
    - an artifact path the service refuses ('..', control characters, percent-escapes left after
      decoding, ...), a digest header it cannot read, or one that does not match the fuzzed body;
    - a model URI to resolve that its grammar (or the model and alias names) refuses.

    Only the service's own answer for those reasons is let through: a 400 from the schema
    validation (with ``errors``), or with any other detail, still fails.
    """
    if isinstance(failure, RejectedPositiveData) and response.status_code == 400:
        try:
            problem = response.json()
        except ValueError:
            return True
        if problem.get("code") != "validation_error":
            return True
        detail = str(problem.get("detail", ""))
        if (case.query or {}).get("cursor") is not None and "cursor" in detail:
            return False
        op = case.operation.definition.raw.get("operationId")
        if "errors" in problem:
            return True
        if op in {"createWebhook", "updateWebhook"}:
            return not any(marker in detail for marker in WEBHOOK_REFUSALS)
        if op == "setPolicy" and any(marker in detail for marker in POLICY_REFUSALS):
            return False
        if op in ARTIFACT_OPERATIONS and any(marker in detail for marker in ARTIFACT_REFUSALS):
            return False
        if op == "resolveModelUri":   # the URI grammar (and model and alias names) is the service's
            return False
    return True


# The service's words when it refuses a well-formed webhook URL or event type (registry/adapters/
# webhooks.py, registry/services/webhooks.py).
WEBHOOK_REFUSALS = ("the URL ", "plain http ", " does not resolve", " resolves to ",
                    " is a cloud metadata address", " is not a valid host name", " matches no event type")
# ... and a policy whose rules the schema allows one by one (registry/domain/gates.py).
POLICY_REFUSALS = (": min is above max", ": give at least one of ",
                   "min_staging_seconds is a rule for entering production")


# ... and an artifact path the service refuses (registry/domain/artifacts.py: '..', control
# characters, ...) or a digest header that is malformed or does not match the fuzzed body.
DIGEST_HEADERS = {"content-digest", "x-amz-checksum-sha256"}
ARTIFACT_OPERATIONS = {"uploadArtifact", "downloadArtifact", "deleteArtifact", "requestArtifactUpload"}
ARTIFACT_REFUSALS = ("an artifact path", "each name in an artifact path", "Content-Digest",
                     "x-amz-checksum-sha256", "the digest is not valid base64", "the body's sha256 is not")


# backend -> operationId -> Counter(status), for the requests made with the operation's own method
# (the unsupported-method probes of the coverage phase only count as cases)
STATUSES: dict[str, dict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))
CASES: dict[str, Counter[str]] = defaultdict(Counter)
FAILURES: dict[str, Counter[str]] = defaultdict(Counter)


_CLIENTS: dict[str, httpx.Client] = {}
ADMIN = "Bearer <admin>"   # stands for the token of the server under test until the call


@schema.auth(refresh_interval=None)
class AdminToken:
    """Every case is authenticated as admin, except the ones whose negative mutation removed or
    spoilt ``Authorization`` (schemathesis skips the provider for those: 401 expected). Coverage
    cases are built at collection, before any server exists, so they carry ``ADMIN``, which
    ``test_api`` swaps for the real token."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return ADMIN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = data


@pytest.fixture(scope="module")
def server(server_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The suite's server, plus a lineage file sink (so lineage deliveries exist) and a short
    webhook timeout (a fuzzed URL that resolves to a silent public address costs 2 s of one
    worker slot, never a request)."""
    data = tmp_path_factory.mktemp(f"fuzz-{server_backend}")
    env = {"REGISTRY_LINEAGE_FILE": str(data / "lineage.jsonl"), "REGISTRY_WEBHOOK_TIMEOUT": "2"}
    with server_for(server_backend, data, extra_env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def seeded(server: Server) -> Iterator[Server]:
    _seed(server)
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as client:
        _CLIENTS[server.url] = client
        yield server
        del _CLIENTS[server.url]
        REQUESTERS.pop(server.url).close()


# Models the explicit examples of deleteModel, renameModel and deleteModelVersion consume.
_DOOMED = {f"{HAPPY}-doomed", f"{HAPPY}-renaming", f"{HAPPY}-pruned"}


def _prepare(case: schemathesis.Case, server: Server) -> None:
    """Put back what the case is about to consume or change, so each case finds the world it needs:
    deletes never starve the next operations and the explicit examples always start alike."""
    op = case.operation.definition.raw.get("operationId")
    path = case.path_parameters or {}
    name, alias = str(path.get("name", "")), path.get("alias")
    c = _CLIENTS[server.url]
    token_id, webhook_id = str(path.get("token_id", "")), str(path.get("webhook_id", ""))
    comment_id = str(path.get("comment_id", ""))
    hooks = HOOKS[server.url]
    if op == "revokeToken" and token_id.isdigit() and int(token_id) >= 1:
        # Never the run's own admin token: every schema-valid id becomes a disposable token's.
        created = c.post("/tokens", json={"name": "disposable", "role": "viewer"})
        assert created.status_code == 201, created.text
        created = created.json()
        case.path_parameters["token_id"] = created["id"]
    elif op == "deleteWebhook" and webhook_id.isdigit() and int(webhook_id) >= 1:
        # Never a seeded webhook: every schema-valid id becomes a disposable webhook's.
        created = c.post("/webhooks", json={"url": f"{HOOK_URL}-doomed", "event_types": ["webhook.disabled"]})
        assert created.status_code == 201, created.text
        case.path_parameters["webhook_id"] = created.json()["id"]
    elif op == "deleteComment" and comment_id.isdigit() and int(comment_id) >= 1:
        # Never a seeded comment: every schema-valid id becomes a disposable comment's.
        case.path_parameters["comment_id"] = _fresh_comment(c)
    elif op in {"deleteModel", "renameModel"} and (name.startswith(DISPOSABLE) or name in _DOOMED):
        c.post("/models", json={"name": name})
        if op == "renameModel" and _is_example(case):
            c.delete(f"/models/{HAPPY}-renamed")
    elif op == "deleteModelVersion" and (name.startswith(DISPOSABLE) or name in _DOOMED):
        c.post("/models", json={"name": name})
        r = c.post(f"/models/{name}/versions", json={"source": "s3://bucket/doomed"})
        assert r.status_code == 201, r.text
        case.path_parameters["version"] = r.json()["version"]
    elif op in {"getAlias", "deleteAlias"} and (name, alias) in ALIASES:
        c.put(f"/models/{name}/aliases/{alias}", json={"version": ALIASES[name, alias]})
    elif not _is_example(case):
        return
    elif op == "createModel":
        c.delete(f"/models/{HAPPY}-created")
    elif op in {"getAlias", "deleteAlias"}:
        c.put(f"/models/{HAPPY}/aliases/{alias}", json={"version": 1})
    elif op in {"getWebhook", "updateWebhook", "rotateWebhookSecret", "pingWebhook",
                "listWebhookDeliveries", "recoverWebhook"}:
        case.path_parameters["webhook_id"] = hooks["happy"]
        if op == "pingWebhook":   # the fuzzing may have paused it
            c.patch(f"/webhooks/{hooks['happy']}", json={"status": "active"})
    elif op == "redeliverWebhook":
        hook = hooks["redeliver"]
        c.patch(f"/webhooks/{hook}", json={"status": "paused"})
        case.path_parameters.update(webhook_id=hook, delivery_id=_first_delivery(c, f"/webhooks/{hook}/deliveries"))
    elif op == "redeliverLineage":
        case.path_parameters["delivery_id"] = _first_delivery(c, "/lineage/sinks/file/deliveries")
    elif op == "deletePolicy":
        c.put(f"/models/{GATES}/policies/staging", json={})
    elif op == "requestTransition":
        r = c.post(f"/models/{REQUESTS}/versions", json={"source": f"s3://bucket/{REQUESTS}"})
        assert r.status_code == 201, r.text
        case.path_parameters["version"] = r.json()["version"]
    elif op in {"getComment", "editComment"}:
        case.path_parameters["comment_id"] = _fresh_comment(c)
    elif op in {"getTransitionRequest", "approveTransitionRequest", "rejectTransitionRequest",
                "cancelTransitionRequest", "addRequestComment", "listRequestComments"}:
        case.path_parameters["request_id"] = _fresh_request(c, server)[1]
    elif op == "deleteArtifact":
        c.put(f"/models/{ART}/versions/1/artifacts/doomed.bin", content=b"doomed")
    elif op == "sealVersion":
        r = c.post(f"/models/{ART}/versions", json={"source": f"s3://bucket/{ART}"})
        assert r.status_code == 201, r.text
        c.put(f"/models/{ART}/versions/{r.json()['version']}/artifacts/{ARTIFACT}", content=b"sealed")
        case.path_parameters["version"] = r.json()["version"]
    elif op == "transitionModelVersion":   # v1 back to staging, whatever a previous run left
        stage = c.get(f"/models/{HAPPY}/versions/1").json()["stage"]
        for target in {"production": ["archived", "staging"], "archived": ["staging"],
                       "none": ["staging"]}.get(stage, []):
            c.post(f"/models/{HAPPY}/versions/1/transitions", json={"to_stage": target})


_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_KEYED = "~st~"


def _key_per_request(case: schemathesis.Case) -> None:
    """A fuzzed ``Idempotency-Key`` that an earlier case sent with another body is rightly refused
    with 422 ``idempotency_conflict``, which no schema can tell from the request alone. So each
    valid key gets a digest of what the service fingerprints (the body and ``If-Match``): a key
    repeated with the same request still replays the stored answer, and never conflicts. Invalid
    keys (negative cases) are left as they are; the suffix is put on once, as cases are shared by
    both backends' runs."""
    headers = case.headers or {}
    name = next((h for h in headers if h.lower() == "idempotency-key"), None)
    if name is None or not isinstance(headers[name], str) or not _KEY.fullmatch(headers[name]):
        return
    condition = next((str(v) for h, v in headers.items() if h.lower() == "if-match"), "")
    # In the body's own key order: the service fingerprints the bytes, so reordered keys are
    # another request.
    request = json.dumps([case.body if not isinstance(case.body, bytes) else case.body.hex(), condition],
                         default=repr)
    digest = hashlib.sha256(request.encode()).hexdigest()[:16]
    headers[name] = f"{headers[name].split(_KEYED)[0][:200]}{_KEYED}{digest}"


def _is_example(case: schemathesis.Case) -> bool:
    return str((case.headers or {}).get("X-Request-ID", "")).startswith(EXAMPLE_ID)


@schema.parametrize()
def test_api(case: schemathesis.Case, seeded: Server, server_backend: str) -> None:
    if seeded.process.poll() is not None:
        pytest.fail(f"the server exited ({seeded.process.returncode}); log tail:\n"
                    + "\n".join(seeded.log.read_text().splitlines()[-30:]))
    _prepare(case, seeded)
    _key_per_request(case)
    op = case.operation.definition.raw.get("operationId")
    # Cases are shared by both backends' runs: the token goes in per call, never into the case.
    admin = _is_example(case) or (case.headers or {}).get("Authorization") == ADMIN
    transport = {"base_url": seeded.url, "timeout": 30, "headers": seeded.headers if admin else None}
    response = case.call(**transport)
    CASES[server_backend][op] += 1
    if _is_example(case) and op in EXAMPLE_REFUSED:
        assert response.status_code == EXAMPLE_REFUSED[op], (
            f"explicit example of {op} answered {response.status_code}: {response.text}")
    elif _is_example(case):
        assert 200 <= response.status_code < 300, (
            f"explicit example of {op} answered {response.status_code}: {response.text}")
    if case.method.upper() == case.operation.method.upper():
        STATUSES[server_backend][op][response.status_code] += 1
    try:
        case.validate_response(response, headers=transport["headers"], transport_kwargs=transport)
    except BaseException:
        FAILURES[server_backend][op] += 1
        raise


def test_the_server_serves_the_fuzzed_document(seeded: Server) -> None:
    """The committed document, fuzzed above, is the one the running app serves."""
    served = httpx.get(seeded.url + "/schema/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == json.loads(DOCUMENT.read_text())


def test_every_operation_returned_2xx(server_backend: str, seeded: Server,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after ``test_api`` for the same backend: every operation answered 2xx at least once."""
    operations = sorted(EXPECTED)
    document = json.loads(DOCUMENT.read_text())
    assert sorted(o["operationId"] for p in document["paths"].values() for o in p.values()) == operations
    seen, cases, failing = STATUSES[server_backend], CASES[server_backend], FAILURES[server_backend]
    lines = [f"schemathesis [{server_backend}]: {len(operations)} operations, "
             f"{sum(cases.values())} cases, {len(failing)} failing operations"
             + (f" ({', '.join(sorted(failing))})" if failing else "")]
    for op in operations:
        statuses = ", ".join(f"{s}×{n}" for s, n in sorted(seen[op].items()))
        lines.append(f"  {op:24} {cases[op]:4} cases  {statuses}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    never = [op for op in operations if op not in EXAMPLE_REFUSED and not any(200 <= s < 300 for s in seen[op])]
    never += [op for op, status in EXAMPLE_REFUSED.items() if not seen[op][status]]
    assert not never, f"operations that never returned a 2xx: {never}\n" + "\n".join(lines)
