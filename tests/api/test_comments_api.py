"""Comments over HTTP, on both backends: on versions and on transition requests, who may write,
edit, delete and read them, the problem bodies of refusals, and what each write leaves behind: an
audit entry in the model's chain, an event in its feed, and a signed webhook to a subscription of
``comment.*``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    Who,
    assert_problem,
    assert_utc,
    audit,
    create_model,
    events,
    pages,
    register,
    seg,
)
from tests.e2e.receivers import Receiver
from tests.support import Server, server_for

SCOPED = "cmt-scoped-*"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def server(server_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The suite's server, allowed to send webhooks to the receiver on loopback."""
    data = tmp_path_factory.mktemp(f"comments-{server_backend}")
    env = {"REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true", "REGISTRY_WORKER_POLL_INTERVAL": "0.1"}
    with server_for(server_backend, data, extra_env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def who(server: Server, c: httpx.Client) -> Iterator[Who]:
    uid = uuid.uuid4().hex[:6]
    w = Who(server, c)
    w.add("viewer", "viewer", f"viewer-{uid}")
    w.add("dana", "editor", f"dana-{uid}")
    w.add("dana-releaser", "releaser", f"dana-{uid}")   # another token of dana's principal
    w.add("dana-viewer", "viewer", f"dana-{uid}")       # ... and one that may only read
    w.add("erin", "editor", f"erin-{uid}")
    w.add("scoped-admin", "admin", f"scoped-{uid}", [SCOPED])
    try:
        yield w
    finally:
        w.close()


# -- helpers ----------------------------------------------------------------------------------------


def versioned(c: httpx.Client, prefix: str = "cmt", count: int = 2) -> str:
    name = create_model(c, prefix)
    register(c, name, count)
    return name


def post_comment(client: httpx.Client, name: str, version: int, body: Any) -> httpx.Response:
    return client.post(f"/models/{seg(name)}/versions/{version}/comments", json={"body": body})


def commented(client: httpx.Client, name: str, version: int = 1, body: str = "looks good") -> dict[str, Any]:
    r = post_comment(client, name, version, body)
    assert r.status_code == 201, r.text
    return r.json()


def requested(c: httpx.Client, name: str, version: int = 1) -> int:
    r = c.post(f"/models/{seg(name)}/versions/{version}/transition-requests", json={"to_stage": "staging"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def listed(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    r = client.get(path, params={"limit": 1000})
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return r.json()["items"]


def head(c: httpx.Client, name: str) -> Any:
    return [(e["seq"], e["hash"]) for e in audit(c, name)][-1:]


def comment_entries(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    return [e for e in audit(c, name) if e["action"].startswith("comment.")]


def comment_events(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    return [e for e in events(c, name) if e["type"].startswith("comment.")]


# -- writing and reading ----------------------------------------------------------------------------


def test_a_comment_on_a_version_is_201_with_its_author_and_is_audited_and_announced(
    c: httpx.Client, who: Who,
) -> None:
    name = versioned(c)

    r = post_comment(who["dana"], name, 2, "the AUC dropped on the holdout set")

    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "model", "version", "request_id", "author", "body", "created_at",
                         "updated_at", "edited"}
    assert (body["model"], body["version"], body["request_id"], body["author"]) == (
        name, 2, None, who.principal["dana"])
    assert (body["body"], body["updated_at"], body["edited"]) == ("the AUC dropped on the holdout set", None, False)
    assert_utc(body["created_at"])
    assert who["viewer"].get(f"/comments/{body['id']}").json() == body
    assert listed(who["viewer"], f"/models/{seg(name)}/versions/2/comments") == [body]
    assert listed(who["viewer"], f"/models/{seg(name)}/versions/1/comments") == []

    snapshot = {"id": body["id"], "body": body["body"], "author": who.principal["dana"], "request_id": None}
    [entry] = comment_entries(c, name)
    assert (entry["action"], entry["actor"], entry["version"], entry["before"], entry["after"]) == (
        "comment.created", who.token_name["dana"], 2, None, snapshot)
    [event] = comment_events(c, name)
    assert (event["type"], event["actor"], event["version"]) == ("comment.created", who.token_name["dana"], 2)
    assert event["data"] == {"model": name, "version": 2, "comment_id": body["id"], "request_id": None,
                             "before": None, "after": snapshot}
    assert c.get("/audit/verify", params={"model": name}).json()["ok"] is True


def test_a_viewer_may_read_but_not_comment(c: httpx.Client, who: Who) -> None:
    name = versioned(c)
    request_id = requested(c, name)
    before = head(c, name)
    problem = assert_problem(post_comment(who["viewer"], name, 1, "hi"), 403, "forbidden")
    assert "editor" in problem["detail"]
    assert_problem(who["viewer"].post(f"/transition-requests/{request_id}/comments", json={"body": "hi"}),
                   403, "forbidden")
    assert head(c, name) == before, "a refused comment changed the audit log"
    assert listed(who["viewer"], f"/models/{seg(name)}/versions/1/comments") == []


def test_a_model_outside_the_tokens_scope_does_not_exist_for_comments(c: httpx.Client, who: Who) -> None:
    name = versioned(c, "cmt-out")
    made = commented(c, name)
    request_id = requested(c, name)
    scoped = who["scoped-admin"]
    for r in (post_comment(scoped, name, 1, "hi"), scoped.get(f"/models/{seg(name)}/versions/1/comments"),
              scoped.post(f"/transition-requests/{request_id}/comments", json={"body": "hi"}),
              scoped.get(f"/transition-requests/{request_id}/comments"),
              scoped.get(f"/comments/{made['id']}"), scoped.patch(f"/comments/{made['id']}", json={"body": "x"}),
              scoped.delete(f"/comments/{made['id']}")):
        assert_problem(r, 404, "not_found")
    inside = versioned(c, "cmt-scoped")
    assert commented(scoped, inside)["model"] == inside


def test_a_missing_version_model_request_or_comment_is_404(c: httpx.Client) -> None:
    name = versioned(c)
    assert_problem(post_comment(c, name, 3, "hi"), 404, "not_found")
    assert_problem(post_comment(c, f"{name}-nope", 1, "hi"), 404, "not_found")
    assert_problem(c.get(f"/models/{seg(name)}/versions/3/comments"), 404, "not_found")
    assert_problem(c.post("/transition-requests/999999/comments", json={"body": "hi"}), 404, "not_found")
    assert_problem(c.get("/transition-requests/999999/comments"), 404, "not_found")
    for r in (c.get("/comments/999999"), c.patch("/comments/999999", json={"body": "x"}),
              c.delete("/comments/999999")):
        assert_problem(r, 404, "not_found")


@pytest.mark.parametrize("body", ["", "   \n\t", "x" * 10_001, "fine\u0000then not", 7, None],
                         ids=["empty", "white-space", "too-long", "nul", "number", "null"])
def test_a_malformed_body_is_400_naming_the_field(c: httpx.Client, body: Any) -> None:
    name = versioned(c)
    made = commented(c, name)
    before = head(c, name)
    for r in (post_comment(c, name, 1, body), c.patch(f"/comments/{made['id']}", json={"body": body})):
        problem = assert_problem(r, 400, "validation_error")
        assert "body" in problem["detail"], problem
    assert head(c, name) == before


def test_unknown_fields_and_a_missing_body_are_400(c: httpx.Client) -> None:
    name = versioned(c)
    path = f"/models/{seg(name)}/versions/1/comments"
    assert_problem(c.post(path, json={"body": "hi", "author": "someone else"}), 400, "validation_error")
    assert_problem(c.post(path, json={}), 400, "validation_error")


def test_the_longest_body_is_taken_as_written(c: httpx.Client) -> None:
    name = versioned(c)
    longest = " x" * 5_000
    assert commented(c, name, body=longest)["body"] == longest


def test_comments_are_listed_oldest_first_a_page_at_a_time(c: httpx.Client) -> None:
    name = versioned(c)
    made = [commented(c, name, body=f"c{i}")["id"] for i in range(5)]
    found = pages(c, f"/models/{seg(name)}/versions/1/comments", limit=2)
    assert [[i["id"] for i in page] for page in found] == [made[:2], made[2:4], made[4:]]
    assert_problem(c.get(f"/models/{seg(name)}/versions/1/comments", params={"cursor": "bogus"}),
                   400, "validation_error")


def test_a_retried_comment_with_the_same_idempotency_key_is_written_once(c: httpx.Client) -> None:
    name = versioned(c)
    key = {"Idempotency-Key": f"cmt-{uuid.uuid4().hex}"}
    path = f"/models/{seg(name)}/versions/1/comments"
    first = c.post(path, json={"body": "once"}, headers=key)
    again = c.post(path, json={"body": "once"}, headers=key)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    assert len(listed(c, path)) == 1 and len(comment_entries(c, name)) == 1
    assert_problem(c.post(path, json={"body": "twice"}, headers=key), 422, "idempotency_conflict")


# -- comments on transition requests ----------------------------------------------------------------


def test_a_request_comment_belongs_to_the_requests_version_and_is_listed_with_it(c: httpx.Client, who: Who) -> None:
    name = versioned(c)
    on_version = commented(who["erin"], name, 2, "on the version")
    request_id = requested(c, name, 2)

    r = who["dana"].post(f"/transition-requests/{request_id}/comments", json={"body": "latency numbers?"})

    assert r.status_code == 201, r.text
    on_request = r.json()
    assert (on_request["model"], on_request["version"], on_request["request_id"], on_request["author"]) == (
        name, 2, request_id, who.principal["dana"])
    assert listed(who["viewer"], f"/transition-requests/{request_id}/comments") == [on_request]
    assert listed(who["viewer"], f"/models/{seg(name)}/versions/2/comments") == [on_version, on_request]
    created = [e for e in comment_events(c, name) if e["data"]["request_id"] == request_id]
    assert [(e["type"], e["version"], e["data"]["comment_id"]) for e in created] == [
        ("comment.created", 2, on_request["id"])]
    assert created[0]["data"]["after"]["request_id"] == request_id


# -- editing ----------------------------------------------------------------------------------------


def test_the_authors_principal_edits_a_comment_with_any_of_its_tokens(c: httpx.Client, who: Who) -> None:
    name = versioned(c)
    made = commented(who["dana"], name, body="first thought")

    r = who["dana-releaser"].patch(f"/comments/{made['id']}", json={"body": "second thought"})

    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited == {**made, "body": "second thought", "updated_at": edited["updated_at"], "edited": True}
    assert assert_utc(edited["updated_at"]) >= assert_utc(made["created_at"])
    assert who["viewer"].get(f"/comments/{made['id']}").json() == edited
    snapshot = {"id": made["id"], "body": "first thought", "author": who.principal["dana"], "request_id": None}
    entry = comment_entries(c, name)[-1]
    assert (entry["action"], entry["actor"], entry["before"], entry["after"]) == (
        "comment.updated", who.token_name["dana-releaser"], snapshot, {**snapshot, "body": "second thought"})
    event = comment_events(c, name)[-1]
    assert (event["type"], event["data"]["before"]["body"], event["data"]["after"]["body"]) == (
        "comment.updated", "first thought", "second thought")


@pytest.mark.parametrize("label", ["erin", "admin", "dana-viewer"])
def test_no_one_else_edits_a_comment_not_even_an_admin(c: httpx.Client, who: Who, label: str) -> None:
    name = versioned(c)
    made = commented(who["dana"], name)
    before = head(c, name)
    client = c if label == "admin" else who[label]
    assert_problem(client.patch(f"/comments/{made['id']}", json={"body": "mine now"}), 403, "forbidden")
    assert head(c, name) == before
    assert c.get(f"/comments/{made['id']}").json() == made


# -- deleting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["dana", "dana-releaser", "admin"])
def test_the_author_or_an_admin_deletes_a_comment_and_every_read_then_404s(
    c: httpx.Client, who: Who, label: str,
) -> None:
    name = versioned(c)
    request_id = requested(c, name)
    kept = commented(who["dana"], name, body="kept")
    r = who["dana"].post(f"/transition-requests/{request_id}/comments", json={"body": "doomed"})
    assert r.status_code == 201, r.text
    doomed = r.json()
    client = c if label == "admin" else who[label]

    r = client.delete(f"/comments/{doomed['id']}")

    assert r.status_code == 204, r.text
    assert_problem(c.get(f"/comments/{doomed['id']}"), 404, "not_found")
    assert_problem(who["dana"].patch(f"/comments/{doomed['id']}", json={"body": "back"}), 404, "not_found")
    assert_problem(c.delete(f"/comments/{doomed['id']}"), 404, "not_found")
    assert listed(c, f"/models/{seg(name)}/versions/1/comments") == [kept]
    assert listed(c, f"/transition-requests/{request_id}/comments") == []
    entry = comment_entries(c, name)[-1]
    assert (entry["action"], entry["before"]["body"], entry["before"]["request_id"], entry["after"]) == (
        "comment.deleted", "doomed", request_id, None)
    event = comment_events(c, name)[-1]
    assert (event["type"], event["data"]["comment_id"], event["data"]["request_id"], event["data"]["after"]) == (
        "comment.deleted", doomed["id"], request_id, None)


def test_another_editor_may_not_delete_a_comment(c: httpx.Client, who: Who) -> None:
    name = versioned(c)
    made = commented(who["dana"], name)
    before = head(c, name)
    assert "author or an admin" in assert_problem(who["erin"].delete(f"/comments/{made['id']}"),
                                                  403, "forbidden")["detail"]
    assert head(c, name) == before


def test_the_comments_of_a_deleted_version_are_gone_with_it(c: httpx.Client) -> None:
    name = versioned(c)
    request_id = requested(c, name)
    made = commented(c, name)
    assert c.delete(f"/models/{seg(name)}/versions/1").status_code == 204
    assert_problem(post_comment(c, name, 1, "hi"), 404, "not_found")
    assert_problem(c.get(f"/models/{seg(name)}/versions/1/comments"), 404, "not_found")
    assert_problem(c.post(f"/transition-requests/{request_id}/comments", json={"body": "hi"}), 404, "not_found")
    assert_problem(c.get(f"/transition-requests/{request_id}/comments"), 404, "not_found")
    assert_problem(c.get(f"/comments/{made['id']}"), 404, "not_found")


# -- webhooks ---------------------------------------------------------------------------------------


def test_a_subscription_to_comment_events_receives_each_write_signed(c: httpx.Client, who: Who,
                                                                     receiver: Receiver) -> None:
    name = versioned(c, "cmt-hook")
    endpoint = receiver.endpoint(f"comments-{uuid.uuid4().hex[:6]}")
    r = c.post("/webhooks", json={"url": endpoint.url, "event_types": ["comment.*"], "models": [name]})
    assert r.status_code == 201, r.text
    endpoint.secrets.append(r.json()["secret"])
    assert r.json()["event_types"] == ["comment.*"]

    made = commented(who["dana"], name)
    assert who["dana"].patch(f"/comments/{made['id']}", json={"body": "edited"}).status_code == 200
    assert c.delete(f"/comments/{made['id']}").status_code == 204
    move = c.post(f"/models/{seg(name)}/versions/1/transitions", json={"to_stage": "staging"})
    assert move.status_code == 200, move.text   # not a comment event: never sent to this subscription

    got = endpoint.wait_for(lambda rs: rs if len(rs) >= 3 else None, what="three comment events")
    assert [(x.body["type"], x.event["data"]["comment_id"]) for x in got] == [
        ("comment.created", made["id"]), ("comment.updated", made["id"]), ("comment.deleted", made["id"])]
    assert all(x.verified for x in got)
    assert [x.event["type"] for x in got] == [e["type"] for e in comment_events(c, name)]
