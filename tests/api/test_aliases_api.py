"""Aliases over HTTP: named, movable pointers to versions (MLflow's aliases)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import (
    assert_problem,
    audit,
    create_model,
    events,
    move,
    register,
    seg,
)


def alias_events(c: httpx.Client, name: str) -> list[tuple[str, int | None, int | None]]:
    return [(e["type"].rsplit(".", 1)[1], e["version"], e["data"]["previous_version"])
            for e in events(c, name) if e["type"].startswith("model_version.alias_")]


def test_put_creates_and_moves_get_follows_delete_removes(c: httpx.Client) -> None:
    name = create_model(c, "alias")
    register(c, name, 2, description="x")
    url = f"/models/{name}/aliases/champion"

    r = c.put(url, json={"version": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["alias"], body["version"]) == (name, "champion", 1)
    assert body["model_version"]["version"] == 1
    assert body["model_version"] == c.get(f"/models/{name}/versions/1").json()

    got = c.get(url)
    assert got.status_code == 200
    assert got.json()["version"] == 1

    r = c.put(url, json={"version": 2})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert c.get(url).json()["model_version"]["version"] == 2

    r = c.delete(url)
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(c.get(url), 404, "not_found")
    assert_problem(c.delete(url), 404, "not_found")

    assert alias_events(c, name) == [("alias_set", 1, None), ("alias_set", 2, 1),
                                     ("alias_deleted", 2, 2)]
    actions = [a["action"] for a in audit(c, name)]
    assert actions[-3:] == ["model_version.alias_set", "model_version.alias_set",
                            "model_version.alias_deleted"]


def test_aliases_are_per_model_and_independent(c: httpx.Client) -> None:
    a = create_model(c, "alias-a")
    b = create_model(c, "alias-b")
    register(c, a, 2)
    register(c, b, 1)
    assert c.put(f"/models/{a}/aliases/champion", json={"version": 2}).status_code == 200
    assert c.put(f"/models/{a}/aliases/challenger", json={"version": 1}).status_code == 200
    assert c.put(f"/models/{b}/aliases/champion", json={"version": 1}).status_code == 200
    assert c.get(f"/models/{a}/aliases/champion").json()["version"] == 2
    assert c.get(f"/models/{a}/aliases/challenger").json()["version"] == 1
    assert c.get(f"/models/{b}/aliases/champion").json()["version"] == 1
    assert c.delete(f"/models/{b}/aliases/champion").status_code == 204
    assert c.get(f"/models/{a}/aliases/champion").json()["version"] == 2
    assert_problem(c.get(f"/models/{b}/aliases/challenger"), 404, "not_found")


def test_setting_an_alias_to_where_it_points_records_nothing(c: httpx.Client) -> None:
    name = create_model(c, "alias-same")
    register(c, name)
    for _ in range(3):
        assert c.put(f"/models/{name}/aliases/stable", json={"version": 1}).status_code == 200
    assert alias_events(c, name) == [("alias_set", 1, None)]


def test_an_alias_follows_its_version_through_stages(c: httpx.Client) -> None:
    name = create_model(c, "alias-stage")
    register(c, name)
    c.put(f"/models/{name}/aliases/candidate", json={"version": 1})
    move(c, name, 1, "staging")
    assert c.get(f"/models/{name}/aliases/candidate").json()["model_version"]["stage"] == "staging"


def test_an_alias_to_a_missing_version_is_404_and_writes_nothing(c: httpx.Client) -> None:
    name = create_model(c, "alias-missing")
    register(c, name)
    for version in (2, 2147483647):
        assert_problem(c.put(f"/models/{name}/aliases/champion", json={"version": version}),
                       404, "not_found")
    assert_problem(c.get(f"/models/{name}/aliases/champion"), 404, "not_found")
    assert alias_events(c, name) == []


def test_an_alias_on_a_missing_model_is_404(c: httpx.Client) -> None:
    assert_problem(c.put("/models/no-such-model-alias/aliases/champion", json={"version": 1}),
                   404, "not_found")


def test_reading_an_alias_names_what_is_missing_the_model_or_its_alias(c: httpx.Client) -> None:
    """One query answers a read by alias; its 404 still says which of the two is missing."""
    r = c.get("/models/no-such-model-alias/aliases/champion")
    assert_problem(r, 404, "not_found")
    assert "does not exist" in r.json()["detail"]
    name = create_model(c, "alias-missing")
    register(c, name, 1)
    r = c.get(f"/models/{name}/aliases/champion")
    assert_problem(r, 404, "not_found")
    assert "has no alias 'champion'" in r.json()["detail"]
    assert c.put(f"/models/{name}/aliases/champion", json={"version": 1}).status_code == 200
    got = c.get(f"/models/{name}/aliases/champion").json()
    assert (got["version"], got["model_version"]["version"], got["model_version"]["stage"]) == (1, 1, "none")


@pytest.mark.parametrize("alias", ["latest", "LATEST", "Latest", "v1", "V12", "v0"])
def test_reserved_aliases_are_400(c: httpx.Client, alias: str) -> None:
    name = create_model(c, "alias-reserved")
    register(c, name)
    assert_problem(c.put(f"/models/{name}/aliases/{alias}", json={"version": 1}), 400, "validation_error")
    assert alias_events(c, name) == []


@pytest.mark.parametrize("alias", ["a.b", "a b", "a:b", "ü", "x" * 256])
def test_malformed_aliases_are_400(c: httpx.Client, alias: str) -> None:
    name = create_model(c, "alias-bad")
    register(c, name)
    assert_problem(c.put(f"/models/{name}/aliases/{seg(alias)}", json={"version": 1}),
                   400, "validation_error")


@pytest.mark.parametrize("alias", ["version1", "v1a", "prod_2024-05", "x" * 255])
def test_names_near_the_reserved_ones_are_fine(c: httpx.Client, alias: str) -> None:
    name = create_model(c, "alias-ok")
    register(c, name)
    r = c.put(f"/models/{name}/aliases/{alias}", json={"version": 1})
    assert r.status_code == 200, r.text
    assert c.get(f"/models/{name}/aliases/{alias}").json()["alias"] == alias


@pytest.mark.parametrize("body", [{}, {"version": 0}, {"version": -1}, {"version": 2147483648},
                                  {"version": 1.5}, {"version": None}, {"version": 1, "x": 1}])
def test_bad_alias_bodies_are_400(c: httpx.Client, body: dict) -> None:
    name = create_model(c, "alias-body")
    register(c, name)
    assert_problem(c.put(f"/models/{name}/aliases/champion", json=body), 400, "validation_error")
    assert_problem(c.get(f"/models/{name}/aliases/champion"), 404, "not_found")
