"""Use cases for registered models."""

from __future__ import annotations

from typing import Any

from registry.domain.errors import ConflictError, ValidationError
from registry.domain.events import ModelCreated, ModelDeleted, ModelUpdated
from registry.domain.model import RegisteredModel, normalize_name, validate_model_name, validate_tags
from registry.domain.permissions import Role
from registry.domain.stages import Stage
from registry.services.access import check_can_create, check_visible, lock_model, require_model
from registry.services.commands import MISSING, CreateModel, DeleteModel, RenameModel, UpdateModel
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import Page, UnitOfWork


def merge_patch(current: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """RFC 7396 on a flat object: null removes a key, a whole null clears it."""
    if patch is None:
        return {}
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


async def create_model(cmd: CreateModel, uow: UnitOfWork) -> RegisteredModel:
    name = validate_model_name(cmd.name)  # in NFC: one model for every spelling of the name
    validate_tags(cmd.tags)
    check_can_create(uow, name)
    async with uow:
        model = await uow.repo.add_model(name, cmd.description, cmd.tags, uow.actor.name, uow.now())
        uow.record(model, ModelCreated(model=model.name, after=model.snapshot()))
        await uow.commit()
    return model


async def get_model(name: str, uow: UnitOfWork) -> RegisteredModel:
    """The model with the names of its aliases (one query)."""
    async with uow:
        return await require_model(uow, name, aliases=True)


async def list_models(name_prefix: str | None, cursor: str | None, limit: int | None,
                      uow: UnitOfWork) -> Page:
    limit = check_limit(limit)
    after = decode_cursor(cursor, str)
    if name_prefix:
        if "\x00" in name_prefix:  # as the tag filter: one answer on both backends
            raise ValidationError("name_prefix must not contain NUL characters")
        name_prefix = normalize_name(name_prefix)
    async with uow:
        rows = await uow.repo.list_models(name_prefix, after, limit + 1, uow.actor.models)
    items, next_cursor = page(rows, limit, lambda m: m.name)
    return Page(items, next_cursor)


async def update_model(cmd: UpdateModel, uow: UnitOfWork) -> RegisteredModel:
    if cmd.tags is not MISSING and cmd.tags:
        validate_tags({k: v for k, v in cmd.tags.items() if v is not None})
    async with uow:
        model = await lock_model(uow, cmd.name, Role.EDITOR, "updating a model")
        before = model.snapshot()
        if cmd.description is not MISSING:
            model.description = cmd.description or ""
        if cmd.tags is not MISSING:
            model.tags = merge_patch(model.tags, cmd.tags)
        old, new = changed_fields(before, model.snapshot())
        if new:
            model.updated_at = uow.now()
            await uow.repo.update_model(model)
            uow.record(model, ModelUpdated(model=model.name, before=old, after=new))
        model.aliases = [alias for alias, _ in await uow.repo.list_aliases(model, None, None)]
        if new:
            await uow.commit()
    return model


async def delete_model(cmd: DeleteModel, uow: UnitOfWork) -> None:
    """Delete a model with its versions and aliases; its audit chain stays. Refused while a
    version is in production, so serving never loses its model by accident."""
    async with uow:
        model = await lock_model(uow, cmd.name, Role.ADMIN, "deleting a model")
        production = await uow.repo.versions_in_stage(model, Stage.PRODUCTION)
        if production:
            raise ConflictError(
                f"model {model.name!r} has version {production[0].version} in production; "
                "archive it before deleting the model"
            )
        uow.record(model, ModelDeleted(model=model.name, before=model.snapshot()))
        await uow.repo.delete_model(model)
        await uow.commit()


async def rename_model(cmd: RenameModel, uow: UnitOfWork) -> RegisteredModel:
    """Give a model a new name (admins: serving finds models by name). Its versions, aliases,
    policies and audit chain (keyed by the model's id) stay with it; the old name is free."""
    new_name = validate_model_name(cmd.new_name)
    check_visible(uow, cmd.name)  # a model the token cannot see does not exist: 404 before 403
    check_can_create(uow, new_name)
    async with uow:
        model = await lock_model(uow, cmd.name, Role.ADMIN, "renaming a model")
        if new_name != model.name:
            old_name, model.name, model.updated_at = model.name, new_name, uow.now()
            await uow.repo.rename_model(model, new_name)
            uow.record(model, ModelUpdated(model=new_name, before={"name": old_name},
                                           after={"name": new_name}))
        model.aliases = [alias for alias, _ in await uow.repo.list_aliases(model, None, None)]
        await uow.commit()
    return model
