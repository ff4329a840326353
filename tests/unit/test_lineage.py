"""OpenLineage RunEvents built from outbox events, each checked against the 2-0-2 schemas.

The event dicts are shaped as the unit of work writes them (``data`` = the change's event data,
``at`` as RFC 3339). Every built event goes through ``tests.lineage_spec.validate_run_event``; the
validator itself is shown to refuse broken events, so a pass means something.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from registry.adapters.lineage import LineageBuilder, facet_schema
from tests.lineage_spec import SpecViolation, validate_run_event, violations

# Written out, not imported: changing it would cut every stored event from its training run.
RUN_ID_NAMESPACE = uuid.UUID("6f0c5a52-8d0e-5d43-9a55-2b4c0d3e7a11")
AT = "2025-03-04T05:06:07.123456Z"
MODEL_FACET_URL = ("https://model-registry.dev/spec/facets/1-1-0/ModelRegistryRunFacet.json"
                   "#/$defs/ModelRegistryRunFacet")


def snapshot(*, stage: str = "none", run_id: str | None = None,
             inputs: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"stage": stage, "source": "s3://models/fraud/3", "run_id": run_id, "description": "",
            "tags": {}, "metrics": {}, "inputs": inputs or []}


def created(version: int = 3, **kwargs: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "model_version.created", "model": "fraud",
            "version": version, "sequence": 7, "actor": "alice", "request_id": "req-created",
            "at": AT, "data": {"model": "fraud", "version": version, "before": None,
                               "after": snapshot(**kwargs)}}


def stage_changed(version: int, from_stage: str, to_stage: str, trigger: str, *,
                  comment: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "model_version.stage_changed", "model": "fraud",
            "version": version, "sequence": 9, "actor": "bob", "request_id": "req-move", "at": AT,
            "data": {"model": "fraud", "version": version, "from_stage": from_stage,
                     "to_stage": to_stage, "trigger": trigger, "comment": comment, **extra,
                     "before": {"stage": from_stage},
                     "after": {"stage": to_stage, "trigger": trigger, "comment": comment}}}


def build(event: dict[str, Any], namespace: str = "registry") -> dict[str, Any]:
    built = LineageBuilder(namespace).build(event)
    assert built is not None
    return built


def model_dataset(out: dict[str, Any]) -> tuple[str, str, str, str, list[dict[str, str]]]:
    """(namespace, name, datasetType, datasetVersion, tags) of a model-version dataset."""
    f = out["facets"]
    return (out["namespace"], out["name"], f["datasetType"]["datasetType"],
            f["version"]["datasetVersion"], [{k: t[k] for k in ("key", "value", "source")}
                                             for t in f["tags"]["tags"]])


def stage_tag(stage: str) -> list[dict[str, str]]:
    return [{"key": "stage", "value": stage, "source": "MODEL_REGISTRY"}]


# -- registration -----------------------------------------------------------------------------------


def test_a_registration_is_a_completed_run_of_the_register_job() -> None:
    event = created()
    out = build(event)
    assert out["eventType"] == "COMPLETE"
    assert out["eventTime"] == AT
    assert out["run"]["runId"] == event["id"]  # a re-sent event is the same run
    assert (out["job"]["namespace"], out["job"]["name"]) == ("registry", "fraud.register")
    job_type = out["job"]["facets"]["jobType"]
    assert (job_type["processingType"], job_type["integration"], job_type["jobType"]) == (
        "BATCH", "MODEL_REGISTRY", "REGISTER")
    assert [model_dataset(o) for o in out["outputs"]] == [
        ("registry", "fraud/3", "MODEL", "3", stage_tag("none"))]


def test_a_registration_carries_the_registry_facet() -> None:
    event = created()
    facet = build(event)["run"]["facets"]["modelRegistry"]
    assert facet["_schemaURL"] == MODEL_FACET_URL
    assert {k: facet[k] for k in ("action", "model", "version", "toStage", "actor", "requestId",
                                  "sequence", "eventId", "archived")} == {
        "action": "register", "model": "fraud", "version": 3, "toStage": "none", "actor": "alice",
        "requestId": "req-created", "sequence": 7, "eventId": event["id"], "archived": []}
    assert facet.get("fromStage") is None


def test_a_registration_without_a_run_has_no_parent() -> None:
    out = build(created(run_id=None))
    assert "parent" not in out["run"]["facets"]


def test_a_uuid_run_id_is_the_parent_run_id_as_it_is() -> None:
    run_id = "5b0f3c1e-8a9d-4c2b-9e7f-1a2b3c4d5e6f"
    parent = build(created(run_id=run_id))["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == run_id
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("registry", "fraud.training")


def test_a_non_uuid_run_id_maps_to_a_fixed_uuid5() -> None:
    first = build(created(run_id="mlflow-run-42"))["run"]["facets"]["parent"]["run"]["runId"]
    again = build(created(run_id="mlflow-run-42"))["run"]["facets"]["parent"]["run"]["runId"]
    other = build(created(run_id="mlflow-run-43"))["run"]["facets"]["parent"]["run"]["runId"]
    assert first == again == str(uuid.uuid5(RUN_ID_NAMESPACE, "mlflow-run-42"))
    assert uuid.UUID(first).version == 5
    assert other != first


def test_registration_inputs_carry_a_version_facet_only_when_given() -> None:
    out = build(created(inputs=[{"namespace": "s3://lake", "name": "fraud/train.parquet", "version": "v7"},
                                {"namespace": "postgres://db:5432", "name": "public.labels"}]))
    assert [(i["namespace"], i["name"]) for i in out["inputs"]] == [
        ("s3://lake", "fraud/train.parquet"), ("postgres://db:5432", "public.labels")]
    assert out["inputs"][0]["facets"]["version"]["datasetVersion"] == "v7"
    assert out["inputs"][1]["facets"] == {}


def test_a_registration_without_inputs_reads_nothing() -> None:
    assert build(created(inputs=[]))["inputs"] == []


def test_the_namespace_names_the_job_and_the_model_datasets() -> None:
    out = build(created(run_id="r"), namespace="ml-prod")
    assert out["job"]["namespace"] == "ml-prod"
    assert out["outputs"][0]["namespace"] == "ml-prod"
    assert out["run"]["facets"]["parent"]["job"]["namespace"] == "ml-prod"


# -- stage changes ----------------------------------------------------------------------------------


def test_a_promotion_writes_the_version_and_each_archived_incumbent() -> None:
    event = stage_changed(3, "staging", "production", "promote", comment="ship it", archived=[2])
    out = build(event)
    assert (out["job"]["namespace"], out["job"]["name"]) == ("registry", "fraud.transition")
    assert out["job"]["facets"]["jobType"]["jobType"] == "TRANSITION"
    assert out["run"]["runId"] == event["id"]
    assert [model_dataset(i) for i in out["inputs"]] == [
        ("registry", "fraud/3", "MODEL", "3", stage_tag("staging"))]
    assert [model_dataset(o) for o in out["outputs"]] == [
        ("registry", "fraud/3", "MODEL", "3", stage_tag("production")),
        ("registry", "fraud/2", "MODEL", "2", stage_tag("archived"))]
    facet = out["run"]["facets"]["modelRegistry"]
    assert {k: facet[k] for k in ("action", "fromStage", "toStage", "trigger", "comment", "archived",
                                  "version", "actor", "requestId", "sequence", "eventId")} == {
        "action": "transition", "fromStage": "staging", "toStage": "production",
        "trigger": "promote", "comment": "ship it", "archived": [2], "version": 3, "actor": "bob",
        "requestId": "req-move", "sequence": 9, "eventId": event["id"]}
    assert "parent" not in out["run"]["facets"]


def test_a_move_without_incumbents_writes_only_the_version() -> None:
    out = build(stage_changed(3, "none", "staging", "submit", archived=[]))
    assert [model_dataset(o) for o in out["outputs"]] == [
        ("registry", "fraud/3", "MODEL", "3", stage_tag("staging"))]
    assert out["run"]["facets"]["modelRegistry"]["archived"] == []


def test_a_rollback_with_several_archived_lists_each_once() -> None:
    out = build(stage_changed(1, "archived", "production", "rollback", archived=[4, 2]))
    assert [o["name"] for o in out["outputs"]] == ["fraud/1", "fraud/4", "fraud/2"]
    assert [o["facets"]["tags"]["tags"][0]["value"] for o in out["outputs"]] == [
        "production", "archived", "archived"]


def test_the_superseded_incumbents_own_event_builds_nothing() -> None:
    event = stage_changed(2, "production", "archived", "archive", superseded_by=3)
    assert LineageBuilder("registry").build(event) is None


@pytest.mark.parametrize("event", [
    {"type": "model.created", "model": "fraud", "version": None,
     "data": {"model": "fraud", "before": None, "after": {"name": "fraud"}}},
    {"type": "model.updated", "model": "fraud", "version": None, "data": {"model": "fraud"}},
    {"type": "model.deleted", "model": "fraud", "version": None, "data": {"model": "fraud"}},
    {"type": "model_version.updated", "model": "fraud", "version": 3,
     "data": {"model": "fraud", "version": 3, "before": {}, "after": snapshot()}},
    {"type": "model_version.alias_set", "model": "fraud", "version": 3,
     "data": {"model": "fraud", "version": 3, "alias": "champion"}},
    {"type": "model_version.alias_deleted", "model": "fraud", "version": 3,
     "data": {"model": "fraud", "version": 3, "alias": "champion"}},
    {"type": "webhook.ping", "model": None, "version": None, "data": {"webhook": 1, "url": "https://x"}},
    {"type": "webhook.disabled", "model": None, "version": None,
     "data": {"webhook": 1, "url": "https://x", "reason": "410"}},
], ids=lambda e: e["type"])
def test_other_events_build_nothing(event: dict[str, Any]) -> None:
    full = {"id": str(uuid.uuid4()), "sequence": 1, "actor": "alice", "request_id": "r", "at": AT,
            **event}
    assert LineageBuilder("registry").build(full) is None


# -- every built event is valid OpenLineage -------------------------------------------------------

BUILT: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "registration": ("registry", lambda: created()),
    "registration elsewhere": ("ml-prod", lambda: created(run_id="r-1")),
    "registration with a uuid run": ("registry", lambda: created(run_id="5b0f3c1e-8a9d-4c2b-9e7f-1a2b3c4d5e6f")),
    "registration with a named run": ("registry", lambda: created(run_id="mlflow-run-42")),
    "registration with inputs": ("registry", lambda: created(inputs=[
        {"namespace": "s3://lake", "name": "train.parquet", "version": "v7"},
        {"namespace": "postgres://db:5432", "name": "public.labels"}])),
    "submit": ("registry", lambda: stage_changed(3, "none", "staging", "submit", archived=[])),
    "promotion over an incumbent": ("registry", lambda: stage_changed(
        3, "staging", "production", "promote", comment="ship it", archived=[2])),
    "rollback over two": ("registry", lambda: stage_changed(
        1, "archived", "production", "rollback", archived=[4, 2])),
    "withdraw": ("registry", lambda: stage_changed(3, "staging", "none", "withdraw", archived=[])),
    "archive": ("ml-prod", lambda: stage_changed(3, "none", "archived", "archive", archived=[])),
    "restore": ("registry", lambda: stage_changed(
        3, "archived", "staging", "restore", comment="again", archived=[])),
}


@pytest.mark.parametrize("case", list(BUILT))
def test_every_built_event_is_a_valid_run_event(case: str) -> None:
    namespace, factory = BUILT[case]
    validate_run_event(build(factory(), namespace))


# -- the validator is able to fail ------------------------------------------------------------------


@pytest.fixture
def valid() -> dict[str, Any]:
    """A registration with every facet the builder makes (its validity is tested above)."""
    event = LineageBuilder("registry").build(created(
        run_id="r-1", inputs=[{"namespace": "s3://lake", "name": "train", "version": "v1"}]))
    assert event is not None
    return event


def added(valid: dict[str, Any], broken: dict[str, Any]) -> list[str]:
    """The violations the mutation introduced (independent of any the valid event may have)."""
    before = violations(valid)
    return [v for v in violations(broken) if v not in before]


def mutated(valid: dict[str, Any], path: tuple[Any, ...], value: Any = None, *, delete: bool = False
            ) -> dict[str, Any]:
    broken = copy.deepcopy(valid)
    node = broken
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return broken


def test_the_validator_refuses_a_dataset_type_facet_without_its_type(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("outputs", 0, "facets", "datasetType", "datasetType"), delete=True)
    assert any("['datasetType']" in v and "'datasetType' is a required property" in v
               for v in added(valid, broken))
    with pytest.raises(SpecViolation):
        validate_run_event(broken)


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T00:00:00Z", "2025-03-04 05:06:07", "2025-03-04"])
def test_the_validator_checks_date_time_format(valid: dict[str, Any], bad: str) -> None:
    assert any("eventTime" in v and "date-time" in v for v in added(valid, {**valid, "eventTime": bad}))


def test_the_validator_checks_uuid_format(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("run", "facets", "parent", "run", "runId"), "r-1")
    assert any("parent" in v and "uuid" in v for v in added(valid, broken))
    broken = mutated(valid, ("run", "runId"), "not-a-uuid")
    assert any("runId" in v and "uuid" in v for v in added(valid, broken))


def test_the_validator_refuses_a_facet_without_its_base_fields(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("job", "facets", "jobType", "_producer"), delete=True)
    assert any("jobType" in v and "_producer" in v for v in added(valid, broken))


def test_the_validator_refuses_a_registry_facet_without_its_event_id(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("run", "facets", "modelRegistry", "eventId"), delete=True)
    assert any("modelRegistry" in v and "'eventId' is a required property" in v for v in added(valid, broken))


def test_the_validator_refuses_a_registry_facet_with_a_text_version(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("run", "facets", "modelRegistry", "version"), "3")
    assert any("modelRegistry" in v and "'version'" in v and "integer" in v for v in added(valid, broken))


def test_the_validator_refuses_a_registry_facet_with_an_unknown_stage(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("run", "facets", "modelRegistry", "toStage"), "canary")
    assert any("canary" in v for v in added(valid, broken))


def test_the_validator_refuses_a_facet_whose_schema_is_unknown(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("outputs", 0, "facets", "tags", "_schemaURL"),
                     "https://openlineage.io/spec/facets/9-9-9/TagsDatasetFacet.json#/$defs/TagsDatasetFacet")
    assert any("no schema known" in v for v in added(valid, broken))


def test_the_validator_refuses_a_facet_filed_under_another_key(valid: dict[str, Any]) -> None:
    broken = copy.deepcopy(valid)
    facets = broken["outputs"][0]["facets"]
    facets["kind"] = facets.pop("datasetType")
    assert any("'kind'" in v for v in added(valid, broken))


def test_the_validator_refuses_a_run_event_without_a_job(valid: dict[str, Any]) -> None:
    broken = mutated(valid, ("job",), delete=True)
    assert any("'job' is a required property" in v for v in added(valid, broken))


def test_the_registry_facet_schema_is_the_one_its_url_names() -> None:
    schema = facet_schema()
    assert MODEL_FACET_URL.startswith(schema["$id"] + "#")
    assert schema["properties"]["modelRegistry"] == {"$ref": "#/$defs/ModelRegistryRunFacet"}


# -- gates and approvals in the registry facet ------------------------------------------------------

GATES = [
    {"gate": "stage_table", "passed": True, "detail": "staging -> production by promote"},
    {"gate": "metric:accuracy:min", "passed": True, "detail": "accuracy = 0.93, needs >= 0.9"},
    {"gate": "approvals", "passed": True, "detail": "2 of 2 required approvals on request 4"},
]


def approved_promotion() -> dict[str, Any]:
    """A promotion applied by the approval that completed its request's quorum."""
    return stage_changed(3, "staging", "production", "promote", comment="ship it", archived=[2],
                         gates=GATES, request=4, requested_by="ci", approved_by=["ann", "bob"])


def test_a_stage_change_carries_its_gates_request_and_approvers_in_the_registry_facet() -> None:
    facet = build(approved_promotion())["run"]["facets"]["modelRegistry"]
    assert facet["gates"] == GATES
    assert facet["transitionRequest"] == 4
    assert facet["approvedBy"] == ["ann", "bob"]
    assert "requested_by" not in facet and "requestedBy" not in facet  # not a facet field


def test_a_stage_change_without_a_request_has_no_approvers() -> None:
    facet = build(stage_changed(3, "none", "staging", "submit", archived=[], gates=GATES[:1])
                  )["run"]["facets"]["modelRegistry"]
    assert facet["gates"] == GATES[:1]
    assert facet.get("transitionRequest") is None
    assert facet.get("approvedBy", []) == []


def test_a_stage_change_with_gates_and_approvals_is_a_valid_run_event() -> None:
    validate_run_event(build(approved_promotion()))
    validate_run_event(build(stage_changed(1, "archived", "production", "rollback", comment="undo",
                                           archived=[3], gates=[
                                               {"gate": "stage_table", "passed": True, "detail": "x"},
                                               {"gate": "previous_production", "passed": True, "detail": "y"},
                                               {"gate": "comment", "passed": True, "detail": "z"}])))


@pytest.mark.parametrize(("path", "value", "complaint"), [
    (("gates", 0, "passed"), "yes", "'yes' is not of type 'boolean'"),
    (("gates", 1, "extra"), 1, "Additional properties are not allowed"),
    (("transitionRequest",), "4", "'4' is not of type 'integer', 'null'"),
    (("transitionRequest",), 0, "0 is less than the minimum of 1"),
    (("approvedBy", 0), 7, "7 is not of type 'string'"),
], ids=["passed as text", "unknown gate key", "request as text", "request 0", "approver as number"])
def test_the_validator_refuses_malformed_gates_and_approvals(
    path: tuple[Any, ...], value: Any, complaint: str
) -> None:
    valid_event = build(approved_promotion())
    broken = mutated(valid_event, ("run", "facets", "modelRegistry", *path), value)
    assert any("modelRegistry" in v and complaint in v for v in added(valid_event, broken))


def test_the_validator_refuses_a_gate_without_its_detail() -> None:
    valid_event = build(approved_promotion())
    broken = mutated(valid_event, ("run", "facets", "modelRegistry", "gates", 2, "detail"), delete=True)
    assert any("'detail' is a required property" in v for v in added(valid_event, broken))


# -- the same documents as the OpenLineage client's own classes serialise ---------------------------

def _client_built(event: dict[str, Any], built: dict[str, Any]) -> dict[str, Any]:
    """The RunEvent the OpenLineage client's classes make of ``event``, serialised by its Serde:
    the oracle for the builder's plain dicts (our own facet is taken from ``built``, its schema
    is tested above)."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        dataset_type_dataset,
        dataset_version_dataset,
        job_type_job,
        parent_run,
        tags_dataset,
    )
    from openlineage.client.serde import Serde

    from registry.adapters.lineage import PRODUCER

    def dataset(cls: Any, name: str, version: str, stage: str) -> Any:
        return cls(namespace="registry", name=name, facets={
            "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="MODEL", producer=PRODUCER),
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version,
                                                                          producer=PRODUCER),
            "tags": tags_dataset.TagsDatasetFacet(tags=[tags_dataset.TagsDatasetFacetFields(
                key="stage", value=stage, source="MODEL_REGISTRY")], producer=PRODUCER)})

    data, job = event["data"], "register" if event["type"] == "model_version.created" else "transition"
    run_facets: dict[str, Any] = {}
    if job == "register":
        after = data["after"]
        if after.get("run_id"):
            run_facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=built["run"]["facets"]["parent"]["run"]["runId"]),
                job=parent_run.Job(namespace="registry", name="fraud.training"), producer=PRODUCER)
        inputs = [InputDataset(namespace=i["namespace"], name=i["name"], facets={} if "version" not in i else {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=i["version"],
                                                                          producer=PRODUCER)})
            for i in after["inputs"]]
        outputs = [dataset(OutputDataset, f"fraud/{event['version']}", str(event["version"]), after["stage"])]
    else:
        inputs = [dataset(InputDataset, f"fraud/{event['version']}", str(event["version"]), data["from_stage"])]
        outputs = [dataset(OutputDataset, f"fraud/{event['version']}", str(event["version"]), data["to_stage"])]
        outputs += [dataset(OutputDataset, f"fraud/{v}", str(v), "archived") for v in data["archived"]]
    expected = Serde.to_dict(RunEvent(
        eventType=RunState.COMPLETE, eventTime=event["at"], run=Run(runId=event["id"], facets=run_facets),
        job=Job(namespace="registry", name=f"fraud.{job}", facets={"jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="MODEL_REGISTRY", jobType=job.upper(), producer=PRODUCER)}),
        inputs=inputs, outputs=outputs, producer=PRODUCER))
    expected["run"]["facets"]["modelRegistry"] = built["run"]["facets"]["modelRegistry"]
    return expected


@pytest.mark.parametrize("event", [
    created(run_id="mlflow-run-42", inputs=[{"namespace": "s3://lake", "name": "train", "version": "v7"},
                                            {"namespace": "s3://lake", "name": "eval"}]),
    created(),
    approved_promotion(),
    stage_changed(1, "archived", "production", "rollback", comment="undo", archived=[4, 2]),
], ids=["registration-with-parent-and-inputs", "bare-registration", "promotion", "rollback"])
def test_the_builder_writes_what_the_openlineage_client_would(event: dict[str, Any]) -> None:
    built = build(event)
    assert built == _client_built(event, built)
