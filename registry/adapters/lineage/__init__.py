"""OpenLineage 2-0-2 events for registrations and stage changes, and the operator's sinks.

A model version is the dataset ``{namespace, "<model>/<version>"}`` (type MODEL, a version facet,
its stage as a tag). Registration is a run of the job ``<model>.register`` that reads the version's
input datasets (and names the training run as its parent); a stage change is a run of
``<model>.transition`` that reads the version before and writes it after (and the archived
incumbent). The run id is the outbox event's id, so a re-sent event is the same run.
Our own run facet, ``modelRegistry``, ships its JSON Schema beside this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    dataset_type_dataset,
    dataset_version_dataset,
    job_type_job,
    parent_run,
    tags_dataset,
)
from openlineage.client.serde import Serde

import registry
from registry.adapters.webhooks import Outcome
from registry.services.lineage import run_uuid

PRODUCER = f"https://github.com/model-registry/registry/tree/v{registry.__version__}"
FACET_SCHEMA_URL = ("https://model-registry.dev/spec/facets/1-0-0/ModelRegistryRunFacet.json"
                    "#/$defs/ModelRegistryRunFacet")
LINEAGE_TYPES = ("model_version.created", "model_version.stage_changed")


def facet_schema() -> dict[str, Any]:
    """The JSON Schema of the ``modelRegistry`` run facet, as shipped in the package."""
    return json.loads(files(__package__).joinpath("ModelRegistryRunFacet.json").read_text())


@attr.define
class ModelRegistryRunFacet(RunFacet):
    action: str
    model: str
    version: int
    toStage: str  # noqa: N815
    actor: str
    requestId: str  # noqa: N815
    sequence: int
    eventId: str  # noqa: N815
    fromStage: str | None = attr.field(default=None)  # noqa: N815
    trigger: str | None = attr.field(default=None)
    comment: str | None = attr.field(default=None)
    archived: list[int] = attr.field(factory=list)
    # The gates the move passed ({gate, passed, detail}), and the request whose approvals let it.
    gates: list[dict[str, Any]] = attr.field(factory=list)
    transitionRequest: int | None = attr.field(default=None)  # noqa: N815
    approvedBy: list[str] = attr.field(factory=list)  # noqa: N815

    _additional_skip_redact: ClassVar[list[str]] = ["action", "model", "version"]

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA_URL


def is_lineage_event(event: dict[str, Any]) -> bool:
    """Registrations and stage changes, except the archiving of a superseded incumbent, which
    is an output of the promotion's own event."""
    if event["type"] not in LINEAGE_TYPES or event.get("version") is None:
        return False
    return "superseded_by" not in event["data"]


class LineageBuilder:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def build(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The RunEvent for an outbox event (``id``, ``type``, ``model``, ``version``,
        ``sequence``, ``actor``, ``request_id``, ``at`` as RFC 3339, ``data``), or None."""
        if not is_lineage_event(event):
            return None
        model, version, data = event["model"], event["version"], event["data"]
        if event["type"] == "model_version.created":
            after = data.get("after") or {}
            facet = self._facet(event, "register", None, after.get("stage", "none"), None)
            run_facets: dict[str, Any] = {"modelRegistry": facet}
            if after.get("run_id"):
                run_facets["parent"] = parent_run.ParentRunFacet(
                    run=parent_run.Run(runId=run_uuid(after["run_id"])),
                    job=parent_run.Job(namespace=self.namespace, name=f"{model}.training"),
                    producer=PRODUCER)
            inputs = [InputDataset(namespace=i["namespace"], name=i["name"],
                                   facets=self._version_facet(i.get("version")))
                      for i in after.get("inputs", [])]
            outputs = [self._model_dataset(OutputDataset, model, version, after.get("stage", "none"))]
            job = "register"
        else:
            from_stage, to_stage = data["from_stage"], data["to_stage"]
            archived = [int(v) for v in data.get("archived", [])]
            facet = self._facet(event, "transition", from_stage, to_stage, data.get("trigger"),
                                comment=data.get("comment"), archived=archived)
            facet.gates = [{"gate": g["gate"], "passed": g["passed"], "detail": g["detail"]}
                           for g in data.get("gates", [])]
            facet.transitionRequest = data.get("request")
            facet.approvedBy = list(data.get("approved_by", []))
            run_facets = {"modelRegistry": facet}
            inputs = [self._model_dataset(InputDataset, model, version, from_stage)]
            outputs = [self._model_dataset(OutputDataset, model, version, to_stage)]
            outputs += [self._model_dataset(OutputDataset, model, v, "archived") for v in archived]
            job = "transition"
        run_event = RunEvent(
            eventType=RunState.COMPLETE,
            eventTime=event["at"],
            run=Run(runId=event["id"], facets=run_facets),
            job=Job(namespace=self.namespace, name=f"{model}.{job}", facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="MODEL_REGISTRY",
                    jobType=job.upper(), producer=PRODUCER)}),
            inputs=inputs,
            outputs=outputs,
            producer=PRODUCER,
        )
        return Serde.to_dict(run_event)

    def _facet(self, event: dict[str, Any], action: str, from_stage: str | None, to_stage: str,
               trigger: str | None, *, comment: str | None = None,
               archived: list[int] | None = None) -> ModelRegistryRunFacet:
        return ModelRegistryRunFacet(
            action=action, model=event["model"], version=event["version"], toStage=to_stage,
            actor=event["actor"], requestId=event["request_id"], sequence=event["sequence"],
            eventId=event["id"], fromStage=from_stage, trigger=trigger, comment=comment,
            archived=archived or [], producer=PRODUCER)

    def _model_dataset(self, cls: Any, model: str, version: int, stage: str) -> Any:
        return cls(namespace=self.namespace, name=f"{model}/{version}", facets={
            "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(
                datasetType="MODEL", producer=PRODUCER),
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(version), producer=PRODUCER),
            "tags": tags_dataset.TagsDatasetFacet(
                tags=[tags_dataset.TagsDatasetFacetFields(key="stage", value=stage,
                                                          source="MODEL_REGISTRY")],
                producer=PRODUCER),
        })

    @staticmethod
    def _version_facet(version: str | None) -> dict[str, Any]:
        if version is None:
            return {}
        return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=version, producer=PRODUCER)}


class FileSink:
    """Appends each event as one JSON line (``REGISTRY_LINEAGE_FILE``); a failed write is a failed
    attempt, retried like any other. Lines from one process never interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def append(self, payload: dict[str, Any]) -> Outcome:
        line = (json.dumps(payload, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        started = time.perf_counter()
        try:
            async with self._lock:
                await asyncio.to_thread(self._write, line)
        except OSError as exc:
            return Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:500])
        return Outcome(200, _ms(started))

    def _write(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def lineage_endpoint(url: str) -> str:
    """``REGISTRY_LINEAGE_URL`` is the base of an OpenLineage HTTP API (as ``OPENLINEAGE_URL``);
    events go to ``<url>/api/v1/lineage`` unless the URL already ends there."""
    url = url.rstrip("/")
    return url if url.endswith("/api/v1/lineage") else url + "/api/v1/lineage"
