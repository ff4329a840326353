"""DESIGN.md "HTTP conventions" on a live server: authentication, request ids, problem bodies,
routing errors, timestamps and limits, across every endpoint of the native API."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.api.helpers import (
    assert_problem,
    assert_utc,
    audit,
    create_model,
    events,
    media_type,
    move,
    register,
    seg,
)
from tests.conftest import unique
from tests.support import Server

# Every operation of the table, with a body that would be valid.
ENDPOINTS = [
    ("POST", "/models", {"name": "auth-probe"}),
    ("GET", "/models", None),
    ("GET", "/models/x", None),
    ("PATCH", "/models/x", {"description": "d"}),
    ("DELETE", "/models/x", None),
    ("POST", "/models/x/versions", {"source": "s"}),
    ("GET", "/models/x/versions", None),
    ("GET", "/models/x/versions/1", None),
    ("PATCH", "/models/x/versions/1", {"description": "d"}),
    ("POST", "/models/x/versions/1/transitions", {"to_stage": "staging"}),
    ("GET", "/models/x/versions/1/transitions", None),
    ("GET", "/models/x/stages/production", None),
    ("PUT", "/models/x/aliases/champion", {"version": 1}),
    ("GET", "/models/x/aliases/champion", None),
    ("DELETE", "/models/x/aliases/champion", None),
    ("GET", "/audit", None),
    ("GET", "/audit/verify", None),
    ("GET", "/events?model=x", None),
]
IDS = [f"{m} {p}" for m, p, _ in ENDPOINTS]


# -- health ---------------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_without_a_token(server: Server) -> None:
    for path in ("/healthz", "/readyz"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200, (path, r.text)
        assert r.json() == {"status": "ok"}


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=IDS)
def test_every_endpoint_is_401_without_a_token(server: Server, method: str, path: str,
                                               body: dict | None) -> None:
    r = httpx.request(method, server.api + path, json=body)
    assert_problem(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize("authorization", [
    "Bearer mrt_not_a_real_token_0123456789",
    "Basic YWRtaW46YWRtaW4=",
    "Bearer",
    "mrt_test_without_a_scheme",
])
def test_bad_credentials_are_401_with_www_authenticate(server: Server, authorization: str) -> None:
    r = httpx.get(server.api + "/models", headers={"Authorization": authorization})
    assert_problem(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"].lower().startswith("bearer")


def test_a_token_differing_in_one_character_is_refused(server: Server) -> None:
    last = server.token[-1]
    forged = server.token[:-1] + ("A" if last != "A" else "B")
    r = httpx.get(server.api + "/models", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(r, 401, "unauthenticated")


def test_the_scheme_is_case_insensitive(server: Server) -> None:
    r = httpx.get(server.api + "/models", headers={"Authorization": f"bearer {server.token}"})
    assert r.status_code == 200, r.text


def test_authentication_comes_before_validation_and_writes_nothing(server: Server,
                                                                   c: httpx.Client) -> None:
    name = unique("noauth")
    r = httpx.post(server.api + "/models", json={"name": name, "bogus": True})
    assert_problem(r, 401, "unauthenticated")
    r = httpx.post(server.api + "/models", json={"name": name})
    assert_problem(r, 401, "unauthenticated")
    assert_problem(c.get(f"/models/{name}"), 404, "not_found")


# -- not found ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"),
                         [e for e in ENDPOINTS if "/models/x" in e[1] or "model=x" in e[1]],
                         ids=[i for i, e in zip(IDS, ENDPOINTS, strict=True)
                              if "/models/x" in e[1] or "model=x" in e[1]])
def test_every_model_endpoint_is_404_for_a_missing_model(c: httpx.Client, method: str, path: str,
                                                         body: dict | None) -> None:
    missing = unique("missing")
    r = c.request(method, path.replace("/models/x", f"/models/{missing}").replace("model=x", f"model={missing}"),
                  json=body)
    assert_problem(r, 404, "not_found")


@pytest.mark.parametrize("path", ["/audit?model={m}", "/audit/verify?model={m}"])
def test_audit_of_a_model_that_never_existed_is_404(c: httpx.Client, path: str) -> None:
    assert_problem(c.get(path.format(m=unique("ghost"))), 404, "not_found")


def test_unknown_route_is_404_problem(c: httpx.Client) -> None:
    assert_problem(c.get("/no-such-thing"), 404, "not_found")


def test_wrong_method_is_405_problem_with_allow(c: httpx.Client) -> None:
    r = c.put("/models")
    assert r.status_code == 405
    assert media_type(r) == "application/problem+json"
    assert r.json()["status"] == 405
    assert "POST" in r.headers.get("allow", "").upper()


# -- request bodies -------------------------------------------------------------------------------


def test_malformed_json_is_400_validation_error(c: httpx.Client) -> None:
    r = c.post("/models", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "validation_error")


def test_all_validation_errors_share_one_type_and_title(c: httpx.Client) -> None:
    """RFC 9457: the title describes the problem type and does not change between occurrences."""
    name = create_model(c, "titles")
    json_header = {"Content-Type": "application/json"}
    responses = [
        c.post("/models", content=b'{"name": ', headers=json_header),                 # malformed
        c.post(f"/models/{name}/versions", content=b'{"source": "s", "metrics": {"m": 1e999}}',
               headers=json_header),                                                    # overflow
        c.post("/models", json={"name": "a:b"}),                                        # pattern
        c.get(f"/models/{name}/versions/0"),                                            # bounds
        c.get("/models", params={"cursor": "not-a-cursor!"}),                           # service
        c.put(f"/models/{name}/aliases/latest", json={"version": 1}),                    # domain
    ]
    bodies = [assert_problem(r, 400, "validation_error") for r in responses]
    assert len({b["type"] for b in bodies}) == 1, [b["type"] for b in bodies]
    assert len({b["title"] for b in bodies}) == 1, [b["title"] for b in bodies]


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/models", "/models/{m}/versions", "/audit", "/events"])
def test_limit_is_bounded_1_to_1000(c: httpx.Client, path: str) -> None:
    name = create_model(c, "limits")
    url = path.format(m=name)
    params = {"model": name} if path == "/events" else {}
    for bad in (0, -1, 1001):
        assert_problem(c.get(url, params={**params, "limit": bad}), 400, "validation_error")
    r = c.get(url, params={**params, "limit": 1000})
    assert r.status_code == 200, r.text
    assert "items" in r.json() and "next_cursor" in r.json()


# -- request ids ----------------------------------------------------------------------------------


def test_a_given_request_id_is_echoed_audited_and_put_on_the_event(c: httpx.Client) -> None:
    name = create_model(c, "rid")
    register(c, name)
    rid = f"ci-run-{uuid.uuid4().hex[:12]}.step:7"
    r = c.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "staging"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == rid
    entry = audit(c, name)[-1]
    assert (entry["action"], entry["request_id"]) == ("model_version.stage_changed", rid)
    event = events(c, name)[-1]
    assert (event["type"], event["request_id"]) == ("model_version.stage_changed", rid)
    history = c.get(f"/models/{seg(name)}/versions/1/transitions").json()["items"]
    assert history[-1]["request_id"] == rid
    # Other requests did not inherit it.
    assert [e["request_id"] for e in audit(c, name)].count(rid) == 1


def test_without_a_request_id_a_fresh_one_is_generated_echoed_and_audited(c: httpx.Client) -> None:
    first = c.post("/models", json={"name": unique("rid-gen")})
    second = c.post("/models", json={"name": unique("rid-gen")})
    assert first.status_code == second.status_code == 201
    ids = [first.headers.get("x-request-id"), second.headers.get("x-request-id")]
    assert all(ids) and ids[0] != ids[1]
    assert audit(c, first.json()["name"])[0]["request_id"] == ids[0]
    assert audit(c, second.json()["name"])[0]["request_id"] == ids[1]


@pytest.mark.parametrize("bad", ["has spaces in it", "x" * 129, "semi;colon", "ünï"])
def test_an_unusable_request_id_is_replaced_not_stored(c: httpx.Client, bad: str) -> None:
    r = c.post("/models", json={"name": unique("rid-bad")},
               headers={"X-Request-ID": bad.encode("utf-8")})
    assert r.status_code == 201, r.text
    echoed = r.headers["x-request-id"]
    assert echoed and echoed != bad and re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", echoed)
    assert audit(c, r.json()["name"])[0]["request_id"] == echoed


def test_error_responses_echo_the_request_id_too(server: Server, c: httpx.Client) -> None:
    r = c.get(f"/models/{unique('nope')}", headers={"X-Request-ID": "trace-404"})
    assert_problem(r, 404, "not_found")
    assert r.headers["x-request-id"] == "trace-404"
    r = httpx.get(server.api + "/models", headers={"X-Request-ID": "trace-401"})
    assert_problem(r, 401, "unauthenticated")
    assert r.headers["x-request-id"] == "trace-401"


# -- representation -------------------------------------------------------------------------------


def test_timestamps_are_rfc3339_utc_everywhere(c: httpx.Client) -> None:
    name = create_model(c, "times")
    model = c.get(f"/models/{name}").json()
    version = register(c, name)[0]
    moved = move(c, name, 1, "staging")
    stamps = [model["created_at"], model["updated_at"], version["created_at"], version["updated_at"],
              moved["transition"]["at"], moved["version"]["updated_at"],
              *(e["at"] for e in audit(c, name)), *(e["at"] for e in events(c, name)),
              *(h["at"] for h in c.get(f"/models/{name}/versions/1/transitions").json()["items"])]
    parsed = [assert_utc(s) for s in stamps]
    assert parsed[4] == parsed[5]  # the transition happened at the version's new updated_at
    assert parsed[0] <= parsed[2] <= parsed[4]


def test_success_responses_are_json(c: httpx.Client) -> None:
    r = c.get("/models")
    assert r.status_code == 200
    assert media_type(r) == "application/json"


# -- hostile text ---------------------------------------------------------------------------------

NUL_REQUESTS = [
    ("GET", "/models/a%00b", None, None),
    ("PATCH", "/models/a%00b", None, {"description": "x"}),
    ("DELETE", "/models/a%00b", None, None),
    ("GET", "/models/a%00b/versions", None, None),
    ("GET", "/models", {"name_prefix": "a\x00"}, None),
    ("GET", "/models/{m}/aliases/a%00", None, None),
    ("GET", "/models/{m}/versions", {"run_id": "r\x00"}, None),
    ("GET", "/models/{m}/versions", {"tag": "k:\x00"}, None),
    ("GET", "/audit", {"model": "\x00"}, None),
    ("GET", "/audit/verify", {"model": "\x00"}, None),
    ("GET", "/events", {"model": "\x00"}, None),
    ("POST", "/models", None, {"name": "nul-desc-{u}", "description": "a\x00b"}),
    ("POST", "/models/{m}/versions", None, {"source": "s3://b/\x00"}),
    ("POST", "/models/{m}/versions", None, {"source": "s", "run_id": "run\x00"}),
    ("PATCH", "/models/{m}", None, {"description": "a\x00b"}),
]


def test_a_nul_character_anywhere_is_never_a_server_error(c: httpx.Client) -> None:
    """PostgreSQL text cannot hold U+0000; sending one is the client's mistake (a 4xx problem),
    never a 500. One test over every place a string reaches the database, listing each failure."""
    name = create_model(c, "nul")
    register(c, name)
    server_errors = []
    for method, path, params, body in NUL_REQUESTS:
        if body and "name" in body:
            body = {**body, "name": body["name"].format(u=uuid.uuid4().hex[:8])}
        r = c.request(method, path.format(m=name), params=params, json=body)
        if r.status_code >= 500:
            server_errors.append(f"{method} {path} {params or body!r} -> {r.status_code}")
        elif r.status_code >= 400:
            assert_problem(r, r.status_code, "validation_error" if r.status_code == 400 else "not_found")
    assert server_errors == []


def test_a_request_id_of_128_characters_is_kept(c: httpx.Client) -> None:
    rid = "r" * 120 + uuid.uuid4().hex[:8]
    r = c.post("/models", json={"name": unique("rid128")}, headers={"X-Request-ID": rid})
    assert r.status_code == 201, r.text
    assert r.headers["x-request-id"] == rid
    assert audit(c, r.json()["name"])[0]["request_id"] == rid


@pytest.mark.parametrize(("path", "methods"), [
    ("/models", {"GET", "POST", "OPTIONS"}),
    ("/models/x", {"GET", "PATCH", "DELETE", "OPTIONS"}),
    ("/models/x/versions/1/transitions", {"GET", "POST", "OPTIONS"}),
    ("/models/x/aliases/champion", {"GET", "PUT", "DELETE", "OPTIONS"}),
])
def test_options_lists_every_method_of_the_path(c: httpx.Client, path: str, methods: set[str]) -> None:
    r = c.options(path)
    assert r.status_code == 204
    assert {m.strip() for m in r.headers["allow"].split(",")} == methods


def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(server: Server) -> None:
    import socket
    import time

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + server.token.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
        time.sleep(0.2)
    time.sleep(0.3)
    log = server.log.read_text()
    assert "client_disconnected" in log
    assert '"level": "error"' not in log
