"""Who may do what: one table drives every operation x role x in/out of scope to its status.

Every operationId of the committed OpenAPI document must have at least one row here (a test
fails otherwise), so a new endpoint cannot ship without saying who may call it.

Per server, the admin creates one token per role, each limited to the glob ``perm-in-*``; models
named ``perm-out-*`` do not exist for those tokens. A row that changes state gets, per cell
(row x role x scope), a model of its own prepared by the admin before the module's tests run, so
every cell is one fresh, independent request. Besides the status, each cell checks that a refused
request changed nothing and an allowed write changed something (the model's audit head, or the
system chain's for token operations), and reads check what they return.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, seg
from tests.support import REPO, Server

ROLES = ("viewer", "editor", "stager", "releaser", "admin")
SCOPE = "perm-in-*"
IN, OUT = "perm-in-", "perm-out-"
API = "/api/v1"
OPENAPI = REPO / "openapi" / "openapi.json"

Ctx = dict[str, Any]


# -- how a cell's model is prepared -----------------------------------------------------------------


@dataclass(frozen=True)
class Prep:
    """What the admin creates before a cell's request: the model (unless ``create`` is false),
    ``versions`` versions, then ``moves`` (version, stage) in order, then ``aliases``
    (alias, version, protected), ``checks`` (version, name, status) and ``policies`` (stage,
    rules), then ``requests`` (version, to_stage): transition requests opened by the admin,
    whose principal is none of the role tokens' (the cell's ``request_id`` is the last one), and
    last the admin's comments: ``comments`` on version 1, then ``request_comments`` on the last
    request (the cell's ``comment_id`` is the last comment made).
    ``files`` (version, path) are uploaded right after the versions, before any move seals them;
    a file's bytes are its path."""

    create: bool = True
    versions: int = 0
    files: tuple[tuple[int, str], ...] = ()
    moves: tuple[tuple[int, str], ...] = ()
    aliases: tuple[tuple[str, int, bool], ...] = ()
    checks: tuple[tuple[int, str, str], ...] = ()
    policies: tuple[tuple[str, dict[str, Any]], ...] = ()
    requests: tuple[tuple[int, str], ...] = ()
    comments: int = 0
    request_comments: int = 0


NOTHING = Prep(create=False)
MODEL = Prep()
ONE = Prep(versions=1)


def prepare(admin: httpx.Client, name: str, prep: Prep) -> Ctx:
    if prep.create:
        ok(admin.post(f"{API}/models", json={"name": name}), 201)
    for _ in range(prep.versions):
        ok(admin.post(f"{API}/models/{seg(name)}/versions", json={"source": "s3://bucket/m"}), 201)
    for version, path in prep.files:
        ok(admin.put(f"{API}/models/{seg(name)}/versions/{version}/artifacts/{path}",
                     content=path.encode()), 201)
    for version, stage in prep.moves:
        ok(admin.post(f"{API}/models/{seg(name)}/versions/{version}/transitions",
                      json={"to_stage": stage, "comment": "setup"}), 200)
    for alias, version, protected in prep.aliases:
        ok(admin.put(f"{API}/models/{seg(name)}/aliases/{alias}",
                     json={"version": version, "protected": protected}), 200)
    for version, check, status in prep.checks:
        ok(admin.post(f"{API}/models/{seg(name)}/versions/{version}/checks",
                      json={"name": check, "status": status}), 201)
    for stage, rules in prep.policies:
        ok(admin.put(f"{API}/models/{seg(name)}/policies/{stage}", json=rules), 200)
    ctx: Ctx = {"m": name}
    for version, stage in prep.requests:
        r = ok(admin.post(f"{API}/models/{seg(name)}/versions/{version}/transition-requests",
                          json={"to_stage": stage, "comment": "setup"}), 201)
        ctx["request_id"] = r.json()["id"]
    for _ in range(prep.comments):
        r = ok(admin.post(f"{API}/models/{seg(name)}/versions/1/comments", json={"body": "setup"}), 201)
        ctx["comment_id"] = r.json()["id"]
    for _ in range(prep.request_comments):
        r = ok(admin.post(f"{API}/transition-requests/{ctx['request_id']}/comments", json={"body": "setup"}), 201)
        ctx["comment_id"] = r.json()["id"]
    return ctx


def ok(response: httpx.Response, status: int) -> httpx.Response:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response


# -- the table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One kind of request. In scope, roles from ``least`` up get ``status`` and the others 403
    (``least`` None: every role); out of scope, every role gets ``out`` (``out`` None: the
    operation is not about one model, so scope does not apply and only "na" cells exist)."""

    id: str
    operation: str
    method: str
    path: str  # from the server root; {m} is the cell's model, {token_id} a token made for it
    least: str | None
    status: int
    body: dict[str, Any] | None = None
    params: dict[str, str] = field(default_factory=dict)
    prep: Prep | None = None  # None: the shared read-only model of the scope
    out: int | None = 404
    writes: bool = True
    check: Callable[[httpx.Response, Ctx, str, Any], None] | None = None
    system: bool = False  # about the registry as a whole (tokens, webhooks): the system chain

    def expected(self, role: str, scope: str) -> int:
        if scope == "out":
            assert self.out is not None
            return self.out
        if self.least is None or ROLES.index(role) >= ROLES.index(self.least):
            return self.status
        return 403


def read(id: str, operation: str, path: str, check: Callable[..., None] | None = None,
         **params: str) -> Row:
    """A read of the shared model of the scope: every role in scope, nobody out of it."""
    return Row(id, operation, "GET", API + path, None, 200, params=params, writes=False, check=check)


def global_read(id: str, operation: str, path: str, check: Callable[..., None] | None = None,
                **params: str) -> Row:
    return Row(id, operation, "GET", path, None, 200, params=params, out=None, writes=False, check=check)


def write(id: str, operation: str, method: str, path: str, least: str, status: int, prep: Prep,
          body: dict[str, Any] | None = None, out: int | None = 404,
          check: Callable[[httpx.Response, Ctx, str, Any], None] | None = None) -> Row:
    return Row(id, operation, method, API + path, least, status, body=body, prep=prep, out=out, check=check)


def system(operation: str, method: str, path: str, body: dict[str, Any] | None = None) -> Row:
    """An operation for admins of the whole registry: every role of the scoped tokens is refused."""
    return Row(operation, operation, method, API + path, None, 403, body=body, prep=NOTHING, out=None,
               writes=method != "GET", system=True)


def transition(id: str, least: str, to_stage: str, prep: Prep, version: int = 1,
               comment: str | None = None) -> Row:
    body: dict[str, Any] = {"to_stage": to_stage}
    if comment:
        body["comment"] = comment
    return write(id, "transitionModelVersion", "POST", f"/models/{{m}}/versions/{version}/transitions",
                 least, 200, prep, body)


# Checks on 2xx bodies: (response, cell context, role, world).

def _is_model(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert r.json()["name"] == ctx["m"]


def _versions(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [v["version"] for v in r.json()["items"]] == [1, 2]


def _version_1(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert (r.json()["model"], r.json()["version"], r.json()["stage"]) == (ctx["m"], 1, "production")


def _stage_history(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [h["to_stage"] for h in r.json()["items"]] == ["staging", "production"]


def _production(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [v["version"] for v in r.json()["items"]] == [1]


def _champion(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert (r.json()["alias"], r.json()["version"]) == ("champion", 1)


def _aliases(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [(a["alias"], a["version"]) for a in r.json()["items"]] == [("champion", 1)]


def _own_audit(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    items = r.json()["items"]
    assert items and {e["model"] for e in items} == {ctx["m"]}


def _verified(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert r.json()["ok"] is True and r.json()["checked"] > 0, r.json()


def _own_events(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    items = r.json()["items"]
    assert items and {e["model"] for e in items} == {ctx["m"]}


def _own_head(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [h["model"] for h in r.json()["items"]] == [ctx["m"]]


def _history(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert body["stages"] == {"production": {"version": 1}, "staging": [{"version": 2}]}, body
    assert body["aliases"] == {"champion": 1}, body


def _in_scope_models(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    names = [m["name"] for m in world.all_items(role, f"{API}/models")]
    assert world.read_model["in"] in names
    assert all(fnmatchcase(n, SCOPE) for n in names), [n for n in names if not fnmatchcase(n, SCOPE)]


def _in_scope_audit(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    entries = world.all_items(role, f"{API}/audit")
    chains = {e["chain"] for e in entries}
    assert "system" not in chains, f"system chain listed to a scoped {role}"
    assert world.read_model["in"] in {e["model"] for e in entries}
    outside = [e for e in entries if e["chain"] != "system" and not fnmatchcase(e["model"] or "", SCOPE)]
    assert outside == []


def _in_scope_heads(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    heads = r.json()["items"]
    seen = "system" in {h["chain"] for h in heads}
    assert not seen, f"system chain head shown to a scoped {role}"
    models = {h["model"] for h in heads if h["chain"] != "system"}
    assert world.read_model["in"] in models
    assert all(fnmatchcase(m, SCOPE) for m in models), models


def _verified_what_it_sees(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert body["ok"] is True, body
    # Exactly the entries the token may list: its models' chains (and the system chain for admins).
    assert body["checked"] == len(world.all_items(role, f"{API}/audit")), body


def _alive(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert r.status_code == 200


def _lineage_v1(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert (body["inputs"], body["run"]) == ([], None), body
    assert [s["to_stage"] for s in body["stages"]] == ["staging", "production"], body
    # The events are built by the relay: registration, then each stage change, once it has run.
    events = world.lineage_events(role, ctx["m"])
    assert [e["job"]["name"] for e in events] == [f"{ctx['m']}.{job}" for job in
                                                  ("register", "transition", "transition")], events


def _checks(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [(i["name"], i["status"]) for i in r.json()["items"]] == [("ci/unit", "success")]


def _gates(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert body["allowed"] is False, body
    assert [(g["gate"], g["passed"]) for g in body["results"]] == [("stage_table", True), ("check:ci/unit", False)]


def _policy(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert (body["source"], body["rules"]["required_checks"]) == ("model", ["ci/unit"]), body


def _own_requests(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [(i["id"], i["model"]) for i in r.json()["items"]] == [(ctx["request_id"], ctx["m"])]


def _in_scope_requests(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    models = {i["model"] for i in world.all_items(role, f"{API}/transition-requests")}
    assert world.read_model["in"] in models
    assert all(fnmatchcase(m, SCOPE) for m in models), models


def _request(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert (body["id"], body["model"], body["state"]) == (ctx["request_id"], ctx["m"], "pending")


def _renamed(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert (r.json()["name"], r.json()["latest_version"]) == (f"{ctx['m']}-renamed", 1)


def _opened(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert (body["model"], body["state"], body["requested_by"]) == (ctx["m"], "pending", f"perm-{role}")


def _approved(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()   # the one approval the policy asks for: the move is applied at once
    assert (body["applied"], body["request"]["state"], body["version"]["stage"]) == (True, "applied", "production")


def _closed_as(state: str) -> Callable[[httpx.Response, Ctx, str, Any], None]:
    def check(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
        body = r.json()
        assert (body["applied"], body["request"]["state"], body["request"]["decided_by"]) == (
            False, state, f"perm-{role}")
    return check


def _files(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [(f["path"], f["size"]) for f in r.json()["items"]] == [("model.bin", 9)], r.json()


def _file_bytes(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert r.content == b"model.bin"


def _uploaded(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert (r.json()["path"], r.json()["size"], r.json()["uploaded_by"]) == ("new.bin", 0, f"perm-{role}")


def _sealed(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert (body["model"], body["version"], [f["path"] for f in body["files"]]) == (ctx["m"], 1, ["model.bin"])


def _no_upload_urls(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert "PUT the file" in assert_problem(r, 409, "conflict")["detail"]


def _resolved(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert (body["model"], body["version"], body["stage"]) == (ctx["m"], 1, "production"), body


def _rolled_back(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()
    assert (body["version"]["version"], body["version"]["stage"], body["transition"]["archived"]) == (
        1, "production", [2])


def _version_comments(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [(i["model"], i["version"], i["request_id"]) for i in r.json()["items"]] == [(ctx["m"], 1, None)]


def _request_comments(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert [(i["id"], i["version"], i["request_id"]) for i in r.json()["items"]] == [
        (ctx["comment_id"], 2, ctx["request_id"])]


def _comment(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    assert (r.json()["id"], r.json()["model"], r.json()["body"]) == (ctx["comment_id"], ctx["m"], "setup")


def _commented(r: httpx.Response, ctx: Ctx, role: str, world: Any) -> None:
    body = r.json()   # the author is the token's principal: by default its name
    assert (body["model"], body["version"], body["author"], body["request_id"]) == (
        ctx["m"], 1, f"perm-{role}", ctx.get("request_id"))


READ_PREP = Prep(versions=2, moves=((1, "staging"), (1, "production"), (2, "staging")),
                 aliases=(("champion", 1, False),), checks=((1, "ci/unit", "success"),),
                 policies=(("production", {"required_checks": ["ci/unit"]}),), requests=((2, "production"),),
                 comments=1, request_comments=1)
STAGING = Prep(versions=1, moves=((1, "staging"),))
PRODUCTION = Prep(versions=1, moves=((1, "staging"), (1, "production")))
ARCHIVED = Prep(versions=1, moves=((1, "archived"),))
# v1 was in production, v2 replaced it: v1 is the version a rollback may bring back.
REPLACED = Prep(versions=2, moves=((1, "staging"), (1, "production"), (2, "staging"), (2, "production")))
ALIASED = Prep(versions=2, aliases=(("candidate", 1, False),))
PROTECTED = Prep(versions=2, aliases=(("champion", 1, True),))
POLICY = Prep(policies=(("production", {"required_checks": ["ci"]}),))
# v1 in staging, a policy asking for one approval, and the admin's request to promote v1.
FILED = Prep(versions=1, files=((1, "model.bin"),))
REQUESTED = Prep(versions=1, moves=((1, "staging"),), policies=(("production", {"required_approvals": 1}),),
                 requests=((1, "production"),))
COMMENTED = Prep(versions=1, comments=1)

TABLE: tuple[Row, ...] = (
    # reads of a visible model: every role; a model out of scope does not exist
    read("getModel", "getModel", "/models/{m}", _is_model),
    read("listModelVersions", "listModelVersions", "/models/{m}/versions", _versions),
    read("getModelVersion", "getModelVersion", "/models/{m}/versions/1", _version_1),
    read("getStageHistory", "getStageHistory", "/models/{m}/versions/1/transitions", _stage_history),
    read("getVersionsInStage", "getVersionsInStage", "/models/{m}/stages/production", _production),
    read("listAliases", "listAliases", "/models/{m}/aliases", _aliases),
    read("getAlias", "getAlias", "/models/{m}/aliases/champion", _champion),
    read("listAudit", "listAudit", "/audit", _own_audit, model="{m}"),
    read("verifyAudit", "verifyAudit", "/audit/verify", _verified, model="{m}"),
    read("listEvents", "listEvents", "/events", _own_events, model="{m}"),
    read("getAuditHeads", "getAuditHeads", "/audit/head", _own_head, model="{m}"),
    read("getModelHistory", "getModelHistory", "/models/{m}/history", _history, at="{at}"),
    # reads across models: every role, filtered to what the token may see
    global_read("listModels", "listModels", f"{API}/models", _in_scope_models),
    global_read("listAudit-all", "listAudit", f"{API}/audit", _in_scope_audit, limit="1000"),
    global_read("getAuditHeads-all", "getAuditHeads", f"{API}/audit/head", _in_scope_heads),
    global_read("verifyAudit-all", "verifyAudit", f"{API}/audit/verify", _verified_what_it_sees),
    global_read("healthz", "healthz", "/healthz", _alive),
    global_read("readyz", "readyz", "/readyz", _alive),
    # models and versions: editors and up; creating outside the scope is 403, not 404
    write("createModel", "createModel", "POST", "/models", "editor", 201, NOTHING, {"name": "{m}"}, out=403),
    write("updateModel", "updateModel", "PATCH", "/models/{m}", "editor", 200, MODEL, {"description": "new"}),
    write("deleteModel", "deleteModel", "DELETE", "/models/{m}", "admin", 204, ONE),
    write("renameModel", "renameModel", "POST", "/models/{m}/rename", "admin", 200, ONE,
          {"new_name": "{m}-renamed"}, check=_renamed),
    write("deleteModelVersion", "deleteModelVersion", "DELETE", "/models/{m}/versions/1", "admin", 204, ONE),
    write("registerModelVersion", "registerModelVersion", "POST", "/models/{m}/versions", "editor", 201,
          MODEL, {"source": "s3://bucket/m"}),
    write("updateModelVersion", "updateModelVersion", "PATCH", "/models/{m}/versions/1", "editor", 200,
          ONE, {"description": "new"}),
    # aliases: editors for unprotected ones; protecting, and moving or deleting a protected one, admins
    write("setAlias", "setAlias", "PUT", "/models/{m}/aliases/candidate", "editor", 200, ONE, {"version": 1}),
    write("setAlias-move", "setAlias", "PUT", "/models/{m}/aliases/candidate", "editor", 200, ALIASED,
          {"version": 2}),
    write("setAlias-new-protected", "setAlias", "PUT", "/models/{m}/aliases/champion", "admin", 200, ONE,
          {"version": 1, "protected": True}),
    write("setAlias-protect", "setAlias", "PUT", "/models/{m}/aliases/candidate", "admin", 200, ALIASED,
          {"version": 1, "protected": True}),
    write("setAlias-move-protected", "setAlias", "PUT", "/models/{m}/aliases/champion", "admin", 200,
          PROTECTED, {"version": 2}),
    write("setAlias-unprotect", "setAlias", "PUT", "/models/{m}/aliases/champion", "admin", 200, PROTECTED,
          {"version": 1, "protected": False}),
    write("deleteAlias", "deleteAlias", "DELETE", "/models/{m}/aliases/candidate", "editor", 204, ALIASED),
    write("deleteAlias-protected", "deleteAlias", "DELETE", "/models/{m}/aliases/champion", "admin", 204,
          PROTECTED),
    # the stage machine: among none, staging and archived, stagers; into or out of production, releasers
    transition("submit", "stager", "staging", ONE),
    transition("archive", "stager", "archived", ONE),
    transition("withdraw", "stager", "none", STAGING),
    transition("restore", "stager", "staging", ARCHIVED),
    transition("promote", "releaser", "production", STAGING),
    transition("retire", "releaser", "archived", PRODUCTION),
    transition("rollback", "releaser", "production", REPLACED, comment="v2 misbehaves"),
    # a version's lineage: a read like any other of the model
    read("getVersionLineage", "getVersionLineage", "/models/{m}/versions/1/lineage", _lineage_v1),
    # CI/CD gates: a version's checks, the gates report and the policies are read by every role;
    # editors report checks and ask for moves, releasers decide and roll back, admins set policies.
    read("listChecks", "listChecks", "/models/{m}/versions/1/checks", _checks),
    read("checkGates", "checkGates", "/models/{m}/versions/2/gates", _gates, to_stage="production"),
    read("getPolicy", "getPolicy", "/models/{m}/policies/production", _policy),
    write("reportCheck", "reportCheck", "POST", "/models/{m}/versions/1/checks", "editor", 201, ONE,
          {"name": "ci/unit", "status": "success"}),
    write("setPolicy", "setPolicy", "PUT", "/models/{m}/policies/production", "admin", 200, MODEL,
          {"required_approvals": 1}),
    write("deletePolicy", "deletePolicy", "DELETE", "/models/{m}/policies/production", "admin", 204, POLICY),
    write("rollbackModel", "rollbackModel", "POST", "/models/{m}/rollback", "releaser", 200, REPLACED,
          {"comment": "v2 misbehaves"}, check=_rolled_back),
    write("requestTransition", "requestTransition", "POST", "/models/{m}/versions/1/transition-requests",
          "editor", 201, STAGING, {"to_stage": "production"}, check=_opened),
    read("listTransitionRequests", "listTransitionRequests", "/transition-requests", _own_requests,
         model="{m}"),
    global_read("listTransitionRequests-all", "listTransitionRequests", f"{API}/transition-requests",
                _in_scope_requests),
    read("getTransitionRequest", "getTransitionRequest", "/transition-requests/{request_id}", _request),
    write("approveTransitionRequest", "approveTransitionRequest", "POST", "/transition-requests/{request_id}/approve",
          "releaser", 200, REQUESTED, {"comment": "ok"}, check=_approved),
    write("rejectTransitionRequest", "rejectTransitionRequest", "POST", "/transition-requests/{request_id}/reject",
          "releaser", 200, REQUESTED, {"comment": "no"}, check=_closed_as("rejected")),
    # cancelling: the requester's principal (the admin's here, none of the role tokens') or an admin
    write("cancelTransitionRequest", "cancelTransitionRequest", "POST", "/transition-requests/{request_id}/cancel",
          "admin", 200, REQUESTED, check=_closed_as("cancelled")),
    # comments: every role reads them; editors write them. Only the author's principal edits one
    # (the admin's here, none of the role tokens': every role is refused, admins included); the
    # author or an admin deletes one.
    read("listVersionComments", "listVersionComments", "/models/{m}/versions/1/comments", _version_comments),
    read("listRequestComments", "listRequestComments", "/transition-requests/{request_id}/comments",
         _request_comments),
    read("getComment", "getComment", "/comments/{comment_id}", _comment),
    write("addVersionComment", "addVersionComment", "POST", "/models/{m}/versions/1/comments", "editor", 201,
          ONE, {"body": "hi"}, check=_commented),
    write("addRequestComment", "addRequestComment", "POST", "/transition-requests/{request_id}/comments",
          "editor", 201, REQUESTED, {"body": "hi"}, check=_commented),
    Row("editComment", "editComment", "PATCH", API + "/comments/{comment_id}", None, 403,
        body={"body": "mine now"}, prep=COMMENTED),
    write("deleteComment", "deleteComment", "DELETE", "/comments/{comment_id}", "admin", 204, COMMENTED),
    # artifacts: every role reads a version's files; editors change them until the version is
    # sealed, and seal it. Reads get a model of their own holding one file ("model.bin").
    Row("listArtifacts", "listArtifacts", "GET", API + "/models/{m}/versions/1/artifacts", None, 200,
        prep=FILED, writes=False, check=_files),
    Row("downloadArtifact", "downloadArtifact", "GET", API + "/models/{m}/versions/1/artifacts/model.bin",
        None, 200, prep=FILED, writes=False, check=_file_bytes),
    write("uploadArtifact", "uploadArtifact", "PUT", "/models/{m}/versions/1/artifacts/new.bin", "editor",
          201, ONE, check=_uploaded),
    write("deleteArtifact", "deleteArtifact", "DELETE", "/models/{m}/versions/1/artifacts/model.bin",
          "editor", 204, FILED),
    write("sealVersion", "sealVersion", "POST", "/models/{m}/versions/1/seal", "editor", 200, FILED,
          check=_sealed),
    # The local store cannot hand out upload URLs: 409 to those allowed to ask (the S3 case is in
    # test_artifacts_api.py); roles below editor and models out of scope are refused first.
    write("requestArtifactUpload", "requestArtifactUpload", "POST", "/models/{m}/versions/1/artifact-uploads",
          "editor", 409, ONE, {"path": "big.bin", "size": 1, "sha256": "0" * 64}, check=_no_upload_urls),
    read("resolveModelUri", "resolveModelUri", "/resolve", _resolved, uri="models:/{m}/Production"),
    # tokens: admins of the whole registry only. Every token here is limited to SCOPE, so every
    # role, admin included, is refused (the unscoped admin is tested in test_access_api.py).
    Row("createToken", "createToken", "POST", f"{API}/tokens", None, 403, {"name": "{m}", "role": "viewer"},
        prep=NOTHING, out=None, system=True),
    Row("listTokens", "listTokens", "GET", f"{API}/tokens", None, 403, params={"limit": "1000"},
        prep=NOTHING, out=None, writes=False, system=True),
    Row("revokeToken", "revokeToken", "DELETE", f"{API}/tokens/{{token_id}}", None, 403,
        prep=NOTHING, out=None, system=True),
    # webhooks and the lineage sinks' logs: the same rule as tokens (a subscription to every model
    # would show a scoped admin what is outside its scope). {webhook_id} is a real subscription.
    system("createWebhook", "POST", "/webhooks", {"url": "https://192.0.0.9/perm", "event_types": ["*"]}),
    system("listWebhooks", "GET", "/webhooks"),
    system("getWebhook", "GET", "/webhooks/{webhook_id}"),
    system("updateWebhook", "PATCH", "/webhooks/{webhook_id}", {"status": "paused"}),
    system("deleteWebhook", "DELETE", "/webhooks/{webhook_id}"),
    system("rotateWebhookSecret", "POST", "/webhooks/{webhook_id}/rotate-secret", {"overlap_seconds": 0}),
    system("pingWebhook", "POST", "/webhooks/{webhook_id}/ping"),
    system("listWebhookDeliveries", "GET", "/webhooks/{webhook_id}/deliveries"),
    system("redeliverWebhook", "POST", "/webhooks/{webhook_id}/deliveries/1/redeliver"),
    system("recoverWebhook", "POST", "/webhooks/{webhook_id}/recover", {"since": "2020-01-01T00:00:00Z"}),
    system("listLineageDeliveries", "GET", "/lineage/sinks/file/deliveries"),
    system("redeliverLineage", "POST", "/lineage/sinks/file/deliveries/1/redeliver"),
    system("recoverLineage", "POST", "/lineage/sinks/file/recover", {"since": "2020-01-01T00:00:00Z"}),
)


def cells() -> Iterator[tuple[Row, str, str]]:
    for row in TABLE:
        for role in ROLES:
            for scope in (("in", "out") if row.out is not None else ("na",)):
                yield row, role, scope


CELLS = list(cells())


# -- the world of one server ------------------------------------------------------------------------


class World:
    """The tokens, the shared read-only models and every cell's prepared model of one server."""

    def __init__(self, server: Server) -> None:
        self.uid = uuid.uuid4().hex[:6]
        self.admin = httpx.Client(base_url=server.url, headers=server.headers, timeout=30.0)
        self.clients: dict[str, httpx.Client] = {}
        self.read_model: dict[str, str] = {}
        self.read_request: dict[str, int] = {}
        self.read_comment: dict[str, int] = {}
        self.contexts: dict[str, Ctx | Exception] = {}
        self.webhook_id: int | None = None

    def close(self) -> None:
        for client in [self.admin, *self.clients.values()]:
            client.close()

    def build(self, server: Server) -> None:
        for role in ROLES:
            r = ok(self.admin.post(f"{API}/tokens", json={"name": f"perm-{role}", "role": role,
                                                          "models": [SCOPE]}), 201)
            self.clients[role] = httpx.Client(base_url=server.url, timeout=30.0,
                                              headers={"Authorization": f"Bearer {r.json()['token']}"})
        for scope, prefix in (("in", IN), ("out", OUT)):
            read = prepare(self.admin, f"{prefix}read-{self.uid}", READ_PREP)
            self.read_model[scope], self.read_request[scope] = read["m"], read["request_id"]
            self.read_comment[scope] = read["comment_id"]
        # A subscription no event reaches (nothing here disables one), at a global address: the
        # server refuses private ones.
        r = ok(self.admin.post(f"{API}/webhooks", json={"url": "https://192.0.0.9/perm",
                                                        "event_types": ["webhook.disabled"]}), 201)
        self.webhook_id = r.json()["id"]
        at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for row, role, scope in CELLS:
            key = cell_id(row, role, scope)
            try:
                self.contexts[key] = self._prepare_cell(row, role, scope, at)
            except Exception as exc:  # reported by the cell's own test
                self.contexts[key] = exc

    def _prepare_cell(self, row: Row, role: str, scope: str, at: str) -> Ctx:
        prefix = OUT if scope == "out" else IN
        if row.prep is None:
            return {} if scope == "na" else {"m": self.read_model[scope], "at": at,
                                             "request_id": self.read_request[scope],
                                             "comment_id": self.read_comment[scope]}
        ctx = prepare(self.admin, f"{prefix}{row.id.lower()}-{role}-{self.uid}", row.prep)
        if row.operation == "revokeToken":
            r = ok(self.admin.post(f"{API}/tokens", json={"name": f"victim-{role}", "role": "viewer"}), 201)
            ctx["token_id"] = r.json()["id"]
        if "{webhook_id}" in row.path:
            ctx["webhook_id"] = self.webhook_id
        return ctx

    def all_items(self, role: str, path: str, **params: str) -> list[dict[str, Any]]:
        """Every item of a paged list, as the role's token sees it."""
        items: list[dict[str, Any]] = []
        query: dict[str, str] = {"limit": "1000", **params}
        while True:
            r = ok(self.clients[role].get(path, params=query), 200)
            body = r.json()
            items.extend(body["items"])
            if not body["next_cursor"]:
                return items
            query["cursor"] = body["next_cursor"]

    def lineage_events(self, role: str, name: str, count: int = 3, timeout: float = 20.0) -> list[Any]:
        """The version 1 lineage events of ``name`` as the role sees them, once there are ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            events = ok(self.clients[role].get(f"{API}/models/{seg(name)}/versions/1/lineage"), 200).json()["events"]
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.05)

    def state(self, row: Row, ctx: Ctx) -> Any:
        """What a write would change, as the (unscoped) admin sees it: the model's audit head
        (None before the model exists), or the system chain's head for operations on the registry
        as a whole (tokens, webhooks), with the subscription's record for those on one."""
        if row.system:
            heads = ok(self.admin.get(f"{API}/audit/head"), 200).json()["items"]
            system = [(h["seq"], h["hash"]) for h in heads if h["chain"] == "system"]
            if "webhook_id" not in ctx:
                return system
            return system, ok(self.admin.get(f"{API}/webhooks/{ctx['webhook_id']}"), 200).json()
        if "m" not in ctx or row.out is None:
            return None
        r = self.admin.get(f"{API}/audit/head", params={"model": ctx["m"]})
        if r.status_code == 404:
            return None
        return [(h["seq"], h["hash"]) for h in ok(r, 200).json()["items"]]


def cell_id(row: Row, role: str, scope: str) -> str:
    return f"{row.id}-{role}-{scope}"


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    w = World(server)
    try:
        w.build(server)
        yield w
    finally:
        w.close()


def fill(path: str, ctx: Ctx) -> str:
    """A path with the cell's values percent-encoded into it."""
    return re.sub(r"\{(\w+)\}", lambda m: seg(str(ctx[m.group(1)])), path)


def fill_plain(value: Any, ctx: Ctx) -> Any:
    """Body and query values: as they are, not percent-encoded."""
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: str(ctx[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: fill_plain(v, ctx) for k, v in value.items()}
    return value


# -- the tests --------------------------------------------------------------------------------------


def _operations() -> dict[str, tuple[str, str]]:
    doc = json.loads(OPENAPI.read_text())
    return {op["operationId"]: (method.upper(), path)
            for path, item in doc["paths"].items() for method, op in item.items()
            if isinstance(op, dict) and "operationId" in op}


def _matches(template: str, path: str) -> bool:
    """Whether ``path`` (a row's, placeholders and all) is an instance of a documented template."""
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                      for part in re.split(r"(\{[^}]+\})", template))
    return re.fullmatch(pattern, path) is not None


def test_every_operation_has_a_permission_row() -> None:
    operations = _operations()
    rows = {row.operation for row in TABLE}
    missing = sorted(set(operations) - rows)
    assert not missing, f"operations without a row in the permission table: {missing}"
    assert not rows - set(operations), f"rows for operations the document lacks: {rows - set(operations)}"
    for row in TABLE:  # each row really calls the operation it names
        method, template = operations[row.operation]
        assert row.method == method and _matches(template, row.path), (row.id, method, template)
    assert len({row.id for row in TABLE}) == len(TABLE)


# Cells whose answer is a known bug (each xfail is strict: the fix makes it fail until removed).
KNOWN_BUGS: dict[str, str] = {}


def _cell_params() -> list[Any]:
    return [pytest.param(*cell, id=cell_id(*cell), marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[key])]
                         if (key := cell_id(*cell)) in KNOWN_BUGS else [])
            for cell in CELLS]


@pytest.mark.parametrize(("row", "role", "scope"), _cell_params())
def test_permission(world: World, row: Row, role: str, scope: str) -> None:
    ctx = world.contexts[cell_id(row, role, scope)]
    if isinstance(ctx, Exception):
        raise ctx
    expected = row.expected(role, scope)
    before = world.state(row, ctx)

    r = world.clients[role].request(row.method, fill(row.path, ctx), params=fill_plain(row.params, ctx),
                                    json=fill_plain(row.body, ctx))

    assert r.status_code == expected, (
        f"{row.method} {r.request.url} as {role} ({scope} scope): expected {expected}, got "
        f"{r.status_code} {r.text}")
    if expected == 403:
        assert_problem(r, 403, "forbidden")
    elif expected == 404:
        assert_problem(r, 404, "not_found")
    elif row.check is not None:
        row.check(r, ctx, role, world)
    after = world.state(row, ctx)
    if row.writes and expected < 300:
        assert after != before, f"{row.id} answered {r.status_code} but changed nothing"
    else:
        assert after == before, f"{row.id} answered {r.status_code} but changed the audit log"
