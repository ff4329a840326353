"""Renaming a model and deleting a version (softly) through the native API: what each answers,
what reads see afterwards, and what is audited and announced."""

from __future__ import annotations

import httpx

from tests.api.helpers import assert_problem, audit, create_model, events, move, register, seg
from tests.conftest import unique


def test_a_renamed_model_is_found_under_its_new_name_only(c: httpx.Client) -> None:
    name, new_name = create_model(c, "renaming"), unique("renamed")
    register(c, name, 2)
    r = c.post(f"/models/{seg(name)}/rename", json={"new_name": new_name})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["latest_version"]) == (new_name, 2)
    assert [v["version"] for v in c.get(f"/models/{seg(new_name)}/versions").json()["items"]] == [1, 2]
    assert_problem(c.get(f"/models/{seg(name)}"), 404, "not_found")
    entry = audit(c, new_name)[-1]
    assert (entry["action"], entry["before"], entry["after"]) == ("model.updated", {"name": name},
                                                                   {"name": new_name})
    assert events(c, new_name)[-1]["type"] == "model.updated"
    taken = create_model(c, "taken")
    assert_problem(c.post(f"/models/{seg(new_name)}/rename", json={"new_name": taken}), 409, "already_exists")
    assert_problem(c.post(f"/models/{seg(new_name)}/rename", json={"new_name": "a/b"}), 400, "validation_error")


def test_a_deleted_version_disappears_and_its_number_is_not_reused(c: httpx.Client) -> None:
    name = create_model(c, "pruning")
    register(c, name, 3)
    c.put(f"/models/{seg(name)}/aliases/candidate", json={"version": 2})
    r = c.delete(f"/models/{seg(name)}/versions/2")
    assert r.status_code == 204, r.text
    assert_problem(c.get(f"/models/{seg(name)}/versions/2"), 404, "not_found")
    assert [v["version"] for v in c.get(f"/models/{seg(name)}/versions").json()["items"]] == [1, 3]
    assert_problem(c.get(f"/models/{seg(name)}/aliases/candidate"), 404, "not_found")
    assert register(c, name)[0]["version"] == 4
    assert [e["type"] for e in events(c, name)][-3:] == [
        "model_version.alias_deleted", "model_version.deleted", "model_version.created"]
    assert_problem(c.delete(f"/models/{seg(name)}/versions/2"), 404, "not_found")


def test_a_version_in_production_cannot_be_deleted(c: httpx.Client) -> None:
    name = create_model(c, "pruning-prod")
    register(c, name, 1)
    move(c, name, 1, "staging")
    move(c, name, 1, "production")
    assert_problem(c.delete(f"/models/{seg(name)}/versions/1"), 409, "conflict")
    assert c.get(f"/models/{seg(name)}/versions/1").json()["stage"] == "production"
