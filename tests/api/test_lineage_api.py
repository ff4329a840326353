"""GET /models/{name}/versions/{version}/lineage: the inputs as registered, the training run with
its OpenLineage run id, the stage history, and the OpenLineage RunEvents the relay built (one per
registration and per stage change of the version, each a valid 2-0-2 event), on both backends.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from registry.services.lineage import RUN_ID_NAMESPACE
from tests.api.helpers import assert_problem, assert_utc, create_model, events, move, register, seg
from tests.lineage_spec import validate_run_event
from tests.support import Server

NAMESPACE = "registry"   # REGISTRY_LINEAGE_NAMESPACE's default
INPUTS = [{"namespace": "s3://data", "name": "train", "version": "7"},
          {"namespace": "postgres://warehouse", "name": "features.daily"}]


def lineage(c: httpx.Client, name: str, version: int, count: int, timeout: float = 20.0) -> dict[str, Any]:
    """The version's lineage once it lists ``count`` events (the relay builds them after the
    commit); exactly ``count``, so an extra event fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/models/{seg(name)}/versions/{version}/lineage")
        assert r.status_code == 200, r.text
        body = r.json()
        if len(body["events"]) >= count:
            assert len(body["events"]) == count, [e["job"]["name"] for e in body["events"]]
            return body
        assert time.monotonic() < deadline, f"{len(body['events'])} of {count} lineage events"
        time.sleep(0.05)


def dataset(name: str, version: int, stage: str) -> dict[str, Any]:
    """A model version as an OpenLineage dataset, as the events must name it (facets compared
    without their producer and schema URL, which ``validate_run_event`` checks)."""
    return {"namespace": NAMESPACE, "name": f"{name}/{version}", "facets": {
        "datasetType": {"datasetType": "MODEL"},
        "version": {"datasetVersion": str(version)},
        "tags": {"tags": [{"key": "stage", "value": stage, "source": "MODEL_REGISTRY"}]}}}


def bare(value: Any) -> Any:
    """``value`` without the facets' ``_producer``/``_schemaURL`` and the event's empty members."""
    if isinstance(value, dict):
        return {k: bare(v) for k, v in value.items() if not k.startswith("_") and v not in ({}, [])}
    if isinstance(value, list):
        return [bare(v) for v in value]
    return value


def feed(c: httpx.Client, name: str, version: int, kind: str) -> list[dict[str, Any]]:
    return [e for e in events(c, name) if e["version"] == version and e["type"] == kind]


# -- registration ------------------------------------------------------------------------------------


def test_a_registration_has_its_inputs_run_and_one_valid_event(c: httpx.Client) -> None:
    name = create_model(c, "lin")
    register(c, name, inputs=INPUTS, run_id="train-2026-06-01")
    body = lineage(c, name, 1, 1)

    assert body["inputs"] == INPUTS
    run_uuid = str(uuid.uuid5(RUN_ID_NAMESPACE, "train-2026-06-01"))
    assert body["run"] == {"id": "train-2026-06-01", "run_uuid": run_uuid}
    assert body["stages"] == []

    (event,) = body["events"]
    validate_run_event(event)
    (created,) = feed(c, name, 1, "model_version.created")
    assert (event["eventType"], event["run"]["runId"]) == ("COMPLETE", created["id"])
    assert assert_utc(event["eventTime"]) == assert_utc(created["at"])
    assert event["job"]["namespace"] == NAMESPACE and event["job"]["name"] == f"{name}.register"
    assert event["job"]["facets"]["jobType"]["jobType"] == "REGISTER"
    assert bare(event["inputs"]) == [
        {"namespace": "s3://data", "name": "train", "facets": {"version": {"datasetVersion": "7"}}},
        {"namespace": "postgres://warehouse", "name": "features.daily"}]
    assert bare(event["outputs"]) == [dataset(name, 1, "none")]
    parent = event["run"]["facets"]["parent"]
    assert (parent["run"]["runId"], bare(parent["job"])) == (run_uuid, {"namespace": NAMESPACE,
                                                                        "name": f"{name}.training"})
    facet = bare(event["run"]["facets"]["modelRegistry"])
    # the W3C trace context of the request that registered it (tests/e2e/test_trace_context.py)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", facet.pop("traceparent"))
    assert facet == {"action": "register", "model": name, "version": 1, "toStage": "none",
                     "actor": "admin", "requestId": created["request_id"],
                     "sequence": created["sequence"], "eventId": created["id"]}


def test_a_uuid_run_id_is_kept_and_a_version_without_one_has_no_run(c: httpx.Client) -> None:
    name = create_model(c, "linrun")
    given = str(uuid.uuid4()).upper()
    register(c, name, run_id=given)
    register(c, name)
    with_run, without = lineage(c, name, 1, 1), lineage(c, name, 2, 1)
    assert with_run["run"] == {"id": given, "run_uuid": given.lower()}
    assert with_run["events"][0]["run"]["facets"]["parent"]["run"]["runId"] == given.lower()
    assert (without["run"], without["inputs"]) == (None, [])
    assert "parent" not in without["events"][0]["run"]["facets"]
    assert without["events"][0]["inputs"] == []
    for body in (with_run, without):
        validate_run_event(body["events"][0])


def test_the_same_run_id_maps_to_the_same_run_uuid_everywhere(c: httpx.Client) -> None:
    a, b = create_model(c, "lina"), create_model(c, "linb")
    register(c, a, run_id="shared-run")
    register(c, b, run_id="shared-run")
    register(c, b, run_id="other-run")
    uuids = [lineage(c, m, v, 1)["run"]["run_uuid"] for m, v in ((a, 1), (b, 1), (b, 2))]
    assert uuids[0] == uuids[1] != uuids[2]
    assert uuid.UUID(uuids[0]).version == 5


# -- stage changes -----------------------------------------------------------------------------------


def test_each_stage_change_is_one_event_in_order(c: httpx.Client) -> None:
    name = create_model(c, "linstage")
    register(c, name, inputs=INPUTS[:1])
    move(c, name, 1, "staging", comment="ready")
    move(c, name, 1, "production", comment="ship it")
    move(c, name, 1, "archived")
    body = lineage(c, name, 1, 4)

    assert [(s["from_stage"], s["to_stage"], s["trigger"], s["comment"]) for s in body["stages"]] == [
        ("none", "staging", "submit", "ready"), ("staging", "production", "promote", "ship it"),
        ("production", "archived", "archive", None)]
    history = c.get(f"/models/{seg(name)}/versions/1/transitions").json()["items"]
    assert body["stages"] == history
    assert body["inputs"] == INPUTS[:1]   # the registration's, unchanged by the moves

    for event in body["events"]:
        validate_run_event(event)
    register_event, *moves = body["events"]
    assert register_event["job"]["name"] == f"{name}.register"
    changes = feed(c, name, 1, "model_version.stage_changed")
    assert [e["run"]["runId"] for e in body["events"]] == [
        feed(c, name, 1, "model_version.created")[0]["id"], *(e["id"] for e in changes)]
    times = [assert_utc(e["eventTime"]) for e in body["events"]]
    assert times == sorted(times)
    for event, (before, after), change in zip(moves, [("none", "staging"), ("staging", "production"),
                                                      ("production", "archived")], changes, strict=True):
        assert event["job"] == {**event["job"], "namespace": NAMESPACE, "name": f"{name}.transition"}
        assert event["job"]["facets"]["jobType"]["jobType"] == "TRANSITION"
        assert bare(event["inputs"]) == [dataset(name, 1, before)]
        assert bare(event["outputs"]) == [dataset(name, 1, after)]
        assert "parent" not in event["run"]["facets"]
        facet = event["run"]["facets"]["modelRegistry"]
        assert (facet["action"], facet["fromStage"], facet["toStage"], facet["trigger"], facet.get("comment"),
                facet["eventId"], facet["sequence"]) == (
            "transition", before, after, change["data"]["trigger"], change["data"]["comment"],
            change["id"], change["sequence"])
        assert assert_utc(event["eventTime"]) == assert_utc(change["at"])


def test_a_promotion_archives_the_incumbent_inside_its_own_event(c: httpx.Client) -> None:
    name = create_model(c, "linpromo")
    register(c, name, 2)
    move(c, name, 1, "staging")
    move(c, name, 1, "production")
    move(c, name, 2, "staging")
    move(c, name, 2, "production")
    # v2's last event is written by the same relay pass as anything v1 would get for its archive.
    v2 = lineage(c, name, 2, 3)
    v1 = lineage(c, name, 1, 3)

    promotion = v2["events"][-1]
    validate_run_event(promotion)
    assert bare(promotion["inputs"]) == [dataset(name, 2, "staging")]
    assert bare(promotion["outputs"]) == [dataset(name, 2, "production"), dataset(name, 1, "archived")]
    assert promotion["run"]["facets"]["modelRegistry"]["archived"] == [1]

    # v1 was archived, as its stage history says, but the archive is no event of its own.
    assert [s["to_stage"] for s in v1["stages"]] == ["staging", "production", "archived"]
    assert [bare(e["outputs"]) for e in v1["events"]] == [
        [dataset(name, 1, stage)] for stage in ("none", "staging", "production")]
    assert promotion["run"]["runId"] not in {e["run"]["runId"] for e in v1["events"]}
    archive = [e for e in feed(c, name, 1, "model_version.stage_changed") if e["data"]["to_stage"] == "archived"]
    assert len(archive) == 1 and archive[0]["id"] not in {e["run"]["runId"] for e in v1["events"] + v2["events"]}


# -- who sees it ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "version"), [("missing", 1), (None, 2), (None, 2**31 - 1)])
def test_an_unknown_model_or_version_is_404(c: httpx.Client, model: str | None, version: int) -> None:
    name = create_model(c, "lin404")
    register(c, name)
    target = f"{name}-{model}" if model else name
    assert_problem(c.get(f"/models/{seg(target)}/versions/{version}/lineage"), 404, "not_found")


@pytest.mark.parametrize("version", ["0", "-1", str(2**31)])
def test_a_version_out_of_bounds_is_400(c: httpx.Client, version: str) -> None:
    name = create_model(c, "lin400")
    assert_problem(c.get(f"/models/{seg(name)}/versions/{version}/lineage"), 400, "validation_error")


@pytest.fixture(scope="module")
def readers(server: Server, c: httpx.Client) -> Iterator[dict[str, httpx.Client]]:
    """A viewer of every model and a releaser limited to models named ``elsewhere-*``."""
    out: dict[str, httpx.Client] = {}
    for label, body in (("viewer", {"role": "viewer"}),
                        ("other scope", {"role": "releaser", "models": ["elsewhere-*"]})):
        r = c.post("/tokens", json={"name": f"lineage-{label}", **body})
        assert r.status_code == 201, r.text
        out[label] = httpx.Client(base_url=server.api, timeout=30.0,
                                  headers={"Authorization": f"Bearer {r.json()['token']}"})
    yield out
    for client in out.values():
        client.close()


def test_a_viewer_reads_it_and_a_token_for_other_models_does_not_see_it(
        c: httpx.Client, readers: dict[str, httpx.Client]) -> None:
    name = create_model(c, "linview")
    register(c, name, inputs=INPUTS, run_id="r1")
    move(c, name, 1, "staging")
    as_admin = lineage(c, name, 1, 2)
    assert lineage(readers["viewer"], name, 1, 2) == as_admin
    problem = assert_problem(readers["other scope"].get(f"/models/{seg(name)}/versions/1/lineage"), 404,
                             "not_found")
    assert "r1" not in problem["detail"]


def test_it_needs_a_token(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "linauth")
    register(c, name)
    r = httpx.get(f"{server.api}/models/{seg(name)}/versions/1/lineage", timeout=30.0)
    assert_problem(r, 401, "unauthenticated")
