"""Registered models over HTTP: create, name rules, percent-encoded names, listing and paging,
merge-patch updates and deletion."""

from __future__ import annotations

import random

import httpx
import pytest
from sqlalchemy import func, select

from tests.api.helpers import (
    aliases_t,
    assert_problem,
    assert_utc,
    audit,
    audit_t,
    chain_of,
    create_model,
    db_rows,
    events,
    model_id,
    move,
    pages,
    register,
    seg,
    versions_t,
)
from tests.conftest import unique
from tests.support import Server


def list_all(c: httpx.Client, limit: int, **params: str) -> tuple[list[str], int]:
    """Every name the list yields, page by page, and the number of pages."""
    found = pages(c, "/models", limit=limit, **params)
    return [m["name"] for page in found for m in page], len(found)


# -- create ---------------------------------------------------------------------------------------


def test_create_returns_201_and_the_model(c: httpx.Client) -> None:
    name = unique("create")
    r = c.post("/models", json={"name": name, "description": "fraud scorer", "tags": {"team": "risk"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == name
    assert body["description"] == "fraud scorer"
    assert body["tags"] == {"team": "risk"}
    assert body["latest_version"] is None
    assert body["created_by"] == "admin"
    assert assert_utc(body["created_at"]) == assert_utc(body["updated_at"])
    assert c.get(f"/models/{name}").json() == body


def test_create_with_defaults(c: httpx.Client) -> None:
    name = unique("defaults")
    body = c.post("/models", json={"name": name}).json()
    assert (body["description"], body["tags"]) == ("", {})


def test_creating_a_taken_name_is_409_and_changes_nothing(c: httpx.Client) -> None:
    name = create_model(c, "taken", description="first")
    r = c.post("/models", json={"name": name, "description": "second"})
    assert_problem(r, 409, "already_exists")
    assert c.get(f"/models/{name}").json()["description"] == "first"
    assert [e["type"] for e in events(c, name)] == ["model.created"]
    assert len(audit(c, name)) == 1


@pytest.mark.parametrize("bad", [
    ".", "..", "a/b", "/lead", "a:b", "models:/x", " lead", "trail ", "\tx", "a\nb", "a\x00b",
    "a\x7fb", "", "x" * 257,
], ids=repr)
def test_invalid_names_are_400_validation_error(c: httpx.Client, bad: str) -> None:
    assert_problem(c.post("/models", json={"name": bad}), 400, "validation_error")


def test_a_256_character_name_is_accepted(c: httpx.Client) -> None:
    name = unique("long") + "x" * (256 - len(unique("long")))
    assert len(name) == 256
    assert c.post("/models", json={"name": name}).status_code == 201
    assert c.get(f"/models/{name}").json()["name"] == name


def test_a_256_character_unicode_name_is_accepted(c: httpx.Client) -> None:
    name = unique("u") + "模" * (256 - len(unique("u")))
    assert len(name) == 256
    r = c.post("/models", json={"name": name})
    assert r.status_code == 201, r.text
    assert c.get(f"/models/{seg(name)}").json()["name"] == name
    register(c, name)
    assert [e["model"] for e in events(c, name)] == [name, name]


@pytest.mark.parametrize("body", [
    {"name": "ok-name", "bogus": 1},
    {"name": 5},
    {"description": "no name"},
    {"name": "ok-name", "tags": {"a": 1}},
    {"name": "ok-name", "tags": {"": "empty key"}},
    {"name": "ok-name", "tags": ["a"]},
    {"name": "ok-name", "description": None},
], ids=lambda b: ",".join(f"{k}={v!r}" for k, v in b.items()))
def test_bad_bodies_are_400_and_create_nothing(c: httpx.Client, body: dict) -> None:
    if body.get("name") == "ok-name":
        body = {**body, "name": unique("badbody")}
    assert_problem(c.post("/models", json=body), 400, "validation_error")
    if isinstance(body.get("name"), str):
        assert_problem(c.get(f"/models/{seg(body['name'])}"), 404, "not_found")


def test_a_name_over_256_in_the_path_is_400(c: httpx.Client) -> None:
    assert_problem(c.get("/models/" + "y" * 257), 400, "validation_error")


# -- names that need percent-encoding -----------------------------------------------------------


@pytest.mark.parametrize("base", [
    "with space", "100%", "modèle ü 模型", "a+b", "what?", "x#y", "100%2Fsure", "...", "a&b=c",
])
def test_awkward_names_round_trip_percent_encoded(c: httpx.Client, base: str) -> None:
    name = f"{base} {unique('enc')}"
    path = f"/models/{seg(name)}"
    assert c.post("/models", json={"name": name}).status_code == 201
    r = c.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name
    r = c.patch(path, json={"description": "patched"})
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "patched"
    v = register(c, name)[0]
    assert (v["model"], v["version"]) == (name, 1)
    assert c.get(f"{path}/versions/1").json()["model"] == name
    assert move(c, name, 1, "staging")["version"]["stage"] == "staging"
    assert [m["name"] for m in c.get("/models", params={"name_prefix": name}).json()["items"]] == [name]
    assert [e["model"] for e in events(c, name)] == [name] * 4
    assert c.delete(f"/models/{seg(name)}").status_code == 204
    assert_problem(c.get(path), 404, "not_found")


def test_a_near_miss_of_an_encoded_name_is_not_found(c: httpx.Client) -> None:
    name = f"a+b {unique('plus')}"
    create_model(c, name=name)
    assert_problem(c.get(f"/models/{seg(name.replace('+', ' '))}"), 404, "not_found")
    assert_problem(c.get(f"/models/{seg(name).replace('%2B', '+').replace('%20', '+')}"), 404,
                   "not_found")


# -- list -----------------------------------------------------------------------------------------


def test_list_is_ordered_by_name_and_paging_visits_each_model_once(c: httpx.Client) -> None:
    group = unique("page")
    names = [f"{group}-{suffix}" for suffix in ("a", "B", "b", "c-1", "c0", "d", "e", "f", "zz")]
    for name in random.sample(names, len(names)):
        create_model(c, name=name)
    got, pages = list_all(c, 2, name_prefix=group)
    assert got == sorted(names)
    assert pages == 5
    whole, _ = list_all(c, 1000, name_prefix=group)
    assert whole == got
    # Without a filter, small pages still see every model exactly once, in order.
    everything, _ = list_all(c, 7)
    assert everything == sorted(everything)
    assert len(everything) == len(set(everything))
    assert set(names) <= set(everything)


def test_name_prefix_matches_literally(c: httpx.Client) -> None:
    group = unique("lit")
    for suffix in ("_under", "xunder", "%pct", "xpct", "plain"):
        create_model(c, name=group + suffix)
    only = lambda p: [m["name"] for m in c.get("/models", params={"name_prefix": p}).json()["items"]]  # noqa: E731
    assert only(group + "_") == [group + "_under"]
    assert only(group + "%") == [group + "%pct"]
    assert len(only(group)) == 5
    assert only(group + "nothing") == []


def test_name_prefix_is_case_sensitive(c: httpx.Client) -> None:
    """Names are case-sensitive (two models may differ only in case), so a prefix is too."""
    group = unique("case")
    create_model(c, name=f"{group}-Upper")
    create_model(c, name=f"{group}-lower")
    only = lambda p: [m["name"] for m in c.get("/models", params={"name_prefix": p}).json()["items"]]  # noqa: E731
    assert only(f"{group}-u") == []
    assert only(f"{group}-U") == [f"{group}-Upper"]
    assert only(f"{group.upper()}") == []


def test_names_differing_only_in_case_are_distinct_models(c: httpx.Client) -> None:
    base = unique("dup")
    create_model(c, name=base.upper())
    assert c.post("/models", json={"name": base}).status_code == 201
    assert c.get(f"/models/{base.upper()}").json()["name"] == base.upper()


@pytest.mark.parametrize("cursor", ["garbage!!", "%%%", "WzFd", "bnVsbA", "W10", "WyJhIiwiYiJd"])
def test_a_cursor_not_issued_by_the_service_is_400(c: httpx.Client, cursor: str) -> None:
    # WzFd = [1] (wrong type for a name cursor), bnVsbA = null, W10 = [], WyJhIiwiYiJd = ["a","b"]
    assert_problem(c.get("/models", params={"cursor": cursor}), 400, "validation_error")


# -- update ---------------------------------------------------------------------------------------


def test_patch_is_a_json_merge_patch(c: httpx.Client) -> None:
    name = create_model(c, "patch", description="before", tags={"a": "1", "b": "2"})
    created = c.get(f"/models/{name}").json()

    r = c.patch(f"/models/{name}", json={"tags": {"a": None, "c": "3"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tags"] == {"b": "2", "c": "3"}
    assert body["description"] == "before"
    assert assert_utc(body["updated_at"]) > assert_utc(created["updated_at"])
    assert body["created_at"] == created["created_at"]

    body = c.patch(f"/models/{name}", json={"description": "after"}).json()
    assert (body["description"], body["tags"]) == ("after", {"b": "2", "c": "3"})
    assert c.get(f"/models/{name}").json() == body

    assert c.patch(f"/models/{name}", json={"tags": None}).json()["tags"] == {}

    updates = [e for e in events(c, name) if e["type"] == "model.updated"]
    assert [(u["data"]["before"], u["data"]["after"]) for u in updates] == [
        ({"tags": {"a": "1", "b": "2"}}, {"tags": {"b": "2", "c": "3"}}),
        ({"description": "before"}, {"description": "after"}),
        ({"tags": {"b": "2", "c": "3"}}, {"tags": {}}),
    ]


def test_a_patch_that_changes_nothing_records_nothing(c: httpx.Client) -> None:
    name = create_model(c, "noop", description="same", tags={"k": "v"})
    for patch in ({}, {"description": "same"}, {"tags": {"k": "v"}}, {"tags": {"absent": None}}):
        r = c.patch(f"/models/{name}", json=patch)
        assert r.status_code == 200, r.text
        assert (r.json()["description"], r.json()["tags"]) == ("same", {"k": "v"})
    assert [e["type"] for e in events(c, name)] == ["model.created"]


@pytest.mark.parametrize("patch", [{"name": "renamed"}, {"bogus": 1}, {"tags": {"a": 1}},
                                   {"tags": {"": "x"}}, {"description": 3}])
def test_bad_patches_are_400_and_change_nothing(c: httpx.Client, patch: dict) -> None:
    name = create_model(c, "badpatch", tags={"a": "1"})
    assert_problem(c.patch(f"/models/{name}", json=patch), 400, "validation_error")
    assert c.get(f"/models/{name}").json()["tags"] == {"a": "1"}
    assert len(events(c, name)) == 1


# -- delete ---------------------------------------------------------------------------------------


def test_delete_is_204_then_404_and_removes_versions_and_aliases(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "delete")
    register(c, name, 2)
    assert c.put(f"/models/{name}/aliases/champion", json={"version": 2}).status_code == 200
    mid = model_id(server, name)

    r = c.delete(f"/models/{seg(name)}")
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(c.get(f"/models/{name}"), 404, "not_found")
    assert_problem(c.get(f"/models/{name}/versions/1"), 404, "not_found")
    assert_problem(c.delete(f"/models/{name}"), 404, "not_found")
    assert name not in [m["name"] for m in c.get("/models", params={"name_prefix": name}).json()["items"]]

    versions_left = db_rows(server, select(func.count()).select_from(versions_t)
                            .where(versions_t.c.model_id == mid))[0][0]
    aliases_left = db_rows(server, select(func.count()).select_from(aliases_t)
                           .where(aliases_t.c.model_id == mid))[0][0]
    assert (versions_left, aliases_left) == (0, 0)

    # The audit chain and the events outlive the model, and still verify.
    assert [e["type"] for e in events(c, name)][-1] == "model.deleted"
    assert audit(c, name)[-1]["action"] == "model.deleted"
    assert c.get("/audit/verify", params={"model": name}).json()["ok"] is True
    audit_rows = db_rows(server, select(func.count()).select_from(audit_t)
                         .where(audit_t.c.chain == f"model:{mid}"))[0][0]
    # model.created, 2 x model_version.created, model_version.alias_set, model.deleted
    assert audit_rows == len(audit(c, name)) == 5


def test_a_recreated_name_starts_afresh(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "recreate")
    register(c, name, 3)
    old_chain = chain_of(server, name)
    assert c.delete(f"/models/{seg(name)}").status_code == 204

    create_model(c, name=name)
    assert chain_of(server, name) != old_chain
    assert c.get(f"/models/{name}").json()["latest_version"] is None
    assert register(c, name)[0]["version"] == 1
    assert [v["version"] for v in c.get(f"/models/{name}/versions").json()["items"]] == [1]
    assert [(e["type"], e["sequence"]) for e in events(c, name)] == [
        ("model.created", 1), ("model_version.created", 2)]


def test_delete_while_a_version_is_in_production_is_409_conflict(c: httpx.Client) -> None:
    name = create_model(c, "inprod")
    register(c, name)
    move(c, name, 1, "staging")
    move(c, name, 1, "production")
    before = len(events(c, name))

    assert_problem(c.delete(f"/models/{seg(name)}"), 409, "conflict")
    assert c.get(f"/models/{name}").status_code == 200
    assert c.get(f"/models/{name}/versions/1").json()["stage"] == "production"
    assert len(events(c, name)) == before

    move(c, name, 1, "archived")
    assert c.delete(f"/models/{seg(name)}").status_code == 204


def test_latest_version_follows_registrations(c: httpx.Client) -> None:
    name = create_model(c, "latest")
    register(c, name, 3)
    assert c.get(f"/models/{name}").json()["latest_version"] == 3
    listed = c.get("/models", params={"name_prefix": name}).json()["items"]
    assert [(m["name"], m["latest_version"]) for m in listed] == [(name, 3)]
