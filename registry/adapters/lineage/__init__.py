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
from typing import Any

from openlineage.client.event_v2 import RunEvent
from openlineage.client.facet_v2 import (
    dataset_type_dataset,
    dataset_version_dataset,
    job_type_job,
    parent_run,
    tags_dataset,
)

import registry
from registry.adapters.webhooks import Outcome
from registry.services.lineage import run_uuid

PRODUCER = f"https://github.com/model-registry/registry/tree/v{registry.__version__}"
FACET_SCHEMA_URL = ("https://model-registry.dev/spec/facets/1-1-0/ModelRegistryRunFacet.json"
                    "#/$defs/ModelRegistryRunFacet")
LINEAGE_TYPES = ("model_version.created", "model_version.stage_changed")


def facet_schema() -> dict[str, Any]:
    """The JSON Schema of the ``modelRegistry`` run facet, as shipped in the package."""
    return json.loads(files(__package__).joinpath("ModelRegistryRunFacet.json").read_text())


def is_lineage_event(event: dict[str, Any]) -> bool:
    """Registrations and stage changes, except the archiving of a superseded incumbent, which
    is an output of the promotion's own event."""
    if event["type"] not in LINEAGE_TYPES or event.get("version") is None:
        return False
    return "superseded_by" not in event["data"]


def _facet(schema_url: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **fields}


# Schema URLs of the standard facets, as the OpenLineage client of this release names them.
_RUN_EVENT_URL = RunEvent._get_schema()
_DATASET_TYPE_URL = dataset_type_dataset.DatasetTypeDatasetFacet._get_schema()
_DATASET_VERSION_URL = dataset_version_dataset.DatasetVersionDatasetFacet._get_schema()
_JOB_TYPE_URL = job_type_job.JobTypeJobFacet._get_schema()
_PARENT_URL = parent_run.ParentRunFacet._get_schema()
_TAGS_URL = tags_dataset.TagsDatasetFacet._get_schema()


class LineageBuilder:
    """Builds the RunEvent documents as plain dicts, exactly as the OpenLineage client's
    ``Serde.to_dict`` would serialise its event classes (unset fields left out; a unit test holds
    the two equal), at a fraction of the CPU: the relay builds one per registration and move."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def build(self, event: dict[str, Any], traceparent: str | None = None) -> dict[str, Any] | None:
        """The RunEvent for an outbox event (``id``, ``type``, ``model``, ``version``,
        ``sequence``, ``actor``, ``request_id``, ``at`` as RFC 3339, ``data``), or None.
        ``traceparent``, the trace of the request that wrote the event, goes in our run facet."""
        if not is_lineage_event(event):
            return None
        traced = {"traceparent": traceparent} if traceparent else {}
        model, version, data = event["model"], event["version"], event["data"]
        if event["type"] == "model_version.created":
            after = data.get("after") or {}
            stage = after.get("stage", "none")
            run_facets: dict[str, Any] = {
                "modelRegistry": self._registry_facet(event, "register", stage, **traced)}
            if after.get("run_id"):
                run_facets["parent"] = _facet(
                    _PARENT_URL, run={"runId": run_uuid(after["run_id"]), "facets": {}},
                    job={"namespace": self.namespace, "name": f"{model}.training", "facets": {}})
            inputs = [{"namespace": i["namespace"], "name": i["name"],
                       "facets": self._version_facet(i.get("version")), "inputFacets": {}}
                      for i in after.get("inputs", [])]
            outputs = [self._model_dataset(model, version, stage, output=True)]
            job = "register"
        else:
            from_stage, to_stage = data["from_stage"], data["to_stage"]
            archived = [int(v) for v in data.get("archived", [])]
            facet = self._registry_facet(
                event, "transition", to_stage, fromStage=from_stage, trigger=data.get("trigger"),
                comment=data.get("comment"), archived=archived,
                gates=[{"gate": g["gate"], "passed": g["passed"], "detail": g["detail"]}
                       for g in data.get("gates", [])],
                transitionRequest=data.get("request"), approvedBy=list(data.get("approved_by", [])),
                **traced)
            run_facets = {"modelRegistry": facet}
            inputs = [self._model_dataset(model, version, from_stage, output=False)]
            outputs = [self._model_dataset(model, version, to_stage, output=True)]
            outputs += [self._model_dataset(model, v, "archived", output=True) for v in archived]
            job = "transition"
        return {
            "eventTime": event["at"], "producer": PRODUCER, "schemaURL": _RUN_EVENT_URL,
            "run": {"runId": event["id"], "facets": run_facets},
            "job": {"namespace": self.namespace, "name": f"{model}.{job}", "facets": {
                "jobType": _facet(_JOB_TYPE_URL, processingType="BATCH", integration="MODEL_REGISTRY",
                                  jobType=job.upper())}},
            "eventType": "COMPLETE", "inputs": inputs, "outputs": outputs,
        }

    @staticmethod
    def _registry_facet(event: dict[str, Any], action: str, to_stage: str, **optional: Any) -> dict[str, Any]:
        """Our ``modelRegistry`` run facet; fields given as None are left out."""
        fields = {"action": action, "model": event["model"], "version": event["version"],
                  "toStage": to_stage, "actor": event["actor"], "requestId": event["request_id"],
                  "sequence": event["sequence"], "eventId": event["id"],
                  "archived": [], "gates": [], "approvedBy": []}
        fields.update((k, v) for k, v in optional.items() if v is not None)
        return _facet(FACET_SCHEMA_URL, **fields)

    def _model_dataset(self, model: str, version: int, stage: str, *, output: bool) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": f"{model}/{version}", "facets": {
            "datasetType": _facet(_DATASET_TYPE_URL, datasetType="MODEL"),
            "version": _facet(_DATASET_VERSION_URL, datasetVersion=str(version)),
            "tags": _facet(_TAGS_URL, tags=[{"key": "stage", "value": stage, "source": "MODEL_REGISTRY"}]),
        }, ("outputFacets" if output else "inputFacets"): {}}

    @staticmethod
    def _version_facet(version: str | None) -> dict[str, Any]:
        if version is None:
            return {}
        return {"version": _facet(_DATASET_VERSION_URL, datasetVersion=version)}


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
