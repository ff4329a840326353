"""The web pages over HTTP, on both backends, against a real ``serve`` process: sign-in and its
cookie, sign-out and revocation, CSRF and origin checks, the Content-Security-Policy, the same
permissions as the API (a viewer sees no buttons and a forged POST is refused, changing nothing),
and what the forms write (requests, approvals, comments: audited, with the signed-in actor).
The browser tests (tests/ui) drive the same pages in Chromium."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from registry.api.ui.security import CSP, cookie_header
from tests.api.helpers import api_client, create_model, register, seg
from tests.support import Server

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


class Page:
    """A browser-less visitor of the pages: a cookie jar and the last CSRF token seen."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30.0, follow_redirects=False)
        self.csrf = ""

    def get(self, path: str, **kw: Any) -> httpx.Response:
        r = self.http.get(path, **kw)
        found = CSRF.search(r.text)
        if found:
            self.csrf = found.group(1)
        return r

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        form = {"_csrf": self.csrf if csrf is None else csrf, **(data or {})}
        return self.http.post(path, data=form, headers={"Origin": self.server.url, **(headers or {})})

    def sign_in(self, token: str) -> httpx.Response:
        self.get("/ui/login")
        return self.post("/ui/login", {"token": token, "next": "/ui"})

    def close(self) -> None:
        self.http.close()


def token(c: httpx.Client, role: str, principal: str | None = None) -> str:
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    r = c.post("/tokens", json={"name": name, "role": role, "principal": principal or name})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def c(server: Server) -> Iterator[httpx.Client]:
    with api_client(server) as client:
        yield client


@pytest.fixture
def visitor(server: Server) -> Iterator[Page]:
    page = Page(server)
    yield page
    page.close()


def signed_in(server: Server, secret: str) -> Page:
    page = Page(server)
    r = page.sign_in(secret)
    assert r.status_code == 303 and r.headers["location"] == "/ui", r.text
    return page


def audit_actions(c: httpx.Client, name: str) -> list[tuple[str, str]]:
    r = c.get("/audit", params={"model": name, "limit": 1000})
    assert r.status_code == 200, r.text
    return [(e["action"], e["actor"]) for e in r.json()["items"]]


class Markup(HTMLParser):
    """What a page is made of, for the CSP and permission checks."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.style_elements = 0
        self.style_attributes: list[str] = []
        self.handlers: list[str] = []
        self.forms: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
            self._in_script = "src" not in a
        if tag == "style":
            self.style_elements += 1
        if "style" in a:
            self.style_attributes.append(tag)
        self.handlers += [k for k in a if k.startswith("on")]
        if tag == "form":
            self.forms.append(a.get("action") or "")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


# -- sign-in, cookie, sign-out ---------------------------------------------------------------------


def test_the_front_door_and_approvals_lead_to_the_pages_and_to_sign_in(server: Server, visitor: Page) -> None:
    assert visitor.get("/").headers["location"] == "/ui"
    assert visitor.get("/approvals").headers["location"] == "/ui/approvals"
    r = visitor.get("/ui/models/fraud?offset=5")
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Fmodels%2Ffraud%3Foffset%3D5"
    login = visitor.get("/ui/login")
    assert login.status_code == 200 and 'type="password"' in login.text
    assert 'for="token"' in login.text and 'id="token"' in login.text


def test_a_token_is_exchanged_for_an_httponly_strict_cookie_that_expires(server: Server, c: httpx.Client) -> None:
    page = Page(server)
    page.get("/ui/login")
    r = page.post("/ui/login", {"token": token(c, "viewer"), "next": "/ui/audit"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/audit"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("registry_session=mrs_"), cookie
    attributes = {p.strip().split("=")[0].lower(): p.strip() for p in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= set(attributes), cookie
    assert attributes["samesite"] == "SameSite=Strict" and attributes["path"] == "Path=/ui"
    assert 0 < int(attributes["max-age"].split("=")[1]) <= 8 * 3600
    assert "secure" not in attributes  # plain http on loopback: a Secure cookie would never come back
    assert "mrt_" not in cookie  # the API token never reaches the browser's cookie jar
    assert page.get("/ui/audit").status_code == 200
    page.close()


def test_the_cookie_is_secure_when_the_page_was_reached_over_https() -> None:
    https = cookie_header("registry_session", "mrs_x", {"scheme": "https"}, max_age=60)
    assert "; Secure" in https and "HttpOnly" in https and "SameSite=Strict" in https
    assert "Secure" not in cookie_header("registry_session", "mrs_x", {"scheme": "http"}, max_age=60)


def test_a_wrong_token_opens_no_session(server: Server, visitor: Page) -> None:
    visitor.get("/ui/login")
    r = visitor.post("/ui/login", {"token": "mrt_not-a-token"})
    assert r.status_code == 401 and "unknown, revoked or expired" in r.text
    assert "registry_session" not in r.headers.get("set-cookie", "")
    assert visitor.get("/ui").status_code == 303


def test_sign_in_refuses_a_form_from_another_site(server: Server, c: httpx.Client, visitor: Page) -> None:
    visitor.get("/ui/login")
    secret = token(c, "viewer")
    assert visitor.post("/ui/login", {"token": secret}, csrf="forged").status_code == 403
    assert visitor.post("/ui/login", {"token": secret},
                        headers={"Origin": "https://evil.example"}).status_code == 403
    assert visitor.get("/ui").status_code == 303  # still signed out


def test_sign_out_ends_the_session_for_good(server: Server, c: httpx.Client) -> None:
    page = signed_in(server, token(c, "viewer"))
    stolen = page.http.cookies["registry_session"]
    page.get("/ui")
    r = page.post("/ui/logout")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert "Max-Age=0" in r.headers["set-cookie"]
    replay = httpx.get(server.url + "/ui", cookies={"registry_session": stolen})
    assert replay.status_code == 303  # the copied cookie is dead too: the session row is gone
    page.close()


def test_revoking_the_token_ends_its_sessions(server: Server, c: httpx.Client) -> None:
    r = c.post("/tokens", json={"name": f"rev-{uuid.uuid4().hex[:6]}", "role": "viewer"})
    page = signed_in(server, r.json()["token"])
    assert page.get("/ui").status_code == 200
    assert c.delete(f"/tokens/{r.json()['id']}").status_code == 204
    deadline = time.monotonic() + 5
    while page.get("/ui").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert page.get("/ui").status_code == 303
    page.close()


# -- CSP, CSRF, permissions ---------------------------------------------------------------------------


def test_every_page_has_a_csp_without_inline_script_and_obeys_it(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "ui-csp", description="<script>alert(1)</script>")
    register(c, name, 1, metrics={"auc": 0.9}, run_id="r-1",
             inputs=[{"namespace": "s3://d", "name": "t<b>x</b>"}])
    page = signed_in(server, server.token)
    for path in ("/ui", f"/ui/models/{seg(name)}", f"/ui/models/{seg(name)}/versions/1", "/ui/approvals",
                 "/ui/audit", "/ui/webhooks"):
        r = page.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert r.headers["content-security-policy"] == CSP
        assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP and "script-src 'self'" in CSP
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        markup = Markup(r.text)
        assert markup.scripts and all(s.get("src", "").startswith("/ui/static/") for s in markup.scripts), path
        assert not markup.inline_script and not markup.style_elements, path
        assert markup.style_attributes == [] and markup.handlers == [], path
        assert "<script>alert(1)</script>" not in r.text  # escaped, never markup
    for asset in ("/ui/static/app.css", "/ui/static/htmx-2.0.11.min.js"):
        assert httpx.get(server.url + asset).status_code == 200
    page.close()


def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(server: Server,
                                                                                 c: httpx.Client) -> None:
    name = create_model(c, "ui-csrf")
    register(c, name, 1)
    page = signed_in(server, server.token)
    page.get(f"/ui/models/{seg(name)}/versions/1")
    before = audit_actions(c, name)
    path = f"/ui/models/{seg(name)}/versions/1/move"
    for csrf in ("", "wrong-token"):
        r = page.post(path, {"to_stage": "staging"}, csrf=csrf)
        assert r.status_code == 403 and "CSRF" in r.text
    r = page.post(path, {"to_stage": "staging"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    other = signed_in(server, server.token)  # another session's token is no good here either
    other.get("/ui")
    assert page.post(path, {"to_stage": "staging"}, csrf=other.csrf).status_code == 403
    assert audit_actions(c, name) == before
    assert c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "none"
    r = page.post(path, {"to_stage": "staging", "expected_stage": "none"})
    assert r.status_code == 303 and c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "staging"
    page.close()
    other.close()


def test_a_viewer_sees_no_buttons_and_a_forged_post_gets_403(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "ui-viewer")
    register(c, name, 1)
    assert c.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "staging"}).status_code == 200
    r = c.post(f"/models/{seg(name)}/versions/1/transition-requests", json={"to_stage": "production"})
    request_id = r.json()["id"]
    viewer = signed_in(server, token(c, "viewer"))
    r = viewer.get(f"/ui/models/{seg(name)}/versions/1")
    assert r.status_code == 200
    forms = Markup(r.text).forms
    assert forms == ["/ui/logout"], forms  # no request, move, approve, reject, cancel or comment form
    before = audit_actions(c, name)
    for path, data in ((f"/ui/requests/{request_id}/approve", {}),
                       (f"/ui/models/{seg(name)}/versions/1/move", {"to_stage": "production"}),
                       (f"/ui/models/{seg(name)}/versions/1/request", {"to_stage": "production"}),
                       (f"/ui/models/{seg(name)}/versions/1/comments", {"body": "hi"})):
        r = viewer.post(path, data)
        assert r.status_code == 403, (path, r.status_code, r.text[:300])
        assert "Forbidden" in r.text
    r = viewer.post(f"/ui/models/{seg(name)}/versions/1/comments", {"body": "hi"}, headers={"HX-Request": "true"})
    assert r.status_code == 403 and r.headers["hx-retarget"] == "body"  # shown as the page, not in the thread
    assert audit_actions(c, name) == before
    assert c.get(f"/transition-requests/{request_id}").json()["approvals"] == []
    viewer.close()


# -- what the forms do ---------------------------------------------------------------------------------


def test_request_then_approve_by_a_second_releaser_promotes_and_audits_both(server: Server,
                                                                            c: httpx.Client) -> None:
    name = create_model(c, "ui-approve")
    register(c, name, 1, metrics={"auc": 0.95})
    assert c.put(f"/models/{seg(name)}/policies/production",
                 json={"required_approvals": 1, "metrics": {"auc": {"min": 0.9}}}).status_code == 200
    assert c.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "staging"}).status_code == 200
    uid = uuid.uuid4().hex[:6]
    alice = signed_in(server, token(c, "releaser", f"alice-{uid}"))
    bob = signed_in(server, token(c, "releaser", f"bob-{uid}"))
    version_page = f"/ui/models/{seg(name)}/versions/1"
    page = alice.get(version_page)
    assert "approvals" in page.text and "Request production" in page.text
    r = alice.post(f"{version_page}/request", {"to_stage": "production", "comment": "auc is up"})
    assert r.status_code == 303 and r.headers["location"] == version_page + "#requests"
    request_id = c.get("/transition-requests", params={"model": name}).json()["items"][0]["id"]
    mine = alice.get(version_page).text
    assert f"/ui/requests/{request_id}/approve" not in mine  # the requester sees no approve button
    assert "You asked for this move" in mine
    theirs = bob.get(version_page).text
    assert f"/ui/requests/{request_id}/approve" in theirs
    r = bob.post(f"/ui/requests/{request_id}/approve", {"comment": "ship it"})
    assert r.status_code == 303, r.text
    assert c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "production"
    after = bob.get(version_page).text
    assert 'class="badge stage-production"' in after.split('data-testid="stage"')[1][:80]
    model_page = bob.get(f"/ui/models/{seg(name)}").text
    assert 'class="bar production" data-version="1"' in model_page
    entries = c.get("/audit", params={"model": name, "limit": 1000}).json()["items"]
    moved = [e for e in entries if e["action"] == "model_version.stage_changed"][-1]
    assert moved["after"]["stage"] == "production"
    assert [(e["action"], e["actor"].split("-")[0]) for e in entries
            if e["action"].startswith("transition_request.")][:2] == [
        ("transition_request.created", "releaser"), ("transition_request.approved", "releaser")]
    assert moved["after"].get("requested_by") or moved["after"].get("request")
    alice.close()
    bob.close()


def test_a_comment_from_the_page_is_stored_audited_and_swapped_in(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "ui-comment")
    register(c, name, 1)
    uid = uuid.uuid4().hex[:6]
    page = signed_in(server, token(c, "editor", f"erin-{uid}"))
    version_page = f"/ui/models/{seg(name)}/versions/1"
    page.get(version_page)
    r = page.post(f"{version_page}/comments", {"body": "Looks <b>good</b> to me"},
                  headers={"HX-Request": "true"})
    assert r.status_code == 200 and r.text.lstrip().startswith('<section aria-labelledby="comments-h"')
    assert "Looks &lt;b&gt;good&lt;/b&gt; to me" in r.text and f"erin-{uid}" in r.text
    found = c.get(f"/models/{seg(name)}/versions/1/comments").json()["items"]
    assert [(x["body"], x["author"]) for x in found] == [("Looks <b>good</b> to me", f"erin-{uid}")]
    comment_id = found[0]["id"]
    r = page.post(f"/ui/comments/{comment_id}/edit", {"body": "Looks fine"})
    assert r.status_code == 303 and r.headers["location"] == version_page + "#comments"
    r = page.post(f"/ui/comments/{comment_id}/delete", {}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "No comments yet" in r.text
    actions = [a for a, _ in audit_actions(c, name) if a.startswith("comment.")]
    assert actions == ["comment.created", "comment.updated", "comment.deleted"]
    page.close()


def test_a_refused_move_shows_every_failed_gate_and_why(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "ui-gates")
    register(c, name, 1, metrics={"auc": 0.7})
    c.put(f"/models/{seg(name)}/policies/staging", json={"metrics": {"auc": {"min": 0.9}},
                                                        "required_fields": ["description"]})
    page = signed_in(server, server.token)
    version_page = f"/ui/models/{seg(name)}/versions/1"
    text = page.get(version_page).text
    assert "The move to staging is blocked: 2 gate(s) fail." in text
    assert "auc = 0.7, needs &gt;= 0.9" in text
    r = page.post(f"{version_page}/move", {"to_stage": "staging", "expected_stage": "none"})
    assert r.status_code == 422 and "Gate failed" in r.text and "metric:auc:min" in r.text
    assert c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "none"
    page.close()


def test_the_audit_page_verifies_and_exports_what_its_filters_select(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "ui-audit")
    register(c, name, 2)
    page = signed_in(server, server.token)
    r = page.get("/ui/audit", params={"model": name, "action": "model_version.created"})
    assert r.status_code == 200 and "Chain verified" in r.text
    assert r.text.count("model_version.created</span>") == 2
    r = page.get("/ui/audit/export", params={"model": name, "action": "model_version.created"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [(x["action"], x["version"]) for x in lines] == [("model_version.created", 1),
                                                             ("model_version.created", 2)]
    assert all(len(x["hash"]) == 64 for x in lines)
    assert page.get("/ui/audit", params={"since": "yesterday"}).status_code == 400
    assert page.get("/ui/audit", params={"version": "x"}).status_code == 400
    page.close()


def test_the_webhooks_page_is_for_admins(server: Server, c: httpx.Client) -> None:
    r = c.post("/webhooks", json={"url": "https://192.0.0.9/hook", "event_types": ["comment.*"]})
    assert r.status_code == 201, r.text
    admin = signed_in(server, server.token)
    text = admin.get("/ui/webhooks").text
    assert "https://192.0.0.9/hook" in text and f'/ui/webhooks/{r.json()["id"]}/recover' in text
    r2 = admin.post(f"/ui/webhooks/{r.json()['id']}/recover", {"since": "2026-01-01T00:00"})
    assert r2.status_code == 303, r2.text
    editor = signed_in(server, token(c, "editor"))
    assert editor.get("/ui/webhooks").status_code == 403
    assert "/ui/webhooks" not in editor.get("/ui").text  # not in the menu either
    admin.close()
    editor.close()


def test_hostile_requests_get_4xx_pages_never_a_500(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "ui-hostile")
    register(c, name, 1)
    page = signed_in(server, server.token)
    page.get("/ui")
    huge = "9" * 25
    for path in ("/ui/models/%00", "/ui/models/x/versions/0", "/ui/models/x/versions/99999999999",
                 "/ui?offset=-1&q=%25%5F", "/ui?offset=abc", f"/ui?offset={huge}", f"/ui/models/{seg(name)}?offset=²",
                 "/ui/audit?until=2026-13-40T00:00", "/ui/audit?version=²", "/ui/audit/export?version=²"):
        r = page.get(path, headers={"Referer": "http://[::1"})
        assert 400 <= r.status_code < 500, (path, r.status_code)
        assert r.headers["content-type"].startswith("text/html"), path
    for path in (f"/ui/requests/{huge}/approve", f"/ui/comments/{huge}/edit", f"/ui/comments/{huge}/delete",
                 f"/ui/webhooks/{huge}/recover", f"/ui/webhooks/1/deliveries/{huge}/redeliver"):
        assert page.post(path, {"body": "x", "since": "2026-01-01T00:00"}).status_code == 400, path
    assert page.post("/ui/requests/1/explode", {}).status_code == 400
    version_page = f"/ui/models/{seg(name)}/versions/1"
    assert page.post(f"{version_page}/comments", {"body": "x", "request_id": "²"}).status_code == 400
    assert page.post(f"{version_page}/comments", {"body": "x"}, headers={"Origin": "http://[::1"}).status_code == 403
    assert page.post(f"{version_page}/comments", {"body": "x" * 300_000}).status_code == 413
    assert page.post(f"{version_page}/comments", {"body": "字" * 10_000}).status_code == 303  # the largest legal one
    assert page.post(f"{version_page}/comments", {"body": "x" * 10_001}).status_code == 400
    assert page.post("/ui/webhooks/1/recover", {"since": "nonsense"}).status_code in (400, 404)
    # A malformed cookie another app on this host set hides nothing else.
    jar = f"other={{\"a\": 1}}; registry_session={page.http.cookies['registry_session']}; x=\\"
    assert httpx.get(server.url + "/ui", headers={"Cookie": jar}).status_code == 200
    log = server.log.read_text()
    assert '"status": 500' not in log
    page.close()


def test_a_requester_whose_request_is_approved_gets_the_button_to_move(server: Server, c: httpx.Client) -> None:
    """Under a policy that does not apply the move itself, the approved requester makes it, even
    below the move's role (an editor promoting): the page offers exactly that button."""
    name = create_model(c, "ui-held")
    register(c, name, 1)
    c.put(f"/models/{seg(name)}/policies/production", json={"required_approvals": 1, "auto_apply": False})
    assert c.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "staging"}).status_code == 200
    uid = uuid.uuid4().hex[:6]
    editor = signed_in(server, token(c, "editor", f"ed-{uid}"))
    releaser = signed_in(server, token(c, "releaser", f"rel-{uid}"))
    version_page = f"/ui/models/{seg(name)}/versions/1"
    editor.get(version_page)
    assert editor.post(f"{version_page}/request", {"to_stage": "production"}).status_code == 303
    assert "Move to production" not in editor.get(version_page).text  # not before the approval
    request_id = c.get("/transition-requests", params={"model": name}).json()["items"][0]["id"]
    releaser.get(version_page)
    assert releaser.post(f"/ui/requests/{request_id}/approve", {}).status_code == 303
    assert c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "staging"  # held for the requester
    text = editor.get(version_page).text
    assert f'action="/ui/models/{seg(name)}/versions/1/move"' in text and "Move to production" in text
    r = editor.post(f"{version_page}/move", {"to_stage": "production", "expected_stage": "staging"})
    assert r.status_code == 303 and c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "production"
    editor.close()
    releaser.close()
