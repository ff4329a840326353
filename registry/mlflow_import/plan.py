"""What an import of MLflow entries becomes here: commands, the production rule, the report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from registry.domain.stages import Stage
from registry.mlflow_import.reader import tags_of
from registry.services.imports import ImportModel, ImportModelVersion, Origin

MLFLOW_STAGES = {"none": Stage.NONE, "staging": Stage.STAGING, "production": Stage.PRODUCTION,
                 "archived": Stage.ARCHIVED}


def moment(ms: int) -> datetime:
    """An MLflow timestamp (epoch milliseconds) in UTC, exactly."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))


def origin_of(entity: Mapping[str, Any], source: str) -> Origin:
    created = entity["creation_timestamp"]
    return Origin(source, moment(created), entity.get("user_id") or None,
                  moment(entity.get("last_updated_timestamp") or created))


def stage_of(version: Mapping[str, Any]) -> Stage:
    stage = str(version.get("current_stage") or "None").lower()
    if stage not in MLFLOW_STAGES:
        raise ValueError(f"stage {version.get('current_stage')!r} is not one of MLflow's stages")
    return MLFLOW_STAGES[stage]


@dataclass(frozen=True, slots=True)
class ProductionDecision:
    """MLflow had several Production versions: ``kept`` (updated last) stays, the others archive."""

    model: str
    kept: int
    archived: list[int]

    def note(self) -> str:
        return (f"in Production in MLflow beside version {self.kept}, which was updated later; "
                "archived on import: one version of a model is in production here")


def decide_production(model: str, versions: list[dict[str, Any]]) -> ProductionDecision | None:
    """Which one of several Production versions stays in production: the newest by
    last_updated_timestamp (then by number). None when there are not several."""
    live = [v for v in versions if str(v.get("current_stage", "")).lower() == "production"]
    if len(live) < 2:
        return None
    live.sort(key=lambda v: (int(v.get("last_updated_timestamp") or v["creation_timestamp"]),
                             int(v["version"])), reverse=True)
    return ProductionDecision(model, int(live[0]["version"]), sorted(int(v["version"]) for v in live[1:]))


def model_command(model: Mapping[str, Any], source: str) -> ImportModel:
    return ImportModel(model["name"], model.get("description") or "", tags_of(model),
                       origin_of(model, source))


def version_command(name: str, version: Mapping[str, Any], source: str,
                    decision: ProductionDecision | None) -> ImportModelVersion:
    number, stage, note = int(version["version"]), stage_of(version), None
    if decision is not None and number in decision.archived:
        stage, note = Stage.ARCHIVED, decision.note()
    return ImportModelVersion(name, number, stage, version.get("source") or "",
                              origin_of(version, source), run_id=version.get("run_id") or None,
                              description=version.get("description") or "", tags=tags_of(version),
                              stage_note=note)


# -- the report ----------------------------------------------------------------------------------

@dataclass
class Tally:
    """One model's versions: new (imported now, or to import on a dry run), already here, in
    conflict, failed; and whether the model itself is new."""

    new: int = 0
    present: int = 0
    conflicts: int = 0
    failed: int = 0
    created: bool = False

    def __str__(self) -> str:
        total = self.new + self.present + self.conflicts + self.failed
        text = ("new model, " if self.created else "") + f"{total} version{'s' * (total != 1)} ("
        text += f"{self.new} new, "
        text += f"{self.present} already here"
        text += f", {self.conflicts} conflicts" if self.conflicts else ""
        text += f", {self.failed} failed" if self.failed else ""
        return text + ")"


@dataclass
class Report:
    source: str
    request_id: str
    dry_run: bool
    models_created: list[str] = field(default_factory=list)
    models_present: list[str] = field(default_factory=list)
    versions_imported: int = 0
    versions_present: int = 0
    production: list[dict[str, Any]] = field(default_factory=list)
    aliases_set: int = 0
    aliases_present: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    versions_sealed: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.failures and self.stopped is None

    def conflict(self, model: str, version: int | None, what: str) -> None:
        self.conflicts.append({"model": model, "version": version, "reason": what})

    def failure(self, model: str, version: int | None, what: str) -> None:
        self.failures.append({"model": model, "version": version, "error": what})

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2)

    def lines(self) -> list[str]:
        would = "would be " if self.dry_run else ""
        lines = [f"{'Dry run (nothing changed)' if self.dry_run else 'Imported'} from {self.source}, "
                 f"request id {self.request_id}",
                 f"models: {len(self.models_created)} {would}created, {len(self.models_present)} already here",
                 f"versions: {self.versions_imported} {would}imported, {self.versions_present} already "
                 f"here, {len(self.conflicts)} conflicts, {len(self.failures)} failures",
                 f"aliases: {self.aliases_set} {would}set, {self.aliases_present} already set",
                 f"artifacts: {self.files_copied} files ({self.bytes_copied} bytes) {would}copied, "
                 f"{self.versions_sealed} versions {would}sealed"]
        lines += [f"production: {p['model']} keeps version {p['kept']} (updated last); "
                  f"{', '.join(map(str, p['archived']))} {would}archived" for p in self.production]
        lines += [f"conflict: {c['model']}{_at(c['version'])}: {c['reason']}" for c in self.conflicts]
        lines += [f"failed: {f['model']}{_at(f['version'])}: {f['error']}" for f in self.failures]
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        return lines


def _at(version: int | None) -> str:
    return "" if version is None else f" version {version}"


NEW, PRESENT, CONFLICT, FAILED = "new", "present", "conflicts", "failed"  # Tally's fields

