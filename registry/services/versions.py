"""Use cases for model versions: register, read, list, update."""

from __future__ import annotations

from collections.abc import Sequence

from registry.domain.errors import ConflictError, NotFoundError, PreconditionFailedError, ValidationError
from registry.domain.events import AliasDeleted, RequestCancelled, VersionCreated, VersionDeleted, VersionUpdated
from registry.domain.model import (
    DatasetRef,
    ModelVersion,
    RegisteredModel,
    validate_metrics,
    validate_tags,
)
from registry.domain.permissions import Role
from registry.domain.stages import Stage
from registry.services.access import check_visible, lock_model, require_model
from registry.services.commands import MISSING, DeleteModelVersion, RegisterModelVersion, UpdateModelVersion
from registry.services.models import changed_fields, merge_patch
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import Page, Repository, UnitOfWork


async def require_version(repo: Repository, model: RegisteredModel, number: int) -> ModelVersion:
    version = await repo.get_version(model, number)
    if version is None:
        raise NotFoundError(f"model {model.name!r} has no version {number}")
    return version


def check_if_match(if_match: str | None, version: ModelVersion) -> None:
    """RFC 9110 If-Match with strong comparison; '*' matches any existing version."""
    if if_match is None:
        return
    candidates = [t.strip() for t in if_match.split(",")]
    if "*" not in candidates and version.etag not in candidates:
        raise PreconditionFailedError(
            f"version {version.version} has changed: its ETag is {version.etag}, not {if_match}"
        )


def parse_tag_filter(tag: str) -> tuple[str, str]:
    """A ``tag`` filter, ``key:value`` (the key not empty), as a (key, value) pair. NUL is refused
    here, so both backends answer alike (PostgreSQL text cannot hold it; SQLite would match none)."""
    key, sep, value = tag.partition(":")
    if not sep or not key:
        raise ValidationError(f"tag filter {tag!r} must be key:value")
    if "\x00" in tag:
        raise ValidationError(f"tag filter {tag!r} must not contain NUL characters")
    return key, value


async def register_model_version(cmd: RegisterModelVersion, uow: UnitOfWork) -> ModelVersion:
    """Allocate the next version number from the model's counter and record the version in `none`."""
    validate_tags(cmd.tags)
    validate_metrics(cmd.metrics)
    if not cmd.source:
        raise ValidationError("source must not be empty")
    inputs = [DatasetRef(i["namespace"], i["name"], i.get("version")) for i in cmd.inputs]
    async with uow:
        model = await lock_model(uow, cmd.model, Role.EDITOR, "registering a version")
        number = await uow.repo.allocate_version(model)
        now = uow.now()
        version = ModelVersion(
            model_id=model.id, model=model.name, version=number, stage=Stage.NONE,
            source=cmd.source, run_id=cmd.run_id, description=cmd.description, tags=dict(cmd.tags),
            metrics=dict(cmd.metrics), inputs=inputs, created_at=now, updated_at=now,
            created_by=uow.actor.name, stage_since=now,
        )
        await uow.repo.add_version(version)
        uow.record(model, VersionCreated(model=model.name, version=number, after=version.snapshot()))
        await uow.commit()
    return version


async def get_model_version(model_name: str, number: int, uow: UnitOfWork) -> ModelVersion:
    async with uow:
        model = await require_model(uow, model_name)
        return await require_version(uow.repo, model, number)


async def list_model_versions(model_name: str, stage: str | None, run_id: str | None,
                              tags: Sequence[str], cursor: str | None, limit: int | None,
                              uow: UnitOfWork) -> Page:
    limit = check_limit(limit)
    after = decode_cursor(cursor, int) or 0
    wanted_stage = Stage.parse(stage) if stage is not None else None
    tag_pairs = [parse_tag_filter(tag) for tag in tags]
    async with uow:
        model = await require_model(uow, model_name)
        rows = await uow.repo.list_versions(model, wanted_stage, run_id, tag_pairs, after, limit + 1)
    items, next_cursor = page(rows, limit, lambda v: v.version)
    return Page(items, next_cursor)


async def versions_in_stage(model_name: str, stage: str, uow: UnitOfWork) -> list[ModelVersion]:
    """What serving asks ("which version is in production?"): one indexed query."""
    wanted = Stage.parse(stage)
    model_name = check_visible(uow, model_name)
    async with uow:
        members = await uow.repo.versions_in_stage_by_name(model_name, wanted)
    if members is None:
        raise NotFoundError(f"model {model_name!r} does not exist")
    return members


async def update_model_version(cmd: UpdateModelVersion, uow: UnitOfWork) -> ModelVersion:
    """Change description and tags at any stage; metrics only while the stage is `none`, since
    they are the evidence later gates judge."""
    if cmd.tags is not MISSING and cmd.tags:
        validate_tags({k: v for k, v in cmd.tags.items() if v is not None})
    if cmd.metrics is not MISSING and cmd.metrics:
        validate_metrics({k: v for k, v in cmd.metrics.items() if v is not None})
    async with uow:
        model = await lock_model(uow, cmd.model, Role.EDITOR, "updating a version")
        version = await require_version(uow.repo, model, cmd.version)
        check_if_match(cmd.if_match, version)
        before = version.snapshot()
        if cmd.description is not MISSING:
            version.description = cmd.description or ""
        if cmd.tags is not MISSING:
            version.tags = merge_patch(version.tags, cmd.tags)
        if cmd.metrics is not MISSING:
            new_metrics = merge_patch(version.metrics, cmd.metrics)
            if new_metrics != version.metrics and version.stage is not Stage.NONE:
                raise ConflictError(
                    f"metrics can change only while the stage is 'none'; version "
                    f"{version.version} is in {version.stage.value!r}"
                )
            version.metrics = new_metrics
        old, new = changed_fields(before, version.snapshot())
        if new:
            version.updated_at = uow.now()
            version.revision += 1
            await uow.repo.save_version(version)
            uow.record(model, VersionUpdated(model=model.name, version=version.version,
                                             before=old, after=new))
            await uow.commit()
    return version


async def delete_model_version(cmd: DeleteModelVersion, uow: UnitOfWork) -> None:
    """Delete a version softly (admins): it disappears from reads, lists and searches, its
    number is never handed out again and its audit entries stay. Aliases that pointed at it are
    deleted and its open transition requests cancelled, each audited. Refused (409) while the
    version is in production, so serving never loses its model by accident."""
    async with uow:
        model = await lock_model(uow, cmd.model, Role.ADMIN, "deleting a version")
        version = await require_version(uow.repo, model, cmd.version)
        if version.stage is Stage.PRODUCTION:
            raise ConflictError(f"version {version.version} of {model.name!r} is in production; "
                                "archive it (or promote another) before deleting it")
        for alias, record in await uow.repo.list_aliases(model, None, None):
            if record.version == version.version:
                await uow.repo.delete_alias(model, alias)
                uow.record(model, AliasDeleted(
                    model=model.name, version=version.version,
                    before={"alias": alias, "version": version.version, "protected": record.protected},
                    after=None, extra={"alias": alias, "previous_version": version.version}))
        for request in await uow.repo.open_requests(model, version.version):
            before = request.snapshot()
            request.state, request.decided_by, request.updated_at = "cancelled", uow.actor.name, uow.now()
            request.decision_comment = f"version {version.version} was deleted"
            await uow.repo.save_request(request)
            uow.record(model, RequestCancelled(
                model=model.name, version=version.version, before=before, after=request.snapshot(),
                extra={"request": request.id, "comment": request.decision_comment}))
        await uow.repo.delete_version(version, uow.now())
        uow.record(model, VersionDeleted(model=model.name, version=version.version,
                                         before=version.snapshot(), after=None))
        await uow.commit()
