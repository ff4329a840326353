"""Tokens, roles and scopes over HTTP, and the audit filters: the "done when" checks of the
permissions issue, each against a real server on both backends.

The permission table itself (every operation x role x scope) is in test_permissions.py; this
module checks the behaviour around it: what a scoped token cannot see anywhere, how quickly a
revoked or expired token is refused, that secrets are never shown again, that using a token
writes ``last_used_at`` at most once a minute, and that each audit filter returns exactly the
matching entries.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from fnmatch import fnmatchcase
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, assert_utc, audit, create_model, move, pages, register, seg
from tests.support import Server

# -- helpers ----------------------------------------------------------------------------------------


def make_token(c: httpx.Client, role: str, models: list[str] | None = None, *, name: str | None = None,
               expires_at: datetime | None = None) -> tuple[int, str, str]:
    """A new token as the admin makes it: (id, name, secret)."""
    name = name or f"{role}-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"name": name, "role": role}
    if models is not None:
        body["models"] = models
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    r = c.post("/tokens", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["token"].startswith("mrt_"), created
    assert (created["name"], created["role"], created["models"]) == (name, role, models), created
    return created["id"], name, created["token"]


@contextmanager
def client_for(server: Server, secret: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {secret}"},
                      timeout=30.0) as client:
        yield client


def all_items(c: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list."""
    return [item for page in pages(c, path, limit=1000, **params) for item in page]


def token_row(c: httpx.Client, token_id: int) -> dict[str, Any]:
    rows = [t for t in all_items(c, "/tokens") if t["id"] == token_id]
    assert len(rows) == 1, rows
    return rows[0]


def system_head(c: httpx.Client) -> tuple[int, str]:
    heads = [h for h in c.get("/audit/head").json()["items"] if h["chain"] == "system"]
    assert len(heads) == 1, heads
    return heads[0]["seq"], heads[0]["hash"]


def poll_until_refused(client: httpx.Client, deadline: float, every: float = 0.05) -> float:
    """GET /models every ``every`` seconds until 401; returns when (monotonic) it came. Fails
    on anything but 200 or 401, and when ``deadline`` passes first."""
    while True:
        r = client.get("/models")
        now = time.monotonic()
        if r.status_code == 401:
            assert_problem(r, 401, "unauthenticated")
            return now
        assert r.status_code == 200, r.text
        assert now < deadline, "the token was still accepted at the deadline"
        time.sleep(every)


# -- roles ------------------------------------------------------------------------------------------


def test_a_stager_submits_but_cannot_promote_to_production(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "stager")
    register(c, name)
    _, _, secret = make_token(c, "stager")
    with client_for(server, secret) as stager:
        r = stager.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "staging"})
        assert r.status_code == 200, r.text
        assert r.json()["version"]["stage"] == "staging"

        r = stager.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "production"})
        assert_problem(r, 403, "forbidden")
    assert c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "staging"
    assert c.get(f"/models/{seg(name)}/stages/production").json()["items"] == []
    # The version could move: the 403 was the role's, as a releaser shows.
    _, _, secret = make_token(c, "releaser")
    with client_for(server, secret) as releaser:
        r = releaser.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "production"})
        assert r.status_code == 200, r.text


# -- scopes -----------------------------------------------------------------------------------------


def test_a_token_scoped_to_fraud_cannot_see_churn(server: Server, c: httpx.Client) -> None:
    for name in ("churn", "fraud-detector"):
        create_model(c, name=name)
        register(c, name, 2)
        move(c, name, 1, "staging")
        assert c.put(f"/models/{name}/aliases/champion", json={"version": 1}).status_code == 200
    _, _, secret = make_token(c, "editor", ["fraud-*"])
    with client_for(server, secret) as fraud:
        for path in ("/models/churn", "/models/churn/versions", "/models/churn/versions/1",
                     "/models/churn/versions/1/transitions", "/models/churn/stages/staging",
                     "/models/churn/aliases/champion"):
            assert_problem(fraud.get(path), 404, "not_found")
            assert fraud.get(path.replace("churn", "fraud-detector")).status_code == 200, path
        for params in ({"model": "churn"}, {"model": "churn", "action": "model.created"}):
            assert_problem(fraud.get("/audit", params=params), 404, "not_found")
        assert_problem(fraud.get("/audit/head", params={"model": "churn"}), 404, "not_found")
        assert_problem(fraud.get("/audit/verify", params={"model": "churn"}), 404, "not_found")
        assert_problem(fraud.get("/events", params={"model": "churn"}), 404, "not_found")
        assert_problem(fraud.get("/models/churn/history", params={"at": "2100-01-01T00:00:00Z"}),
                       404, "not_found")
        assert fraud.get("/events", params={"model": "fraud-detector"}).json()["items"]

        names = [m["name"] for m in all_items(fraud, "/models")]
        assert "fraud-detector" in names and "churn" not in names, names
        assert all(fnmatchcase(n, "fraud-*") for n in names), names
        assert fraud.get("/models", params={"name_prefix": "ch"}).json()["items"] == []

        entries = all_items(fraud, "/audit")
        assert "fraud-detector" in {e["model"] for e in entries}
        assert {e["model"] for e in entries} <= {n for n in names}, entries
        assert "system" not in {e["chain"] for e in entries}
        admin = entries[0]["actor"]
        assert all_items(fraud, "/audit", actor=admin, action="model.created") == [
            e for e in entries if e["actor"] == admin and e["action"] == "model.created"]

        heads = fraud.get("/audit/head").json()["items"]
        assert "fraud-detector" in {h["model"] for h in heads}
        assert {h["model"] for h in heads} <= set(names), heads
        verified = fraud.get("/audit/verify").json()
        assert verified["ok"] and verified["checked"] == len(entries), verified

        # Writes to it: it does not exist. Creating outside the scope: forbidden, not absent.
        assert_problem(fraud.patch("/models/churn", json={"description": "x"}), 404, "not_found")
        assert_problem(fraud.post("/models/churn/versions", json={"source": "s3://b/m"}), 404, "not_found")
        assert_problem(fraud.put("/models/churn/aliases/champion", json={"version": 2}), 404, "not_found")
        r = fraud.post("/models", json={"name": "churn-2"})
        assert_problem(r, 403, "forbidden")
        r = fraud.post("/models", json={"name": "fraud-2"})
        assert r.status_code == 201, r.text  # the 403 was the scope's, not the role's
    assert_problem(c.get("/models/churn-2"), 404, "not_found")
    assert c.get("/models/churn").json()["description"] == ""
    assert c.get("/models/churn/aliases/champion").json()["version"] == 1
    assert [v["version"] for v in c.get("/models/churn/versions").json()["items"]] == [1, 2]


GLOB_MODELS = {
    # name: visible to a token with the patterns below
    "a_b-1": True, "axb-1": False,         # '_' is a literal, not SQL LIKE's any-one character
    "pct%-1": True, "pctxx-1": False,       # '%' is a literal, not SQL LIKE's any-run
    "risk-1": True, "rosk-1": True, "rsk-1": False,  # '?' is exactly one character
    "A_B-1": False, "RISK-1": False,       # case matters, on SQLite too
}


def test_lists_and_reads_agree_on_what_a_glob_matches(server: Server, c: httpx.Client) -> None:
    for name in GLOB_MODELS:
        create_model(c, name=name)
    _, _, secret = make_token(c, "viewer", ["a_b-*", "pct%-*", "r?sk-*"])
    with client_for(server, secret) as scoped:
        listed = {m["name"] for m in all_items(scoped, "/models")}
        chains = {h["model"] for h in scoped.get("/audit/head").json()["items"]}
        audited = {e["model"] for e in all_items(scoped, "/audit")}
        for name, visible in GLOB_MODELS.items():
            got = scoped.get(f"/models/{seg(name)}").status_code
            assert (got, name in listed, name in chains, name in audited) == (
                (200, True, True, True) if visible else (404, False, False, False)), name


# -- revocation and expiry --------------------------------------------------------------------------


@pytest.mark.parametrize("used_before", [False, True], ids=["unused", "cached"])
def test_a_revoked_token_is_refused_within_a_second(server: Server, c: httpx.Client,
                                                    used_before: bool) -> None:
    token_id, _, secret = make_token(c, "viewer")
    with client_for(server, secret) as victim:
        if used_before:  # now the server has it in its cache
            for _ in range(3):
                assert victim.get("/models").status_code == 200
        r = c.delete(f"/tokens/{token_id}")
        assert r.status_code == 204, r.text
        revoked = time.monotonic()
        refused = poll_until_refused(victim, deadline=revoked + 1.5)
        assert refused - revoked <= 1.5
        for _ in range(5):  # and it stays refused
            assert_problem(victim.get("/models"), 401, "unauthenticated")
            time.sleep(0.05)
    row = token_row(c, token_id)
    assert row["revoked_at"] is not None
    assert_utc(row["revoked_at"])


def test_an_expired_token_is_refused(server: Server, c: httpx.Client) -> None:
    _, _, secret = make_token(c, "admin", expires_at=datetime.now(UTC) - timedelta(minutes=5))
    with client_for(server, secret) as expired:
        for path in ("/models", "/tokens", "/audit"):
            assert_problem(expired.get(path), 401, "unauthenticated")


def test_a_token_is_refused_once_it_expires_even_when_cached(server: Server, c: httpx.Client) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    _, _, secret = make_token(c, "viewer", expires_at=expires)
    with client_for(server, secret) as soon:
        assert soon.get("/models").status_code == 200
        deadline = time.monotonic() + (expires - datetime.now(UTC)).total_seconds() + 1.5
        poll_until_refused(soon, deadline)
        assert datetime.now(UTC) >= expires - timedelta(milliseconds=100), "refused before it expired"


def test_tokens_are_refused_without_a_valid_bearer(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic YWRtaW46YWRtaW4="},
                    {"Authorization": "Bearer mrt_" + "x" * 43}):
        r = httpx.get(server.api + "/models", headers=headers, timeout=30.0)
        assert_problem(r, 401, "unauthenticated")


# -- secrets ----------------------------------------------------------------------------------------


def test_token_secrets_never_appear_again(server: Server, c: httpx.Client) -> None:
    token_id, name, secret = make_token(c, "editor", ["secret-*"])
    with client_for(server, secret) as holder:
        assert holder.get("/models").status_code == 200
    assert c.delete(f"/tokens/{token_id}").status_code == 204
    forms = [secret, secret.removeprefix("mrt_"), hashlib.sha256(secret.encode()).hexdigest()]

    listing = c.get("/tokens", params={"limit": 1000})
    assert listing.status_code == 200, listing.text
    row = token_row(c, token_id)
    assert set(row) == {"id", "name", "principal", "role", "models", "created_at", "expires_at",
                        "last_used_at", "revoked_at"}, row
    system = [e for e in all_items(c, "/audit") if e["chain"] == "system"]
    mine = [e for e in system if (e["after"] or e["before"] or {}).get("id") == token_id]
    assert [e["action"] for e in mine] == ["token.created", "token.revoked"], mine
    assert mine[0]["after"]["name"] == name and mine[1]["before"]["name"] == name
    heads = c.get("/audit/head")
    for text in (listing.text, c.get("/audit", params={"limit": 1000}).text, heads.text,
                 c.get("/audit", params={"action": "token.created"}).text, server.log.read_text()):
        for form in forms:
            assert form not in text

    # Others: the system chain does not exist for them.
    _, _, viewer_secret = make_token(c, "viewer")
    _, _, releaser_secret = make_token(c, "releaser", ["secret-*"])
    for other in (viewer_secret, releaser_secret):
        with client_for(server, other) as o:
            assert o.get("/audit", params={"action": "token.created"}).json()["items"] == []
            assert o.get("/audit", params={"action": "token.revoked"}).json()["items"] == []
            assert "system" not in {e["chain"] for e in all_items(o, "/audit")}
            assert "system" not in {h["chain"] for h in o.get("/audit/head").json()["items"]}
            assert_problem(o.get("/audit", params={"model": "system"}), 404, "not_found")
            assert_problem(o.get("/tokens"), 403, "forbidden")


# -- last_used_at -----------------------------------------------------------------------------------


def burst(server: Server, secret: str, n: int = 20) -> None:
    with client_for(server, secret) as client, ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(lambda _: client.get("/models", params={"limit": 1}).status_code, range(n)))
    assert statuses == [200] * n


def test_last_used_at_is_written_once_a_minute_at_most(server: Server, c: httpx.Client) -> None:
    token_id, _, secret = make_token(c, "viewer")
    assert token_row(c, token_id)["last_used_at"] is None
    head = system_head(c)
    started = datetime.now(UTC)

    burst(server, secret)
    deadline = time.monotonic() + 5
    while (used := token_row(c, token_id)["last_used_at"]) is None:
        assert time.monotonic() < deadline, "last_used_at was not written within 5 s"
        time.sleep(0.1)
    assert started - timedelta(seconds=1) <= assert_utc(used) <= datetime.now(UTC) + timedelta(seconds=1)

    time.sleep(1.1)  # a second write would now carry a different time
    burst(server, secret)
    time.sleep(1.0)
    assert token_row(c, token_id)["last_used_at"] == used
    assert system_head(c) == head, "using a token wrote to the audit log"


# -- audit filters ----------------------------------------------------------------------------------


def test_audit_filters_return_exactly_the_matching_entries(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "filt")
    register(c, name)
    _, _, secret = make_token(c, "editor")
    with client_for(server, secret) as editor:
        tagged = {"X-Request-ID": f"filt-{uuid.uuid4().hex}"}
        assert editor.post(f"/models/{name}/versions", json={"source": "s3://b/m"}, headers=tagged
                           ).status_code == 201
        assert editor.patch(f"/models/{name}/versions/1", json={"description": "d"}).status_code == 200
        assert editor.put(f"/models/{name}/aliases/champion", json={"version": 2}).status_code == 200
        move(c, name, 1, "staging")
        move(c, name, 1, "production")
        move(c, name, 2, "staging")
        move(c, name, 2, "production")  # archives 1
        assert editor.patch(f"/models/{name}/versions/2", json={"tags": {"k": "v"}}).status_code == 200

    full = audit(c, name)
    assert len(full) == 11, [e["action"] for e in full]
    editor_actor = next(e["actor"] for e in full if e["request_id"] == tagged["X-Request-ID"])
    admin_actor = full[0]["actor"]
    assert editor_actor != admin_actor
    at = [assert_utc(e["at"]) for e in full]
    middle = full[5]["at"]

    def expect(**flt: Any) -> list[int]:
        def keep(e: dict[str, Any], when: datetime) -> bool:
            return ((flt.get("version") is None or e["version"] == flt["version"])
                    and (flt.get("actor") is None or e["actor"] == flt["actor"])
                    and (flt.get("action") is None or e["action"] == flt["action"])
                    and (flt.get("since") is None or when >= assert_utc(flt["since"]))
                    and (flt.get("until") is None or when <= assert_utc(flt["until"])))
        return [e["id"] for e, when in zip(full, at, strict=True) if keep(e, when)]

    cases: list[dict[str, Any]] = [
        {"version": 1}, {"version": 2},
        {"actor": editor_actor}, {"actor": admin_actor}, {"actor": "nobody"},
        {"action": "model_version.stage_changed"}, {"action": "model_version.alias_set"},
        {"action": "model_version.stage_changed", "version": 1},
        {"actor": editor_actor, "version": 2},
        {"since": middle}, {"until": middle}, {"since": full[3]["at"], "until": full[7]["at"]},
        {"since": full[3]["at"], "until": full[7]["at"], "version": 1},
        {"since": full[-1]["at"]}, {"until": full[0]["at"]},
    ]
    for flt in cases:
        want = expect(**flt)
        got = [e["id"] for e in all_items(c, "/audit", model=name, **flt)]
        assert got == want, flt
        paged = [e["id"] for e in all_items_paged(c, name, flt)]
        assert paged == want, ("paged", flt)
    # Each filter narrows: none of these can pass by returning everything, or nothing.
    for flt in cases:
        if flt.get("actor") != "nobody":
            assert 0 < len(expect(**flt)) < len(full), flt

    # The same instant in another offset selects the same entries.
    plus_two = assert_utc(middle).astimezone(timezone(timedelta(hours=2))).isoformat()
    for key in ("since", "until"):
        assert ([e["id"] for e in all_items(c, "/audit", model=name, **{key: plus_two})]
                == expect(**{key: middle})), key

    # Without a model: the filters apply across every chain the token may see.
    everything = all_items(c, "/audit")
    for flt in ({"actor": editor_actor}, {"action": "model_version.alias_set"}, {"since": middle}):
        got = [e["id"] for e in all_items(c, "/audit", **flt)]
        want = [e["id"] for e in everything
                if all((assert_utc(e["at"]) >= assert_utc(v)) if k == "since" else e[k] == v
                       for k, v in flt.items())]
        assert got == want and set(expect(**flt)) <= set(got), flt


def all_items_paged(c: httpx.Client, name: str, flt: dict[str, Any]) -> list[dict[str, Any]]:
    """The filtered entries two at a time, following next_cursor."""
    return [e for page in pages(c, "/audit", limit=2, max_pages=100, model=name, **flt) for e in page]


def test_an_admin_limited_to_some_models_cannot_manage_tokens_or_see_the_system_chain(
    server: Server,
) -> None:
    """Otherwise a scoped admin could mint itself an unlimited admin token."""
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as admin:
        r = admin.post("/tokens", json={"name": "scoped-admin", "role": "admin", "models": ["fraud-*"]})
        assert r.status_code == 201
        scoped = {"Authorization": f"Bearer {r.json()['token']}"}
        escalate = admin.post("/tokens", headers=scoped, json={"name": "escalated", "role": "admin"})
        assert escalate.status_code == 403 and escalate.json()["code"] == "forbidden"
        assert admin.get("/tokens", headers=scoped).status_code == 403
        assert admin.delete(f"/tokens/{r.json()['id']}", headers=scoped).status_code == 403
        chains = {e["chain"] for e in admin.get("/audit", headers=scoped, params={"limit": 1000}).json()["items"]}
        assert "system" not in chains
        assert "system" in {e["chain"] for e in admin.get("/audit", params={"limit": 1000}).json()["items"]}
        names = [t["name"] for t in admin.get("/tokens", params={"limit": 1000}).json()["items"]]
        assert "escalated" not in names
