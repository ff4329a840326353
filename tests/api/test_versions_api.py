"""Model versions over HTTP: registration, filters and paging, strong ETags and If-Match, the
metrics freeze after `none`, and version bounds in paths."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import (
    assert_problem,
    assert_utc,
    create_model,
    events,
    move,
    pages,
    register,
)


def versions_of(c: httpx.Client, name: str, params: list[tuple[str, str | int]] | None = None) -> list[int]:
    r = c.get(f"/models/{name}/versions", params=params or [])
    assert r.status_code == 200, r.text
    return [v["version"] for v in r.json()["items"]]


# -- register -------------------------------------------------------------------------------------


def test_register_returns_201_with_the_next_number_in_stage_none(c: httpx.Client) -> None:
    name = create_model(c, "reg")
    body = {
        "source": "s3://models/fraud/1", "run_id": "run-42", "description": "first cut",
        "tags": {"framework": "sklearn"}, "metrics": {"auc": 0.91, "loss": 3},
        "inputs": [{"namespace": "s3://data", "name": "transactions", "version": "2024-05"},
                   {"namespace": "postgres://db", "name": "public.labels"}],
    }
    r = c.post(f"/models/{name}/versions", json=body)
    assert r.status_code == 201, r.text
    v = r.json()
    assert (v["model"], v["version"], v["stage"]) == (name, 1, "none")
    for key in ("source", "run_id", "description", "tags", "inputs"):
        assert v[key] == body[key], key
    assert v["metrics"] == {"auc": 0.91, "loss": 3.0}
    assert v["created_by"] == "admin"
    assert assert_utc(v["created_at"]) == assert_utc(v["updated_at"])
    assert r.headers["etag"] == v["etag"]
    assert c.get(f"/models/{name}/versions/1").json() == v

    numbers = [x["version"] for x in register(c, name, 3)]
    assert numbers == [2, 3, 4]
    assert c.get(f"/models/{name}").json()["latest_version"] == 4
    created = [e for e in events(c, name) if e["type"] == "model_version.created"]
    assert [e["version"] for e in created] == [1, 2, 3, 4]
    assert created[0]["data"]["after"]["stage"] == "none"


def test_registering_on_a_missing_model_is_404(c: httpx.Client) -> None:
    assert_problem(c.post("/models/no-such-model-x/versions", json={"source": "s"}), 404, "not_found")


@pytest.mark.parametrize("body", [
    {},
    {"source": ""},
    {"source": 5},
    {"source": "s", "bogus": 1},
    {"source": "s", "metrics": {"auc": "high"}},
    {"source": "s", "metrics": {"auc": True}},
    {"source": "s", "metrics": {"": 1.0}},
    {"source": "s", "tags": {"k": 1}},
    {"source": "s", "run_id": ""},
    {"source": "s", "inputs": [{"namespace": "n"}]},
    {"source": "s", "inputs": [{"namespace": "n", "name": "x", "extra": 1}]},
    {"source": "s", "inputs": {"namespace": "n", "name": "x"}},
], ids=lambda b: ",".join(f"{k}={v!r}" for k, v in b.items()) or "empty")
def test_bad_registrations_are_400_and_use_no_number(c: httpx.Client, body: dict) -> None:
    name = create_model(c, "badreg")
    assert_problem(c.post(f"/models/{name}/versions", json=body), 400, "validation_error")
    assert register(c, name)[0]["version"] == 1


@pytest.mark.parametrize("raw", [b'{"source": "s", "metrics": {"m": 1e999}}',
                                 b'{"source": "s", "metrics": {"m": -1e999}}',
                                 b'{"source": "s", "metrics": {"m": NaN}}',
                                 b'{"source": "s", "metrics": {"m": Infinity}}'])
def test_non_finite_metrics_are_400(c: httpx.Client, raw: bytes) -> None:
    name = create_model(c, "inf")
    r = c.post(f"/models/{name}/versions", content=raw, headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "validation_error")
    assert versions_of(c, name) == []


# -- list -----------------------------------------------------------------------------------------


def test_list_filters_by_stage_run_and_tags(c: httpx.Client) -> None:
    name = create_model(c, "filters")
    register(c, name, run_id="run-a", tags={"team": "risk", "kind": "gbm"})       # 1
    register(c, name, run_id="run-b", tags={"team": "risk", "kind": "linear"})    # 2
    register(c, name, run_id="run-a", tags={"team": "growth", "kind": "gbm"})     # 3
    register(c, name, tags={"team": "risk", "kind": "gbm", "url": "http://x:1"})  # 4
    move(c, name, 2, "staging")
    move(c, name, 3, "staging")
    move(c, name, 3, "production")

    assert versions_of(c, name) == [1, 2, 3, 4]
    assert versions_of(c, name, [("stage", "none")]) == [1, 4]
    assert versions_of(c, name, [("stage", "staging")]) == [2]
    assert versions_of(c, name, [("stage", "production")]) == [3]
    assert versions_of(c, name, [("stage", "archived")]) == []
    assert versions_of(c, name, [("run_id", "run-a")]) == [1, 3]
    assert versions_of(c, name, [("run_id", "nope")]) == []
    assert versions_of(c, name, [("tag", "team:risk")]) == [1, 2, 4]
    assert versions_of(c, name, [("tag", "team:risk"), ("tag", "kind:gbm")]) == [1, 4]
    assert versions_of(c, name, [("tag", "team:risk"), ("tag", "kind:none")]) == []
    assert versions_of(c, name, [("tag", "url:http://x:1")]) == [4]  # value split at the first ':'
    assert versions_of(c, name, [("tag", "team:RISK")]) == []
    assert versions_of(c, name, [("tag", "absent:")]) == []
    assert versions_of(c, name, [("stage", "none"), ("run_id", "run-a"), ("tag", "kind:gbm")]) == [1]


@pytest.mark.parametrize("params", [
    [("stage", "prod")], [("stage", "NONE")], [("tag", "nocolon")], [("tag", ":value")],
    [("limit", "0")], [("limit", "1001")], [("limit", "ten")], [("cursor", "garbage!!")],
    [("cursor", "WyJhIl0")],  # ["a"]: a name cursor, not a version cursor
])
def test_bad_list_queries_are_400(c: httpx.Client, params: list) -> None:
    name = create_model(c, "badlist")
    assert_problem(c.get(f"/models/{name}/versions", params=params), 400, "validation_error")


def test_paging_visits_every_version_once_in_order(c: httpx.Client) -> None:
    name = create_model(c, "paging")
    register(c, name, 7, tags={"even": "no"})
    for v in (2, 4, 6):
        assert c.patch(f"/models/{name}/versions/{v}", json={"tags": {"even": "yes"}}).status_code == 200

    def walk(params: dict) -> list[int]:
        return [v["version"] for page in pages(c, f"/models/{name}/versions", **params) for v in page]

    assert walk({"limit": 2}) == [1, 2, 3, 4, 5, 6, 7]
    assert walk({"limit": 3}) == [1, 2, 3, 4, 5, 6, 7]
    assert walk({"limit": 1, "tag": "even:yes"}) == [2, 4, 6]
    first = c.get(f"/models/{name}/versions", params={"limit": 7}).json()
    assert first["next_cursor"] is None


def test_the_default_page_is_50(c: httpx.Client) -> None:
    name = create_model(c, "fifty")
    register(c, name, 51)
    page = c.get(f"/models/{name}/versions").json()
    assert [v["version"] for v in page["items"]] == list(range(1, 51))
    rest = c.get(f"/models/{name}/versions", params={"cursor": page["next_cursor"]}).json()
    assert [v["version"] for v in rest["items"]] == [51]
    assert rest["next_cursor"] is None


# -- get, ETag and If-Match -----------------------------------------------------------------------


def test_get_has_a_strong_etag_equal_to_the_body_etag(c: httpx.Client) -> None:
    name = create_model(c, "etag")
    register(c, name, 2)
    r1 = c.get(f"/models/{name}/versions/1")
    r2 = c.get(f"/models/{name}/versions/2")
    assert r1.status_code == 200
    etag = r1.headers["etag"]
    assert etag == r1.json()["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert r2.headers["etag"] != etag
    assert c.get(f"/models/{name}/versions/1").headers["etag"] == etag  # stable while unchanged


def test_patch_honours_if_match(c: httpx.Client) -> None:
    name = create_model(c, "ifmatch")
    register(c, name, description="v0")
    url = f"/models/{name}/versions/1"
    etag0 = c.get(url).headers["etag"]

    r = c.patch(url, json={"description": "v1"}, headers={"If-Match": etag0})
    assert r.status_code == 200, r.text
    etag1 = r.headers["etag"]
    assert etag1 == r.json()["etag"] != etag0
    assert r.json()["description"] == "v1"
    assert c.get(url).headers["etag"] == etag1

    # The old tag is stale now: refused, and nothing changes.
    body = assert_problem(c.patch(url, json={"description": "lost update"}, headers={"If-Match": etag0}),
                          412, "precondition_failed")
    assert etag1 in body["detail"] or "changed" in body["detail"]
    assert c.get(url).json()["description"] == "v1"
    assert c.get(url).headers["etag"] == etag1

    weak = "W/" + etag1
    assert_problem(c.patch(url, json={"description": "weak"}, headers={"If-Match": weak}),
                   412, "precondition_failed")
    assert_problem(c.patch(url, json={"description": "x"}, headers={"If-Match": '"nonsense"'}),
                   412, "precondition_failed")

    r = c.patch(url, json={"description": "listed"}, headers={"If-Match": f'"other", {etag1}'})
    assert r.status_code == 200, r.text
    r = c.patch(url, json={"description": "star"}, headers={"If-Match": "*"})
    assert r.status_code == 200, r.text
    r = c.patch(url, json={"description": "no precondition"})
    assert r.status_code == 200, r.text
    updates = [e for e in events(c, name) if e["type"] == "model_version.updated"]
    assert [u["data"]["after"]["description"] for u in updates] == ["v1", "listed", "star", "no precondition"]


def test_a_transition_changes_the_etag(c: httpx.Client) -> None:
    name = create_model(c, "etagmove")
    register(c, name)
    url = f"/models/{name}/versions/1"
    before = c.get(url).headers["etag"]
    moved = c.post(f"{url}/transitions", json={"to_stage": "staging"})
    assert moved.status_code == 200
    after = c.get(url).headers["etag"]
    assert after != before
    assert moved.headers["etag"] == after == moved.json()["version"]["etag"]
    assert_problem(c.patch(url, json={"description": "x"}, headers={"If-Match": before}),
                   412, "precondition_failed")


# -- patch ----------------------------------------------------------------------------------------


def test_patch_is_a_merge_patch_of_description_tags_and_metrics(c: httpx.Client) -> None:
    name = create_model(c, "vpatch")
    register(c, name, description="d", tags={"a": "1", "b": "2"}, metrics={"auc": 0.5, "f1": 0.4})
    url = f"/models/{name}/versions/1"
    r = c.patch(url, json={"tags": {"a": None, "c": "3"}, "metrics": {"auc": 0.7, "f1": None}})
    assert r.status_code == 200, r.text
    v = r.json()
    assert (v["description"], v["tags"], v["metrics"]) == ("d", {"b": "2", "c": "3"}, {"auc": 0.7})
    assert assert_utc(v["updated_at"]) > assert_utc(v["created_at"])
    assert c.get(url).json() == v
    assert c.patch(url, json={"description": None}).json()["description"] == ""
    assert c.patch(url, json={"tags": None, "metrics": None}).json()["tags"] == {}
    assert c.get(url).json()["metrics"] == {}


@pytest.mark.parametrize("patch", [{"stage": "production"}, {"source": "elsewhere"}, {"run_id": "r"},
                                   {"version": 9}, {"metrics": {"m": "x"}}, {"tags": {"k": 2}}])
def test_patching_immutable_or_mistyped_fields_is_400(c: httpx.Client, patch: dict) -> None:
    name = create_model(c, "immut")
    register(c, name)
    url = f"/models/{name}/versions/1"
    before = c.get(url).json()
    assert_problem(c.patch(url, json=patch), 400, "validation_error")
    assert c.get(url).json() == before


@pytest.mark.parametrize("stage_path", [["staging"], ["staging", "production"], ["archived"]],
                         ids=lambda p: p[-1])
def test_metrics_are_frozen_once_the_stage_is_not_none(c: httpx.Client, stage_path: list[str]) -> None:
    name = create_model(c, "frozen")
    register(c, name, metrics={"auc": 0.9})
    for stage in stage_path:
        move(c, name, 1, stage)
    url = f"/models/{name}/versions/1"
    before = c.get(url).json()
    n_events = len(events(c, name))

    for patch in ({"metrics": {"auc": 0.99}}, {"metrics": {"new": 1.0}}, {"metrics": {"auc": None}},
                  {"metrics": None}):
        assert_problem(c.patch(url, json=patch), 409, "conflict")
    # One request, one transaction: the allowed half of a refused patch is not applied either.
    assert_problem(c.patch(url, json={"description": "sneaky", "metrics": {"auc": 1.0}}), 409, "conflict")
    assert c.get(url).json() == before
    assert len(events(c, name)) == n_events

    # Re-stating the same metrics changes nothing, so it is not refused; description still changes.
    r = c.patch(url, json={"metrics": {"auc": 0.9}, "description": "notes"})
    assert r.status_code == 200, r.text
    assert (r.json()["metrics"], r.json()["description"]) == ({"auc": 0.9}, "notes")


# -- bounds and missing ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0", "-1", "2147483648", "99999999999999999999"])
@pytest.mark.parametrize("method,suffix,body", [
    ("GET", "", None), ("PATCH", "", {"description": "x"}),
    ("POST", "/transitions", {"to_stage": "staging"}), ("GET", "/transitions", None),
])
def test_versions_out_of_bounds_in_the_path_are_400(c: httpx.Client, version: str, method: str,
                                                    suffix: str, body: dict | None) -> None:
    name = create_model(c, "bounds")
    r = c.request(method, f"/models/{name}/versions/{version}{suffix}", json=body)
    assert_problem(r, 400, "validation_error")


@pytest.mark.parametrize("version", [2, 2147483647])
def test_a_missing_version_is_404(c: httpx.Client, version: int) -> None:
    name = create_model(c, "missingv")
    register(c, name)
    for method, suffix, body in (("GET", "", None), ("PATCH", "", {"description": "x"}),
                                 ("POST", "/transitions", {"to_stage": "staging"}),
                                 ("GET", "/transitions", None)):
        r = c.request(method, f"/models/{name}/versions/{version}{suffix}", json=body)
        assert_problem(r, 404, "not_found")
    assert [e["type"] for e in events(c, name)] == ["model.created", "model_version.created"]
