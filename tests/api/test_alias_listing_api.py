"""Aliases listed and shown (issue 13): `GET /models/{name}/aliases` in the list convention, ordered
by alias name in code point order on both backends, and the alias names on the model and on each
version wherever a version is returned."""

from __future__ import annotations

import httpx

from tests.api.helpers import assert_problem, create_model, move, pages, register, seg

# Code point order: upper case before '_' before lower case, '-' before digits.
NAMES = ["B-2", "Zeta", "a_1", "alpha", "b"]


def put_alias(c: httpx.Client, name: str, alias: str, version: int) -> dict:  # type: ignore[type-arg]
    r = c.put(f"/models/{seg(name)}/aliases/{alias}", json={"version": version})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_aliases_of_a_model_are_listed_by_name(c: httpx.Client) -> None:
    name = create_model(c, "aliases-list")
    register(c, name, 2)
    empty = c.get(f"/models/{seg(name)}/aliases")
    assert (empty.status_code, empty.json()) == (200, {"items": [], "next_cursor": None})
    for i, alias in enumerate(reversed(NAMES)):
        put_alias(c, name, alias, 1 + i % 2)
    c.put(f"/models/{seg(name)}/aliases/Zeta", json={"version": 1, "protected": True})

    listed = c.get(f"/models/{seg(name)}/aliases").json()
    assert listed["next_cursor"] is None
    assert [(a["alias"], a["version"], a["protected"]) for a in listed["items"]] == [
        ("B-2", 1, False), ("Zeta", 1, True), ("a_1", 1, False), ("alpha", 2, False), ("b", 1, False)]
    paged = pages(c, f"/models/{seg(name)}/aliases", limit=2)
    assert [len(p) for p in paged] == [2, 2, 1]
    assert [a["alias"] for p in paged for a in p] == NAMES


def test_listing_the_aliases_of_a_missing_model_is_404(c: httpx.Client) -> None:
    assert_problem(c.get("/models/no-such-model-here/aliases"), 404, "not_found")
    name = create_model(c, "aliases-bad-cursor")
    assert_problem(c.get(f"/models/{seg(name)}/aliases", params={"cursor": "nope"}), 400,
                   "validation_error")


def test_models_and_versions_carry_their_alias_names(c: httpx.Client) -> None:
    name = create_model(c, "aliases-shown")
    assert c.get(f"/models/{seg(name)}").json()["aliases"] == []
    created = register(c, name, 2)
    assert created[0]["aliases"] == []
    set_ = put_alias(c, name, "champion", 1)
    assert set_["model_version"]["aliases"] == ["champion"]
    put_alias(c, name, "Canary", 1)
    put_alias(c, name, "next", 2)

    model = c.get(f"/models/{seg(name)}").json()
    assert model["aliases"] == ["Canary", "champion", "next"]
    listed = c.get("/models", params={"name_prefix": name}).json()["items"]
    assert [m["aliases"] for m in listed] == [["Canary", "champion", "next"]]
    patched = c.patch(f"/models/{seg(name)}", json={"description": "x"})
    assert patched.json()["aliases"] == ["Canary", "champion", "next"]
    version = f"/models/{seg(name)}/versions"
    assert c.get(f"{version}/1").json()["aliases"] == ["Canary", "champion"]
    assert c.get(f"{version}/2").json()["aliases"] == ["next"]
    assert [v["aliases"] for v in c.get(version).json()["items"]] == [["Canary", "champion"], ["next"]]
    assert c.get(f"/models/{seg(name)}/aliases/next").json()["model_version"]["aliases"] == ["next"]

    move(c, name, 1, "staging")
    promoted = move(c, name, 1, "production")
    assert promoted["version"]["aliases"] == ["Canary", "champion"]
    production = c.get(f"/models/{seg(name)}/stages/production").json()["items"]
    assert [v["aliases"] for v in production] == [["Canary", "champion"]]

    moved = put_alias(c, name, "champion", 2)
    assert moved["model_version"]["aliases"] == ["champion", "next"]
    assert c.get(f"{version}/1").json()["aliases"] == ["Canary"]
    assert c.delete(f"/models/{seg(name)}/aliases/Canary").status_code == 204
    assert c.get(f"{version}/1").json()["aliases"] == []
    assert c.get(f"/models/{seg(name)}").json()["aliases"] == ["champion", "next"]
