"""Copying models and versions from another registry (MLflow) with what they had there: version
numbers (gaps stay gaps), stages, and their original creation times and users, which the audit
entry of each import keeps. An import never runs the stage machine: the versions arrive where
they were; the importer decides anything the machine forbids (two production versions) first.

Each call is its own unit of work and is safe to repeat: what already exists is left alone and
reported, so a cut-off import finishes where it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry.domain.errors import ConflictError, ValidationError
from registry.domain.events import ModelImported, VersionImported
from registry.domain.model import ModelVersion, RegisteredModel, validate_model_name, validate_tags
from registry.domain.permissions import Role
from registry.domain.stages import Stage
from registry.services.access import check_can_create, check_role, lock_model
from registry.services.audit import rfc3339
from registry.services.ports import UnitOfWork
from registry.services.resolve import MAX_VERSION


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an imported entry came from, as its audit entry records it."""

    source: str  # the other registry's URL
    created_at: datetime
    created_by: str | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.source, "created_at": rfc3339(self.created_at),
                "created_by": self.created_by, "updated_at": rfc3339(self.updated_at)}


@dataclass(frozen=True, slots=True)
class ImportModel:
    name: str
    description: str
    tags: dict[str, str]
    origin: Origin


@dataclass(frozen=True, slots=True)
class ImportModelVersion:
    model: str
    version: int
    stage: Stage
    source: str
    origin: Origin
    run_id: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    # Why the stage differs from the one it had there, if it does (for the audit entry).
    stage_note: str | None = None


async def import_model(cmd: ImportModel, uow: UnitOfWork) -> tuple[RegisteredModel, bool]:
    """The model, created with its original times unless it exists; returns it and whether it
    was created now."""
    name = validate_model_name(cmd.name)
    validate_tags(cmd.tags)
    check_can_create(uow, name)
    check_role(uow, Role.ADMIN, "importing models")
    async with uow:
        existing = await uow.repo.get_model(name)
        if existing is not None:
            return existing, False
        model = await uow.repo.add_model(name, cmd.description, cmd.tags,
                                         cmd.origin.created_by or uow.actor.name, cmd.origin.created_at)
        uow.record(model, ModelImported(model=name, after={**model.snapshot(),
                                                           "imported": cmd.origin.to_dict()}))
        await uow.commit()
    return model, True


async def import_model_version(cmd: ImportModelVersion, uow: UnitOfWork) -> ModelVersion | None:
    """The version under its own number and stage, or None when that number is taken already
    (imported before, or handed out here): nothing changes then. A second production version is
    refused (409): the database allows one, and the importer decides which."""
    validate_tags(cmd.tags)
    # As registration and the API check: below 1 would read as "taken already", past the
    # 32-bit column a database error on PostgreSQL (not on SQLite).
    if not 1 <= cmd.version <= MAX_VERSION:
        raise ValidationError(f"version numbers are 1 to {MAX_VERSION}")
    if not cmd.source:
        raise ValidationError("source must not be empty")
    async with uow:
        model = await lock_model(uow, cmd.model, Role.ADMIN, "importing versions")
        if not await uow.repo.reserve_version(model, cmd.version):
            return None
        if cmd.stage is Stage.PRODUCTION and await uow.repo.versions_in_stage(model, Stage.PRODUCTION):
            raise ConflictError(f"model {model.name!r} already has a version in production")
        now = uow.now()
        version = ModelVersion(
            model_id=model.id, model=model.name, version=cmd.version, stage=cmd.stage,
            source=cmd.source, run_id=cmd.run_id, description=cmd.description, tags=dict(cmd.tags),
            metrics={}, inputs=[], created_at=cmd.origin.created_at, updated_at=now,
            created_by=cmd.origin.created_by or uow.actor.name, stage_since=cmd.origin.updated_at,
        )
        await uow.repo.add_version(version)
        imported: dict[str, Any] = cmd.origin.to_dict()
        if cmd.stage_note:
            imported["stage_note"] = cmd.stage_note
        uow.record(model, VersionImported(model=model.name, version=cmd.version,
                                          after={**version.snapshot(), "imported": imported}))
        await uow.commit()
    return version
