"""CI/CD gates over HTTP, on both backends: checks reported on versions, stage policies (the
model's own and the configured default), the side-effect-free gates report and the 422 of the
transition that evaluates the same gates, transition requests and their approvals (quorum,
auto-apply, voiding), the rollback endpoint, and the gate results in stage-change lineage."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.api.helpers import (
    Who,
    api_client,
    assert_problem,
    assert_utc,
    audit,
    create_model,
    db_execute,
    events,
    model_id,
    move,
    pages,
    register,
    seg,
    versions_t,
)
from tests.lineage_spec import validate_run_event
from tests.support import REPO, Server, server_for

OPENAPI = REPO / "openapi" / "openapi.json"

# -- helpers ----------------------------------------------------------------------------------------


def version_of(c: httpx.Client, name: str, version: int) -> dict[str, Any]:
    r = c.get(f"/models/{seg(name)}/versions/{version}")
    assert r.status_code == 200, r.text
    return r.json()


def staged(c: httpx.Client, prefix: str, count: int = 1, **body: Any) -> str:
    """A model whose ``count`` versions (registered with ``body``) are all in staging."""
    name = create_model(c, prefix)
    register(c, name, count, **body)
    for v in range(1, count + 1):
        move(c, name, v, "staging")
    return name


def report(c: httpx.Client, name: str, version: int, check: str, status: str, **body: Any) -> httpx.Response:
    return c.post(f"/models/{seg(name)}/versions/{version}/checks",
                  json={"name": check, "status": status, **body})


def reported(c: httpx.Client, name: str, version: int, check: str, status: str, **body: Any) -> dict[str, Any]:
    r = report(c, name, version, check, status, **body)
    assert r.status_code == 201, r.text
    return r.json()


def put_policy(c: httpx.Client, name: str, stage: str, rules: dict[str, Any]) -> httpx.Response:
    return c.put(f"/models/{seg(name)}/policies/{stage}", json=rules)


def set_policy(c: httpx.Client, name: str, stage: str, **rules: Any) -> dict[str, Any]:
    r = put_policy(c, name, stage, rules)
    assert r.status_code == 200, r.text
    return r.json()


def gates(c: httpx.Client, name: str, version: int, to_stage: str, **params: Any) -> httpx.Response:
    return c.get(f"/models/{seg(name)}/versions/{version}/gates", params={"to_stage": to_stage, **params})


def transition(c: httpx.Client, name: str, version: int, to_stage: str, **body: Any) -> httpx.Response:
    return c.post(f"/models/{seg(name)}/versions/{version}/transitions", json={"to_stage": to_stage, **body})


def ask(c: httpx.Client, name: str, version: int, to_stage: str, **body: Any) -> httpx.Response:
    return c.post(f"/models/{seg(name)}/versions/{version}/transition-requests",
                  json={"to_stage": to_stage, **body})


def asked(c: httpx.Client, name: str, version: int, to_stage: str, **body: Any) -> dict[str, Any]:
    r = ask(c, name, version, to_stage, **body)
    assert r.status_code == 201, r.text
    return r.json()


def decide(c: httpx.Client, request_id: int, decision: str, comment: str | None = None) -> httpx.Response:
    body = {"comment": comment} if comment is not None else {}
    return c.post(f"/transition-requests/{request_id}/{decision}", json=body)


def decided(c: httpx.Client, request_id: int, decision: str, comment: str | None = None) -> dict[str, Any]:
    r = decide(c, request_id, decision, comment)
    assert r.status_code == 200, r.text
    return r.json()


def get_request(c: httpx.Client, request_id: int) -> dict[str, Any]:
    r = c.get(f"/transition-requests/{request_id}")
    assert r.status_code == 200, r.text
    return r.json()


def rollback(c: httpx.Client, name: str, **body: Any) -> httpx.Response:
    return c.post(f"/models/{seg(name)}/rollback", json=body)


def head(c: httpx.Client, name: str) -> list[tuple[int, str]]:
    r = c.get("/audit/head", params={"model": name})
    assert r.status_code == 200, r.text
    return [(h["seq"], h["hash"]) for h in r.json()["items"]]


def system_head(c: httpx.Client) -> list[tuple[int, str]]:
    r = c.get("/audit/head")
    assert r.status_code == 200, r.text
    return [(h["seq"], h["hash"]) for h in r.json()["items"] if h["chain"] == "system"]


def snapshot(c: httpx.Client, name: str) -> tuple[Any, ...]:
    """What a write to the model would change: its audit head, its event count, its versions."""
    r = c.get(f"/models/{seg(name)}/versions", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return head(c, name), len(events(c, name)), r.json()["items"]


def types(c: httpx.Client, name: str, prefix: str = "") -> list[str]:
    return [e["type"] for e in events(c, name) if e["type"].startswith(prefix)]


def failed_names(results: list[dict[str, Any]]) -> list[str]:
    return [r["gate"] for r in results if not r["passed"]]


def result(results: list[dict[str, Any]], gate: str) -> dict[str, Any]:
    (found,) = [r for r in results if r["gate"] == gate]
    return found


# -- who acts ---------------------------------------------------------------------------------------

SCOPED = "gates-scoped-*"


@pytest.fixture(scope="module")
def who(server: Server, c: httpx.Client) -> Iterator[Who]:
    uid = uuid.uuid4().hex[:6]
    w = Who(server, c)
    w.add("viewer", "viewer", f"viewer-{uid}")
    w.add("editor", "editor", f"editor-{uid}")
    w.add("editor2", "editor", f"editor2-{uid}")
    w.add("stager", "stager", f"stager-{uid}")
    w.add("rel-a", "releaser", f"rel-a-{uid}")
    w.add("rel-a-again", "releaser", f"rel-a-{uid}")          # a second token of rel-a's principal
    w.add("rel-b", "releaser", f"rel-b-{uid}")
    w.add("rel-c", "releaser", f"rel-c-{uid}")
    w.add("editor-as-releaser", "releaser", f"editor-{uid}")  # the editor's principal, as releaser
    w.add("scoped-editor", "editor", f"scoped-editor-{uid}", [SCOPED])
    w.add("scoped-releaser", "releaser", f"scoped-rel-{uid}", [SCOPED])
    try:
        yield w
    finally:
        w.close()


# -- checks -----------------------------------------------------------------------------------------


def test_a_check_report_answers_201_with_the_report(c: httpx.Client) -> None:
    name = create_model(c, "chk")
    register(c, name)
    r = report(c, name, 1, "ci/unit-tests", "success", details_url="https://ci.example/runs/7",
               summary="412 passed")
    assert r.status_code == 201, r.text
    body = r.json()
    assert isinstance(body["id"], int) and body["id"] >= 1
    assert {k: body[k] for k in ("name", "status", "details_url", "summary", "reported_by")} == {
        "name": "ci/unit-tests", "status": "success", "details_url": "https://ci.example/runs/7",
        "summary": "412 passed", "reported_by": "admin"}
    assert_utc(body["reported_at"])


def test_the_list_shows_the_latest_report_per_name_with_history_newest_first(c: httpx.Client) -> None:
    name = create_model(c, "chklist")
    register(c, name, 2)
    first = reported(c, name, 1, "lint", "pending")
    second = reported(c, name, 1, "lint", "failure", summary="3 errors")
    third = reported(c, name, 1, "lint", "success", details_url="https://ci.example/3")
    other = reported(c, name, 1, "eval:holdout", "failure")
    reported(c, name, 2, "lint", "pending")  # another version's: not listed

    r = c.get(f"/models/{seg(name)}/versions/1/checks")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["name"] for i in items] == ["eval:holdout", "lint"]
    lint = items[1]
    assert {k: lint[k] for k in ("status", "details_url", "summary", "reported_by", "reported_at")} == {
        k: third[k] for k in ("status", "details_url", "summary", "reported_by", "reported_at")}
    assert [(h["status"], h["summary"]) for h in lint["history"]] == [
        ("success", None), ("failure", "3 errors"), ("pending", None)]
    assert [h["reported_at"] for h in lint["history"]] == [
        third["reported_at"], second["reported_at"], first["reported_at"]]
    assert [h["status"] for h in items[0]["history"]] == [other["status"]]
    assert [i["status"] for i in c.get(f"/models/{seg(name)}/versions/2/checks").json()["items"]] == ["pending"]


def test_a_version_without_checks_lists_none(c: httpx.Client) -> None:
    name = create_model(c, "chknone")
    register(c, name)
    r = c.get(f"/models/{seg(name)}/versions/1/checks")
    assert (r.status_code, r.json()) == (200, {"items": []})


def test_each_report_is_audited_and_evented(c: httpx.Client) -> None:
    name = create_model(c, "chkaudit")
    register(c, name)
    first = reported(c, name, 1, "ci", "pending")
    second = reported(c, name, 1, "ci", "success", details_url="https://ci.example/1", summary="ok")

    entries = [e for e in audit(c, name) if e["action"] == "model_version.check_reported"]
    assert [(e["version"], e["before"], e["after"]) for e in entries] == [
        (1, {"name": "ci", "status": None},
         {"name": "ci", "status": "pending", "details_url": None, "summary": None}),
        (1, {"name": "ci", "status": "pending"},
         {"name": "ci", "status": "success", "details_url": "https://ci.example/1", "summary": "ok"}),
    ]
    assert {e["actor"] for e in entries} == {"admin"}
    feed = [e for e in events(c, name) if e["type"] == "model_version.check_reported"]
    assert [(e["version"], e["data"]["check_id"], e["data"]["after"]["status"]) for e in feed] == [
        (1, first["id"], "pending"), (1, second["id"], "success")]
    assert [e["request_id"] for e in feed] == [e["request_id"] for e in entries]


@pytest.mark.parametrize("body", [
    {"name": "ci", "status": "passed"},
    {"name": "ci"},
    {"status": "success"},
    {"name": "", "status": "success"},
    {"name": " ci", "status": "success"},
    {"name": "ci\n", "status": "success"},
    {"name": "c" * 201, "status": "success"},
    {"name": "ci", "status": "success", "details_url": "ftp://ci.example/1"},
    {"name": "ci", "status": "success", "details_url": "https://ci.example/a b"},
    {"name": "ci", "status": "success", "summary": "s" * 5001},
    {"name": "ci", "status": "success", "extra": 1},
], ids=["status", "no-status", "no-name", "empty-name", "leading-space", "newline", "long-name",
        "ftp-url", "space-in-url", "long-summary", "unknown-key"])
def test_a_malformed_report_is_400_and_writes_nothing(c: httpx.Client, body: dict[str, Any]) -> None:
    name = create_model(c, "chkbad")
    register(c, name)
    before = snapshot(c, name)
    assert_problem(c.post(f"/models/{seg(name)}/versions/1/checks", json=body), 400, "validation_error")
    assert snapshot(c, name) == before
    assert c.get(f"/models/{seg(name)}/versions/1/checks").json()["items"] == []


def documented_pattern(schema: str, prop: str) -> str:
    return json.loads(OPENAPI.read_text())["components"]["schemas"][schema]["properties"][prop]["pattern"]


# Characters the documented patterns allow (they exclude only C0/C1 controls, and spaces at the
# ends) that str.isprintable() would refuse: the server must take them too.
UNPRINTABLE = {"soft-hyphen": "\u00ad", "no-break-space": "\u00a0", "zero-width-space": "\u200b",
               "line-separator": "\u2028"}


@pytest.mark.parametrize("char", list(UNPRINTABLE.values()), ids=list(UNPRINTABLE))
def test_a_check_name_the_document_allows_is_accepted(c: httpx.Client, char: str) -> None:
    name = create_model(c, "chkdoc")
    register(c, name)
    check = f"ci{char}unit"
    if not re.search(documented_pattern("CheckReportRequest", "name"), check):
        pytest.fail(f"the document refuses {check!r} too")   # no disagreement: not the expected failure
    r = report(c, name, 1, check, "success")
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("char", list(UNPRINTABLE.values()), ids=list(UNPRINTABLE))
def test_a_details_url_the_document_allows_is_accepted(c: httpx.Client, char: str) -> None:
    name = create_model(c, "chkurl")
    register(c, name)
    url = f"https://ci.example/runs/{char}1"
    if not re.search(documented_pattern("CheckReportRequest", "details_url"), url):
        pytest.fail(f"the document refuses {url!r} too")   # no disagreement: not the expected failure
    r = report(c, name, 1, "ci", "success", details_url=url)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("model", "version"), [("missing", 1), (None, 2)])
def test_checks_of_an_unknown_model_or_version_are_404(c: httpx.Client, model: str | None,
                                                       version: int) -> None:
    name = create_model(c, "chk404")
    register(c, name)
    target = f"{name}-{model}" if model else name
    assert_problem(report(c, target, version, "ci", "success"), 404, "not_found")
    assert_problem(c.get(f"/models/{seg(target)}/versions/{version}/checks"), 404, "not_found")


def test_an_editor_reports_checks_and_a_viewer_only_reads_them(c: httpx.Client, who: Who) -> None:
    name = create_model(c, "chkrole")
    register(c, name)
    body = reported(who["editor"], name, 1, "ci", "success")
    assert body["reported_by"] == who.token_name["editor"]
    before = snapshot(c, name)
    assert_problem(report(who["viewer"], name, 1, "ci", "failure"), 403, "forbidden")
    assert snapshot(c, name) == before
    listed = who["viewer"].get(f"/models/{seg(name)}/versions/1/checks")
    assert [(i["name"], i["status"]) for i in listed.json()["items"]] == [("ci", "success")]


# -- policies ---------------------------------------------------------------------------------------

NO_RULES = {"metrics": {}, "required_checks": [], "required_approvals": 0, "auto_apply": True,
            "min_staging_seconds": 0, "required_fields": []}
RULES = {"metrics": {"accuracy": {"min": 0.9, "min_delta_vs_production": 0}, "latency_ms": {"max": 50}},
         "required_checks": ["ci/unit", "ci/e2e"], "required_approvals": 2, "auto_apply": False,
         "min_staging_seconds": 3600, "required_fields": ["description", "run_id"]}


def test_an_admin_sets_reads_and_deletes_a_policy(c: httpx.Client) -> None:
    name = create_model(c, "pol")
    r = c.get(f"/models/{seg(name)}/policies/production")
    assert r.status_code == 200, r.text
    assert r.json() == {"model": name, "stage": "production", "rules": NO_RULES, "source": "none",
                        "updated_at": None, "updated_by": None}

    body = set_policy(c, name, "production", **RULES)
    assert {k: body[k] for k in ("model", "stage", "source", "updated_by")} == {
        "model": name, "stage": "production", "source": "model", "updated_by": "admin"}
    assert body["rules"] == {**RULES, "metrics": {"accuracy": {"min": 0.9, "min_delta_vs_production": 0.0},
                                                  "latency_ms": {"max": 50.0}}}
    assert_utc(body["updated_at"])
    assert c.get(f"/models/{seg(name)}/policies/production").json() == body
    assert c.get(f"/models/{seg(name)}/policies/staging").json()["source"] == "none"

    r = c.delete(f"/models/{seg(name)}/policies/production")
    assert (r.status_code, r.content) == (204, b"")
    assert c.get(f"/models/{seg(name)}/policies/production").json()["source"] == "none"
    assert_problem(c.delete(f"/models/{seg(name)}/policies/production"), 404, "not_found")


def test_omitted_keys_take_their_defaults_and_empty_means_no_rules(c: httpx.Client) -> None:
    name = create_model(c, "poldef")
    body = set_policy(c, name, "staging", required_checks=["ci", "ci"])
    assert body["rules"] == {**NO_RULES, "required_checks": ["ci"]}
    body = set_policy(c, name, "staging")
    assert (body["rules"], body["source"]) == (NO_RULES, "model")


def test_only_an_admin_changes_a_policy_and_every_role_reads_it(c: httpx.Client, who: Who) -> None:
    name = create_model(c, "polrole")
    set_policy(c, name, "production", required_approvals=1)
    before = snapshot(c, name), system_head(c)
    for label in ("viewer", "editor", "stager", "rel-a"):
        assert_problem(put_policy(who[label], name, "production", {}), 403, "forbidden")
        assert_problem(who[label].delete(f"/models/{seg(name)}/policies/production"), 403, "forbidden")
        read = who[label].get(f"/models/{seg(name)}/policies/production")
        assert (read.status_code, read.json()["rules"]["required_approvals"]) == (200, 1)
    assert (snapshot(c, name), system_head(c)) == before


def test_a_policy_change_is_audited_in_the_model_chain_and_the_system_chain(c: httpx.Client) -> None:
    name = create_model(c, "polaudit")
    first = set_policy(c, name, "production", required_checks=["ci"])["rules"]
    second = set_policy(c, name, "production", required_approvals=1)["rules"]
    assert c.delete(f"/models/{seg(name)}/policies/production").status_code == 204

    changes = [(None, first), (first, second), (second, None)]
    model_entries = [e for e in audit(c, name) if e["action"] == "model.policy_changed"]
    assert [(e["before"], e["after"]) for e in model_entries] == [
        (b and {"stage": "production", "rules": b}, a and {"stage": "production", "rules": a})
        for b, a in changes]
    assert {(e["actor"], e["model"], e["version"]) for e in model_entries} == {("admin", name, None)}

    r = c.get("/audit", params={"action": "model.policy_changed", "limit": 1000})
    assert r.status_code == 200, r.text
    system = [e for e in r.json()["items"] if e["chain"] == "system"
              and name in ((e["before"] or {}).get("model"), (e["after"] or {}).get("model"))]
    assert [(e["before"], e["after"]) for e in system] == [
        (b and {"model": name, "stage": "production", "rules": b},
         a and {"model": name, "stage": "production", "rules": a}) for b, a in changes]
    assert [e["request_id"] for e in system] == [e["request_id"] for e in model_entries]

    feed = [e for e in events(c, name) if e["type"] == "model.policy_changed"]
    assert [(e["data"]["stage"], e["data"]["before"], e["data"]["after"]) for e in feed] == [
        ("production", e["before"], e["after"]) for e in model_entries]


@pytest.mark.parametrize(("stage", "rules"), [
    ("production", {"unknown": 1}),
    ("production", {"metrics": {"accuracy": {"min": 0.9, "max": 0.5}}}),
    ("production", {"metrics": {"accuracy": {}}}),
    ("production", {"metrics": {"accuracy": {"above": 1}}}),
    ("production", {"metrics": {"accuracy": {"min": "high"}}}),
    ("staging", {"min_staging_seconds": 60}),
    ("production", {"min_staging_seconds": -1}),
    ("production", {"required_approvals": 21}),
    ("production", {"required_approvals": True}),
    ("production", {"required_fields": ["tags"]}),
    ("production", {"required_checks": [" ci"]}),
    ("production", {"auto_apply": "yes"}),
    ("archived", {}),
    ("none", {}),
], ids=["unknown-key", "min-above-max", "no-bound", "unknown-bound", "text-bound", "staging-time",
        "negative-time", "too-many-approvals", "bool-approvals", "unknown-field", "bad-check-name",
        "text-auto-apply", "archived", "none"])
def test_a_malformed_policy_is_400_and_writes_nothing(c: httpx.Client, stage: str,
                                                      rules: dict[str, Any]) -> None:
    name = create_model(c, "polbad")
    before = snapshot(c, name), system_head(c)
    assert_problem(put_policy(c, name, stage, rules), 400, "validation_error")
    assert (snapshot(c, name), system_head(c)) == before
    if stage in ("staging", "production"):
        assert c.get(f"/models/{seg(name)}/policies/{stage}").json()["source"] == "none"


def test_policies_of_an_unknown_model_are_404(c: httpx.Client) -> None:
    name = f"pol-missing-{uuid.uuid4().hex[:8]}"
    assert_problem(put_policy(c, name, "production", {}), 404, "not_found")
    assert_problem(c.get(f"/models/{seg(name)}/policies/production"), 404, "not_found")
    assert_problem(c.delete(f"/models/{seg(name)}/policies/production"), 404, "not_found")


DEFAULTS = {"staging": {"required_fields": ["description"]},
            "production": {"required_checks": ["ci"], "required_approvals": 1}}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_configured_default_applies_to_models_without_a_policy_of_their_own(backend: str,
                                                                             tmp_path: Path) -> None:
    env = {"REGISTRY_DEFAULT_POLICIES": json.dumps(DEFAULTS)}
    with server_for(backend, tmp_path, extra_env=env) as srv, api_client(srv) as c:
        name = create_model(c, "dflt")
        register(c, name)
        policy = c.get(f"/models/{seg(name)}/policies/staging").json()
        assert (policy["source"], policy["rules"]) == ("default", {**NO_RULES, "required_fields": ["description"]})
        assert (policy["updated_at"], policy["updated_by"]) == (None, None)
        prod = c.get(f"/models/{seg(name)}/policies/production").json()
        assert (prod["source"], prod["rules"]["required_checks"], prod["rules"]["required_approvals"]) == (
            "default", ["ci"], 1)

        # The default is enforced: a version without a description may not enter staging.
        refused = assert_problem(transition(c, name, 1, "staging"), 422, "gate_failed")
        assert refused["failed"] == ["field:description"]

        # The model's own policy replaces the default; `{}` means no rules at all.
        assert set_policy(c, name, "staging")["source"] == "model"
        assert c.get(f"/models/{seg(name)}/policies/staging").json()["rules"] == NO_RULES
        move(c, name, 1, "staging")

        # Deleting the model's own policy brings the default back.
        assert c.delete(f"/models/{seg(name)}/policies/staging").status_code == 204
        assert c.get(f"/models/{seg(name)}/policies/staging").json()["source"] == "default"
        register(c, name)
        assert failed_names(gates(c, name, 2, "staging").json()["results"]) == ["field:description"]
        assert failed_names(gates(c, name, 1, "production").json()["results"]) == ["check:ci", "approvals"]


# -- the gates report -------------------------------------------------------------------------------


def test_the_report_lists_every_rule_after_the_stage_table(c: httpx.Client) -> None:
    name = staged(c, "gates", metrics={"accuracy": 0.8, "latency_ms": 40.0})
    set_policy(c, name, "production", metrics={"accuracy": {"min": 0.9}, "latency_ms": {"max": 50}},
               required_checks=["ci/unit", "ci/e2e"], required_fields=["description", "run_id"],
               min_staging_seconds=3600, required_approvals=1)
    reported(c, name, 1, "ci/unit", "success")
    reported(c, name, 1, "ci/e2e", "failure")

    r = gates(c, name, 1, "production")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["allowed"] is False
    assert body["transition"] == {"from_stage": "staging", "to_stage": "production", "trigger": "promote"}
    results = body["results"]
    assert [g["gate"] for g in results] == [
        "stage_table", "field:description", "field:run_id", "metric:accuracy:min", "metric:latency_ms:max",
        "check:ci/unit", "check:ci/e2e", "min_staging_time", "approvals"]
    assert failed_names(results) == ["field:description", "field:run_id", "metric:accuracy:min",
                                     "check:ci/e2e", "min_staging_time", "approvals"]
    assert results[0] == {"gate": "stage_table", "passed": True, "detail": "staging -> production by promote"}
    assert "0.8" in result(results, "metric:accuracy:min")["detail"]
    assert "failure" in result(results, "check:ci/e2e")["detail"]
    assert all(isinstance(g["detail"], str) and g["detail"] for g in results)


def test_a_move_without_rules_is_allowed_with_only_the_stage_table(c: httpx.Client) -> None:
    name = staged(c, "gatesfree")
    body = gates(c, name, 1, "production").json()
    assert body == {"allowed": True,
                    "transition": {"from_stage": "staging", "to_stage": "production", "trigger": "promote"},
                    "results": [{"gate": "stage_table", "passed": True,
                                 "detail": "staging -> production by promote"}]}


def test_a_move_the_stage_table_lacks_is_not_allowed_and_its_transition_is_409(c: httpx.Client) -> None:
    name = create_model(c, "gatesedge")
    register(c, name)
    set_policy(c, name, "production", required_checks=["ci"])
    body = gates(c, name, 1, "production").json()
    assert body["allowed"] is False
    assert body["transition"] == {"from_stage": "none", "to_stage": "production", "trigger": None}
    assert body["results"][0] == {"gate": "stage_table", "passed": False, "detail": "no move from none to production"}
    assert failed_names(body["results"]) == ["stage_table", "check:ci"]   # the rules too, all at once
    problem = assert_problem(transition(c, name, 1, "production"), 409, "invalid_transition")
    assert sorted(problem["allowed"]) == ["archived", "staging"]


def test_the_report_changes_nothing(c: httpx.Client) -> None:
    name = staged(c, "gatespure", metrics={"accuracy": 0.5})
    set_policy(c, name, "production", metrics={"accuracy": {"min": 0.9}}, required_approvals=1)
    before = snapshot(c, name), system_head(c)
    for stage in ("production", "archived", "none", "staging"):
        assert gates(c, name, 1, stage).status_code == 200
    assert (snapshot(c, name), system_head(c)) == before


def test_a_refused_transition_answers_422_with_the_reports_results(c: httpx.Client) -> None:
    name = staged(c, "gates422", metrics={"accuracy": 0.5})
    set_policy(c, name, "production", metrics={"accuracy": {"min": 0.9}}, required_checks=["ci"],
               required_fields=["run_id"])
    reported(c, name, 1, "ci", "pending")
    report_ = gates(c, name, 1, "production").json()
    before = snapshot(c, name)
    problem = assert_problem(transition(c, name, 1, "production", comment="try"), 422, "gate_failed")
    assert problem["results"] == report_["results"]
    assert problem["failed"] == failed_names(report_["results"]) == ["field:run_id", "metric:accuracy:min",
                                                                     "check:ci"]
    assert snapshot(c, name) == before


def test_reporting_the_missing_check_flips_the_gate(c: httpx.Client) -> None:
    name = staged(c, "gatesflip")
    set_policy(c, name, "production", required_checks=["ci"])
    assert failed_names(gates(c, name, 1, "production").json()["results"]) == ["check:ci"]
    reported(c, name, 1, "ci", "success")
    assert gates(c, name, 1, "production").json()["allowed"] is True
    t = move(c, name, 1, "production")["transition"]
    assert [g["gate"] for g in t["gates"]] == ["stage_table", "check:ci"]
    assert all(g["passed"] for g in t["gates"])
    # Only the latest report counts: a later failure closes the gate again for the next move.
    reported(c, name, 1, "ci", "failure")
    assert failed_names(gates(c, name, 1, "production").json()["results"]) == ["stage_table", "check:ci"]


def test_a_relative_gate_refuses_a_version_worse_than_production(c: httpx.Client) -> None:
    name = create_model(c, "gatesrel")
    for accuracy in (0.90, 0.85, 0.95):
        register(c, name, metrics={"accuracy": accuracy})
    move(c, name, 1, "staging")
    move(c, name, 1, "production")
    set_policy(c, name, "production", metrics={"accuracy": {"min_delta_vs_production": 0.0}})
    move(c, name, 2, "staging")
    move(c, name, 3, "staging")

    problem = assert_problem(transition(c, name, 2, "production"), 422, "gate_failed")
    assert problem["failed"] == ["metric:accuracy:min_delta_vs_production"]
    detail = result(problem["results"], "metric:accuracy:min_delta_vs_production")["detail"]
    assert "version 1" in detail and "-0.05" in detail
    assert version_of(c, name, 1)["stage"] == "production"
    assert move(c, name, 3, "production")["version"]["stage"] == "production"
    assert version_of(c, name, 1)["stage"] == "archived"


def test_restore_runs_the_staging_gates(c: httpx.Client) -> None:
    name = create_model(c, "gatesrestore")
    register(c, name)
    move(c, name, 1, "archived")
    set_policy(c, name, "staging", required_fields=["description"])
    report_ = gates(c, name, 1, "staging").json()
    assert report_["transition"]["trigger"] == "restore"
    assert failed_names(report_["results"]) == ["field:description"]
    assert assert_problem(transition(c, name, 1, "staging"), 422, "gate_failed")["failed"] == ["field:description"]
    assert c.patch(f"/models/{seg(name)}/versions/1", json={"description": "fixed"}).status_code == 200
    assert move(c, name, 1, "staging")["transition"]["trigger"] == "restore"


def test_archive_and_withdraw_run_no_policy(c: httpx.Client) -> None:
    name = staged(c, "gatesexit", 2)
    set_policy(c, name, "staging", required_fields=["run_id"])
    set_policy(c, name, "production", required_checks=["ci"])
    assert [g["gate"] for g in move(c, name, 1, "none")["transition"]["gates"]] == ["stage_table"]
    assert [g["gate"] for g in move(c, name, 2, "archived")["transition"]["gates"]] == ["stage_table"]


def test_time_in_staging_is_counted_from_the_stage_change(server: Server, c: httpx.Client) -> None:
    name = staged(c, "gatestime")
    set_policy(c, name, "production", min_staging_seconds=3600)
    assert failed_names(gates(c, name, 1, "production").json()["results"]) == ["min_staging_time"]
    # Back-date the version's arrival in staging by two hours.
    since = datetime.now(UTC) - timedelta(hours=2)
    assert db_execute(server, update(versions_t).where(
        versions_t.c.model_id == model_id(server, name), versions_t.c.version == 1).values(
            stage_since=since)) == 1
    results = gates(c, name, 1, "production").json()["results"]
    assert result(results, "min_staging_time")["passed"] is True
    move(c, name, 1, "production")


@pytest.mark.parametrize("params", [{}, {"to_stage": "retired"}, {"to_stage": "Production"},
                                    {"to_stage": "production", "comment": "x" * 5001}],
                         ids=["no-target", "unknown", "upper-case", "long-comment"])
def test_a_malformed_gates_query_is_400(c: httpx.Client, params: dict[str, Any]) -> None:
    name = staged(c, "gates400")
    assert_problem(c.get(f"/models/{seg(name)}/versions/1/gates", params=params), 400, "validation_error")


def test_the_gates_of_an_unknown_version_are_404_and_a_viewer_reads_them(c: httpx.Client, who: Who) -> None:
    name = staged(c, "gates404")
    assert_problem(gates(c, name, 2, "production"), 404, "not_found")
    assert_problem(gates(c, f"{name}-x", 1, "production"), 404, "not_found")
    assert gates(who["viewer"], name, 1, "production").json()["allowed"] is True
    assert_problem(gates(who["scoped-editor"], name, 1, "production"), 404, "not_found")


# -- transition requests ----------------------------------------------------------------------------


def test_an_editor_opens_a_pending_request(c: httpx.Client, who: Who) -> None:
    name = staged(c, "req")
    r = ask(who["editor"], name, 1, "production", comment="ready")
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("model", "version", "to_stage", "state", "requested_by",
                                 "requester_principal", "comment", "approvals", "decided_by",
                                 "decision_comment")} == {
        "model": name, "version": 1, "to_stage": "production", "state": "pending",
        "requested_by": who.token_name["editor"], "requester_principal": who.principal["editor"],
        "comment": "ready", "approvals": [], "decided_by": None, "decision_comment": None}
    assert body["required_approvals"] == 0   # the policy in force has no approvals rule
    assert assert_utc(body["created_at"]) == assert_utc(body["updated_at"])
    assert get_request(c, body["id"]) == body
    assert version_of(c, name, 1)["stage"] == "staging"

    (entry,) = [e for e in audit(c, name) if e["action"] == "transition_request.created"]
    assert (entry["actor"], entry["version"], entry["before"]) == (who.token_name["editor"], 1, None)
    assert entry["after"] == {"id": body["id"], "to_stage": "production", "state": "pending",
                              "requested_by": who.token_name["editor"],
                              "requester_principal": who.principal["editor"], "approved_by": []}
    (event,) = [e for e in events(c, name) if e["type"] == "transition_request.created"]
    assert (event["data"]["request"], event["data"]["comment"], event["data"]["after"]) == (
        body["id"], "ready", entry["after"])


def test_a_second_request_for_the_same_move_is_409_with_the_open_ones_id(c: httpx.Client, who: Who) -> None:
    name = staged(c, "reqdup")
    first = asked(who["editor"], name, 1, "production")
    before = snapshot(c, name)
    problem = assert_problem(ask(who["editor2"], name, 1, "production"), 409, "conflict")
    assert problem["request_id"] == first["id"]
    assert snapshot(c, name) == before
    # Another move of the same version is another request.
    assert asked(who["editor"], name, 1, "none")["to_stage"] == "none"


def test_a_request_for_a_move_the_stage_table_lacks_is_409_invalid_transition(c: httpx.Client,
                                                                              who: Who) -> None:
    name = create_model(c, "reqedge")
    register(c, name)
    before = snapshot(c, name)
    problem = assert_problem(ask(who["editor"], name, 1, "production"), 409, "invalid_transition")
    assert sorted(problem["allowed"]) == ["archived", "staging"]
    assert snapshot(c, name) == before


@pytest.mark.parametrize("body", [{}, {"to_stage": "live"}, {"to_stage": "production", "comment": "c" * 5001},
                                  {"to_stage": "production", "approvers": 2}],
                         ids=["no-target", "unknown-stage", "long-comment", "unknown-key"])
def test_a_malformed_request_is_400(c: httpx.Client, body: dict[str, Any]) -> None:
    name = staged(c, "req400")
    before = snapshot(c, name)
    r = c.post(f"/models/{seg(name)}/versions/1/transition-requests", json=body)
    assert_problem(r, 400, "validation_error")
    assert snapshot(c, name) == before


def test_a_viewer_cannot_request_and_unknown_targets_are_404(c: httpx.Client, who: Who) -> None:
    name = staged(c, "reqrole")
    assert_problem(ask(who["viewer"], name, 1, "production"), 403, "forbidden")
    assert_problem(ask(who["scoped-editor"], name, 1, "production"), 404, "not_found")
    assert_problem(ask(c, name, 2, "production"), 404, "not_found")
    assert_problem(ask(c, f"{name}-x", 1, "production"), 404, "not_found")
    assert [e for e in events(c, name) if e["type"].startswith("transition_request.")] == []


def test_the_list_filters_by_model_state_and_requester_newest_first(c: httpx.Client, who: Who) -> None:
    a, b = staged(c, "reqlista", 3), staged(c, "reqlistb")
    r1 = asked(who["editor"], a, 1, "production")
    r2 = asked(who["editor2"], a, 2, "production")
    r3 = asked(who["editor"], a, 3, "production")
    rb = asked(who["editor"], b, 1, "production")
    decided(c, r2["id"], "cancel")

    def ids(**params: Any) -> list[int]:
        r = c.get("/transition-requests", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    assert ids(model=a) == [r3["id"], r2["id"], r1["id"]]
    assert ids(model=a, state="pending") == [r3["id"], r1["id"]]
    assert ids(model=a, state="cancelled") == [r2["id"]]
    assert ids(model=a, requester=who.principal["editor"]) == [r3["id"], r1["id"]]
    assert ids(requester=who.principal["editor"], state="pending")[:3] == [rb["id"], r3["id"], r1["id"]]
    assert ids(model=b, state="approved") == []
    everything = ids()
    assert everything == sorted(everything, reverse=True)
    assert {r1["id"], r2["id"], r3["id"], rb["id"]} <= set(everything)
    listed = c.get("/transition-requests", params={"model": a, "limit": 1}).json()["items"][0]
    assert listed == get_request(c, r3["id"])


def test_the_list_pages_with_cursors(c: httpx.Client, who: Who) -> None:
    name = staged(c, "reqpages", 5)
    made = [asked(who["editor"], name, v, "production")["id"] for v in range(1, 6)]
    found = pages(c, "/transition-requests", limit=2, model=name)
    assert [len(p) for p in found] == [2, 2, 1]
    assert [item["id"] for p in found for item in p] == made[::-1]


def test_the_list_documents_the_404_for_a_model_outside_the_scope() -> None:
    operation = json.loads(OPENAPI.read_text())["paths"]["/api/v1/transition-requests"]["get"]
    assert "404" in operation["responses"]


@pytest.mark.parametrize("params", [{"state": "open"}, {"limit": 0}, {"limit": 1001},
                                    {"cursor": "not-a-cursor"}],
                         ids=["state", "limit-0", "limit-1001", "cursor"])
def test_a_malformed_list_query_is_400(c: httpx.Client, params: dict[str, Any]) -> None:
    assert_problem(c.get("/transition-requests", params=params), 400, "validation_error")


def test_a_scoped_token_sees_only_the_requests_of_its_models(c: httpx.Client, who: Who) -> None:
    inside = staged(c, f"gates-scoped-{uuid.uuid4().hex[:6]}")
    outside = staged(c, "reqout")
    mine = asked(who["scoped-editor"], inside, 1, "production")
    theirs = asked(who["editor"], outside, 1, "production")

    seen = [item for p in pages(who["scoped-releaser"], "/transition-requests", limit=1000) for item in p]
    assert mine["id"] in {r["id"] for r in seen}
    assert all(fnmatchcase(r["model"], SCOPED) for r in seen), {r["model"] for r in seen}
    assert_problem(who["scoped-releaser"].get("/transition-requests", params={"model": outside}), 404,
                   "not_found")
    assert_problem(who["scoped-releaser"].get(f"/transition-requests/{theirs['id']}"), 404, "not_found")
    assert get_request(who["scoped-releaser"], mine["id"])["model"] == inside
    for decision in ("approve", "reject", "cancel"):
        assert_problem(decide(who["scoped-releaser"], theirs["id"], decision), 404, "not_found")
    assert get_request(c, theirs["id"])["state"] == "pending"


@pytest.mark.parametrize(("request_id", "status"), [("0", 400), ("-1", 400), ("abc", 404),
                                                    (str(2**53 - 1), 404), ("99999999", 404)])
def test_an_unknown_or_malformed_request_id(c: httpx.Client, request_id: str, status: int) -> None:
    code = "not_found" if status == 404 else "validation_error"
    assert_problem(c.get(f"/transition-requests/{request_id}"), status, code)
    for decision in ("approve", "reject", "cancel"):
        assert_problem(c.post(f"/transition-requests/{request_id}/{decision}", json={}), status, code)


# -- approvals --------------------------------------------------------------------------------------


def test_two_releaser_principals_other_than_the_requesters_apply_the_move(c: httpx.Client, who: Who) -> None:
    name = staged(c, "quorum")
    set_policy(c, name, "production", required_approvals=2)
    request = asked(who["editor"], name, 1, "production", comment="ship v1")

    assert request["required_approvals"] == 2
    first = decided(who["rel-a"], request["id"], "approve", "lgtm")
    assert (first["applied"], first["version"], first["request"]["state"]) == (False, None, "pending")
    assert first["request"]["required_approvals"] == 2
    assert [(a["principal"], a["actor"], a["comment"], a["voided_at"]) for a in first["request"]["approvals"]] == [
        (who.principal["rel-a"], who.token_name["rel-a"], "lgtm", None)]
    assert result(first["results"], "approvals") == {
        "gate": "approvals", "passed": False, "detail": f"1 of 2 required approvals on request {request['id']}"}
    assert version_of(c, name, 1)["stage"] == "staging"

    second = decided(who["rel-b"], request["id"], "approve")
    assert second["applied"] is True
    assert (second["version"]["version"], second["version"]["stage"]) == (1, "production")
    assert second["request"]["state"] == "applied"
    assert [a["principal"] for a in second["request"]["approvals"]] == [who.principal["rel-a"],
                                                                        who.principal["rel-b"]]
    assert all(g["passed"] for g in second["results"])
    assert [g["gate"] for g in second["results"]] == ["stage_table", "approvals"]
    assert version_of(c, name, 1) == second["version"]
    assert get_request(c, request["id"]) == second["request"]


def test_the_applied_move_is_audited_with_its_requester_and_approvers(c: httpx.Client, who: Who) -> None:
    name = staged(c, "quorumaudit")
    set_policy(c, name, "production", required_approvals=2)
    request = asked(who["editor"], name, 1, "production", comment="ship")
    decided(who["rel-a"], request["id"], "approve")
    decided(who["rel-b"], request["id"], "approve")

    entry = [e for e in audit(c, name) if e["action"] == "model_version.stage_changed"][-1]
    assert entry["actor"] == who.token_name["rel-b"]
    assert entry["before"] == {"stage": "staging"}
    assert entry["after"] == {"stage": "production", "trigger": "promote", "comment": "ship",
                              "request": request["id"], "requested_by": who.principal["editor"],
                              "approved_by": [who.principal["rel-a"], who.principal["rel-b"]]}
    assert types(c, name, "transition_request.") == [
        "transition_request.created", "transition_request.approved", "transition_request.approved",
        "transition_request.applied"]
    feed = events(c, name)
    approved = [e for e in feed if e["type"] == "transition_request.approved"]
    assert [e["data"]["quorum"] for e in approved] == [False, True]
    assert [e["actor"] for e in approved] == [who.token_name["rel-a"], who.token_name["rel-b"]]
    (change,) = [e for e in feed
                 if e["type"] == "model_version.stage_changed" and e["data"]["to_stage"] == "production"]
    assert (change["data"]["request"], change["data"]["requested_by"], change["data"]["approved_by"]) == (
        request["id"], who.principal["editor"], [who.principal["rel-a"], who.principal["rel-b"]])
    assert [g["gate"] for g in change["data"]["gates"]] == ["stage_table", "approvals"]
    # The approval, the request applied and the move: one commit, in one event sequence.
    last = feed[-3:]
    assert last[0]["type"] == "transition_request.approved"
    assert sorted(e["type"] for e in last[1:]) == ["model_version.stage_changed", "transition_request.applied"]
    assert len({e["request_id"] for e in last}) == 1


def test_the_requesters_principal_may_not_approve_even_with_another_token(c: httpx.Client, who: Who) -> None:
    name = staged(c, "selfapprove")
    set_policy(c, name, "production", required_approvals=1)
    request = asked(who["editor"], name, 1, "production")
    before = snapshot(c, name)
    problem = assert_problem(decide(who["editor-as-releaser"], request["id"], "approve"), 403, "forbidden")
    assert "requester" in problem["detail"]
    assert_problem(decide(who["editor"], request["id"], "approve"), 403, "forbidden")
    assert snapshot(c, name) == before
    assert get_request(c, request["id"])["approvals"] == []


def test_an_admin_requester_may_not_approve_its_own_request(c: httpx.Client) -> None:
    name = staged(c, "selfadmin")
    request = asked(c, name, 1, "production")
    assert_problem(decide(c, request["id"], "approve"), 403, "forbidden")


def test_only_releasers_approve_or_reject(c: httpx.Client, who: Who) -> None:
    name = staged(c, "approverole")
    set_policy(c, name, "production", required_approvals=1)
    request = asked(who["editor"], name, 1, "production")
    before = snapshot(c, name)
    for label in ("viewer", "editor2", "stager"):
        for decision in ("approve", "reject"):
            assert_problem(decide(who[label], request["id"], decision), 403, "forbidden")
    assert snapshot(c, name) == before


def test_the_same_principal_approving_twice_is_409(c: httpx.Client, who: Who) -> None:
    name = staged(c, "twice")
    set_policy(c, name, "production", required_approvals=2)
    request = asked(who["editor"], name, 1, "production")
    decided(who["rel-a"], request["id"], "approve")
    before = snapshot(c, name)
    assert_problem(decide(who["rel-a-again"], request["id"], "approve"), 409, "conflict")
    assert_problem(decide(who["rel-a"], request["id"], "approve"), 409, "conflict")
    assert snapshot(c, name) == before
    assert len(get_request(c, request["id"])["approvals"]) == 1


def test_without_auto_apply_the_requesters_own_transition_consumes_the_approval(c: httpx.Client,
                                                                                who: Who) -> None:
    name = staged(c, "manual")
    set_policy(c, name, "production", required_approvals=1, auto_apply=False)
    request = asked(who["editor"], name, 1, "production", comment="when ready")
    approved = decided(who["rel-a"], request["id"], "approve")
    assert (approved["applied"], approved["version"], approved["request"]["state"]) == (False, None, "approved")
    assert all(g["passed"] for g in approved["results"])
    assert version_of(c, name, 1)["stage"] == "staging"
    # A further approval is recorded, and still applies nothing.
    further = decided(who["rel-b"], request["id"], "approve")
    assert (further["applied"], further["request"]["state"]) == (False, "approved")
    assert version_of(c, name, 1)["stage"] == "staging"

    # The editor, below the releaser role a promotion needs, may make this move: its request is approved.
    r = transition(who["editor"], name, 1, "production", comment="now")
    assert r.status_code == 200, r.text
    t = r.json()["transition"]
    assert (t["request"], t["actor"], t["to_stage"]) == (request["id"], who.token_name["editor"], "production")
    assert result(t["gates"], "approvals")["passed"] is True
    assert get_request(c, request["id"])["state"] == "applied"
    entry = [e for e in audit(c, name) if e["action"] == "model_version.stage_changed"][-1]
    assert (entry["after"]["requested_by"], entry["after"]["approved_by"]) == (
        who.principal["editor"], [who.principal["rel-a"], who.principal["rel-b"]])


def test_an_editor_may_not_promote_when_the_policy_asks_for_no_approvals(c: httpx.Client, who: Who) -> None:
    name = staged(c, "noapprovals")
    before = snapshot(c, name)
    assert_problem(transition(who["editor"], name, 1, "production"), 403, "forbidden")
    assert_problem(transition(who["stager"], name, 1, "production"), 403, "forbidden")
    assert snapshot(c, name) == before


def test_an_editor_without_an_approved_request_fails_the_approvals_gate(c: httpx.Client, who: Who) -> None:
    name = staged(c, "unapproved")
    set_policy(c, name, "production", required_approvals=1)
    problem = assert_problem(transition(who["editor"], name, 1, "production"), 422, "gate_failed")
    assert problem["failed"] == ["approvals"]
    request = asked(who["editor"], name, 1, "production")
    problem = assert_problem(transition(who["editor"], name, 1, "production"), 422, "gate_failed")
    assert result(problem["results"], "approvals")["detail"] == f"0 of 1 required approvals on request {request['id']}"


def test_the_approvals_gate_counts_only_the_callers_own_request(c: httpx.Client, who: Who) -> None:
    name = staged(c, "ownrequest")
    set_policy(c, name, "production", required_approvals=1, auto_apply=False)
    request = asked(who["editor"], name, 1, "production")
    decided(who["rel-a"], request["id"], "approve")

    other = gates(who["editor2"], name, 1, "production").json()
    assert result(other["results"], "approvals")["passed"] is False
    mine = gates(who["editor"], name, 1, "production").json()
    assert (mine["allowed"], result(mine["results"], "approvals")["detail"]) == (
        True, f"1 of 1 required approvals on request {request['id']}")
    before = snapshot(c, name)
    assert assert_problem(transition(who["editor2"], name, 1, "production"), 422,
                          "gate_failed")["failed"] == ["approvals"]
    assert snapshot(c, name) == before
    assert get_request(c, request["id"])["state"] == "approved"


def test_a_quorum_with_a_failing_gate_approves_without_applying(c: httpx.Client, who: Who) -> None:
    name = staged(c, "quorumfail", metrics={"accuracy": 0.5})
    set_policy(c, name, "production", required_approvals=1, metrics={"accuracy": {"min": 0.9}})
    request = asked(who["editor"], name, 1, "production")
    body = decided(who["rel-a"], request["id"], "approve")
    assert (body["applied"], body["version"], body["request"]["state"]) == (False, None, "approved")
    assert failed_names(body["results"]) == ["metric:accuracy:min"]
    assert result(body["results"], "approvals")["passed"] is True
    assert version_of(c, name, 1)["stage"] == "staging"
    assert "transition_request.applied" not in types(c, name)


def test_a_check_status_change_voids_the_approvals(c: httpx.Client, who: Who) -> None:
    name = staged(c, "void")
    set_policy(c, name, "production", required_approvals=2, required_checks=["ci"])
    reported(c, name, 1, "ci", "pending")
    request = asked(who["editor"], name, 1, "production")
    decided(who["rel-a"], request["id"], "approve")

    reported(c, name, 1, "ci", "pending")   # the same status: no change, the approval stands
    assert [a["voided_at"] for a in get_request(c, request["id"])["approvals"]] == [None]
    assert "transition_request.approvals_voided" not in types(c, name)

    reported(c, name, 1, "ci", "success")   # a change of the version's checks
    after = get_request(c, request["id"])
    assert after["state"] == "pending"
    (voided,) = after["approvals"]
    assert voided["principal"] == who.principal["rel-a"] and assert_utc(voided["voided_at"])
    (event,) = [e for e in events(c, name) if e["type"] == "transition_request.approvals_voided"]
    assert (event["data"]["request"], event["data"]["check"]) == (request["id"], "ci")
    assert (event["data"]["before"]["approved_by"], event["data"]["after"]["approved_by"]) == (
        [who.principal["rel-a"]], [])

    # A voided approval no longer counts: the same principal approves again, a second completes it.
    assert decided(who["rel-a"], request["id"], "approve")["request"]["state"] == "pending"
    applied = decided(who["rel-b"], request["id"], "approve")
    assert applied["applied"] is True and applied["version"]["stage"] == "production"
    entry = [e for e in audit(c, name) if e["action"] == "model_version.stage_changed"][-1]
    assert entry["after"]["approved_by"] == [who.principal["rel-a"], who.principal["rel-b"]]


def test_a_new_check_name_voids_an_approved_request_too(c: httpx.Client, who: Who) -> None:
    name = staged(c, "voidnew")
    set_policy(c, name, "production", required_approvals=1, auto_apply=False)
    request = asked(who["editor"], name, 1, "production")
    assert decided(who["rel-a"], request["id"], "approve")["request"]["state"] == "approved"
    reported(c, name, 1, "security-scan", "failure")
    assert get_request(c, request["id"])["state"] == "pending"
    assert_problem(transition(who["editor"], name, 1, "production"), 422, "gate_failed")


def test_a_releaser_rejects_an_open_request(c: httpx.Client, who: Who) -> None:
    name = staged(c, "reject")
    set_policy(c, name, "production", required_approvals=2)
    request = asked(who["editor"], name, 1, "production")
    decided(who["rel-a"], request["id"], "approve")
    body = decided(who["rel-b"], request["id"], "reject", "not this week")
    assert (body["applied"], body["results"], body["version"]) == (False, [], None)
    assert {k: body["request"][k] for k in ("state", "decided_by", "decision_comment")} == {
        "state": "rejected", "decided_by": who.token_name["rel-b"], "decision_comment": "not this week"}
    assert get_request(c, request["id"]) == body["request"]
    (event,) = [e for e in events(c, name) if e["type"] == "transition_request.rejected"]
    assert (event["actor"], event["data"]["comment"], event["data"]["after"]["state"]) == (
        who.token_name["rel-b"], "not this week", "rejected")
    assert version_of(c, name, 1)["stage"] == "staging"
    # A rejected request is closed: a new one for the same move may be opened.
    assert asked(who["editor"], name, 1, "production")["id"] != request["id"]


def test_a_requester_or_an_admin_cancels_and_nobody_else(c: httpx.Client, who: Who) -> None:
    name = staged(c, "cancel", 3)
    mine = asked(who["editor"], name, 1, "production")
    before = snapshot(c, name)
    for label in ("editor2", "rel-a", "stager", "viewer"):
        assert_problem(decide(who[label], mine["id"], "cancel"), 403, "forbidden")
    assert snapshot(c, name) == before

    body = decided(who["editor"], mine["id"], "cancel", "changed my mind")
    assert {k: body["request"][k] for k in ("state", "decided_by", "decision_comment")} == {
        "state": "cancelled", "decided_by": who.token_name["editor"], "decision_comment": "changed my mind"}
    # Another token of the requester's principal may cancel too, and so may an admin.
    second = asked(who["editor"], name, 2, "production")
    assert decided(who["editor-as-releaser"], second["id"], "cancel")["request"]["state"] == "cancelled"
    third = asked(who["editor"], name, 3, "production")
    assert decided(c, third["id"], "cancel")["request"]["decided_by"] == "admin"
    assert types(c, name, "transition_request.") == ["transition_request.created", "transition_request.cancelled"] * 3


@pytest.mark.parametrize("closing", ["reject", "cancel", "apply"])
def test_a_closed_request_takes_no_more_decisions(c: httpx.Client, who: Who, closing: str) -> None:
    name = staged(c, f"closed{closing}")
    set_policy(c, name, "production", required_approvals=1)
    request = asked(who["editor"], name, 1, "production")
    if closing == "apply":
        assert decided(who["rel-a"], request["id"], "approve")["applied"] is True
    else:
        decided(c, request["id"], closing)
    before = snapshot(c, name)
    for label, decision in (("rel-b", "approve"), ("rel-b", "reject"), ("editor", "cancel")):
        problem = assert_problem(decide(who[label], request["id"], decision), 409, "conflict")
        assert str(request["id"]) in problem["detail"]
    assert snapshot(c, name) == before


def test_a_direct_transition_closes_the_open_requests_for_that_move(c: httpx.Client, who: Who) -> None:
    name = staged(c, "direct")
    request = asked(who["editor"], name, 1, "production")
    t = move(c, name, 1, "production")["transition"]
    assert t["request"] is None
    closed = get_request(c, request["id"])
    assert (closed["state"], closed["decided_by"]) == ("applied", "admin")


def test_a_move_cancels_the_open_requests_for_the_stage_the_version_left(c: httpx.Client,
                                                                         who: Who) -> None:
    name = staged(c, "leftstage")
    set_policy(c, name, "production", required_approvals=2)
    request = asked(who["editor"], name, 1, "production")
    decided(who["rel-a"], request["id"], "approve")
    move(c, name, 1, "archived")
    closed = get_request(c, request["id"])
    assert (closed["state"], closed["decided_by"]) == ("cancelled", "admin")
    assert "left the stage" in closed["decision_comment"]
    (event,) = [e for e in events(c, name) if e["type"] == "transition_request.cancelled"]
    assert (event["data"]["request"], event["data"]["after"]["state"]) == (request["id"], "cancelled")
    # Back in staging, the old approval carries nothing.
    move(c, name, 1, "staging")
    report_ = gates(who["editor"], name, 1, "production").json()
    assert result(report_["results"], "approvals")["passed"] is False
    assert asked(who["editor"], name, 1, "production")["approvals"] == []


def test_the_archived_incumbents_request_to_archive_it_is_applied(c: httpx.Client, who: Who) -> None:
    name = staged(c, "incumbent", 2)
    move(c, name, 1, "production")
    retire = asked(who["editor"], name, 1, "archived")
    move(c, name, 2, "production")
    closed = get_request(c, retire["id"])
    assert (closed["state"], closed["decided_by"]) == ("applied", "admin")
    assert version_of(c, name, 1)["stage"] == "archived"


# -- rollback ---------------------------------------------------------------------------------------


def replaced(c: httpx.Client, prefix: str) -> str:
    """v1 was in production, v2 replaced it (v1 archived)."""
    name = create_model(c, prefix)
    register(c, name, 2)
    for v in (1, 2):
        move(c, name, v, "staging")
        move(c, name, v, "production")
    return name


def test_rollback_restores_the_previous_production_version(c: httpx.Client, who: Who) -> None:
    name = replaced(c, "rb")
    r = rollback(who["rel-a"], name, comment="v2 misbehaves")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["version"]["version"], body["version"]["stage"]) == (1, "production")
    t = body["transition"]
    assert {k: t[k] for k in ("from_stage", "to_stage", "trigger", "archived", "comment", "actor")} == {
        "from_stage": "archived", "to_stage": "production", "trigger": "rollback", "archived": [2],
        "comment": "v2 misbehaves", "actor": who.token_name["rel-a"]}
    assert [g["gate"] for g in t["gates"]] == ["stage_table", "previous_production", "comment"]
    assert r.headers["etag"] == body["version"]["etag"]
    assert (version_of(c, name, 1)["stage"], version_of(c, name, 2)["stage"]) == ("production", "archived")
    changes = [e for e in events(c, name) if e["type"] == "model_version.stage_changed"][-2:]
    assert [(e["version"], e["data"]["to_stage"], e["data"]["trigger"]) for e in changes] == [
        (2, "archived", "archive"), (1, "production", "rollback")]
    # v2 left production by a rollback, so a second rollback does not bring it back (no flip-flop):
    # there is no step further back, so it is refused and nothing changes.
    before = snapshot(c, name)
    problem = assert_problem(rollback(c, name, comment="v1 is worse"), 422, "gate_failed")
    assert problem["failed"] == ["previous_production"]
    assert snapshot(c, name) == before


def test_rollback_skips_metric_and_check_gates(c: httpx.Client) -> None:
    name = replaced(c, "rbskip")
    set_policy(c, name, "production", required_checks=["ci"], metrics={"accuracy": {"min": 0.99}},
               required_approvals=3)
    r = rollback(c, name, comment="now")
    assert r.status_code == 200, r.text
    assert [g["gate"] for g in r.json()["transition"]["gates"]] == ["stage_table", "previous_production", "comment"]


@pytest.mark.parametrize("body", [{}, {"comment": ""}, {"comment": "   "}], ids=["none", "empty", "blank"])
def test_rollback_without_a_comment_is_422(c: httpx.Client, body: dict[str, Any]) -> None:
    name = replaced(c, "rbcomment")
    before = snapshot(c, name)
    problem = assert_problem(rollback(c, name, **body), 422, "gate_failed")
    assert problem["failed"] == ["comment"]
    assert [g["gate"] for g in problem["results"]] == ["stage_table", "previous_production", "comment"]
    assert snapshot(c, name) == before


def test_rollback_without_a_previous_production_version_is_422(c: httpx.Client) -> None:
    name = staged(c, "rbnone")
    move(c, name, 1, "production")
    before = snapshot(c, name)
    problem = assert_problem(rollback(c, name, comment="undo"), 422, "gate_failed")
    assert problem["failed"] == ["previous_production"]
    assert snapshot(c, name) == before


def test_rollback_with_a_stale_expected_production_version_is_412(c: httpx.Client) -> None:
    name = replaced(c, "rbstale")
    before = snapshot(c, name)
    assert_problem(rollback(c, name, comment="undo", expected_production_version=1), 412, "precondition_failed")
    assert_problem(rollback(c, name, comment="undo", expected_production_version=None), 412,
                   "precondition_failed")
    assert snapshot(c, name) == before
    r = rollback(c, name, comment="undo", expected_production_version=2)
    assert r.status_code == 200, r.text
    assert r.json()["version"]["version"] == 1


def test_only_a_releaser_rolls_back(c: httpx.Client, who: Who) -> None:
    name = replaced(c, "rbrole")
    before = snapshot(c, name)
    for label in ("viewer", "editor", "stager"):
        assert_problem(rollback(who[label], name, comment="undo"), 403, "forbidden")
    assert_problem(rollback(who["scoped-releaser"], name, comment="undo"), 404, "not_found")
    assert snapshot(c, name) == before
    assert_problem(rollback(c, f"{name}-x", comment="undo"), 404, "not_found")


# -- lineage ----------------------------------------------------------------------------------------


def lineage_events(c: httpx.Client, name: str, version: int, count: int,
                   timeout: float = 20.0) -> list[dict[str, Any]]:
    """The version's lineage events once there are ``count`` (the relay builds them after the commit)."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/models/{seg(name)}/versions/{version}/lineage")
        assert r.status_code == 200, r.text
        found = r.json()["events"]
        if len(found) >= count:
            assert len(found) == count, [e["job"]["name"] for e in found]
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} lineage events"
        time.sleep(0.05)


def test_stage_change_lineage_carries_the_gate_results_and_the_approvals(c: httpx.Client, who: Who) -> None:
    name = create_model(c, "gateslin")
    register(c, name, metrics={"accuracy": 0.95})
    set_policy(c, name, "staging", metrics={"accuracy": {"min": 0.9}})
    set_policy(c, name, "production", required_checks=["ci"], required_approvals=1)
    submitted = move(c, name, 1, "staging")["transition"]
    reported(c, name, 1, "ci", "success")
    request = asked(who["editor"], name, 1, "production")
    promoted = decided(who["rel-a"], request["id"], "approve")
    assert promoted["applied"] is True

    registration, submit, promote = lineage_events(c, name, 1, 3)
    for event in (registration, submit, promote):
        validate_run_event(event)
    facet = submit["run"]["facets"]["modelRegistry"]
    assert facet["gates"] == submitted["gates"]
    assert [g["gate"] for g in facet["gates"]] == ["stage_table", "metric:accuracy:min"]
    assert facet.get("transitionRequest") is None and facet.get("approvedBy", []) == []
    facet = promote["run"]["facets"]["modelRegistry"]
    assert facet["gates"] == promoted["results"]
    assert [g["gate"] for g in facet["gates"]] == ["stage_table", "check:ci", "approvals"]
    assert all(g["passed"] for g in facet["gates"])
    assert (facet["transitionRequest"], facet["approvedBy"]) == (request["id"], [who.principal["rel-a"]])
