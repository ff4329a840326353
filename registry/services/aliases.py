"""Aliases: named, movable pointers to versions (MLflow's aliases). A protected alias (say, the
one serving reads as `champion`) is moved, deleted or (un)protected only by admins."""

from __future__ import annotations

from registry.domain.errors import NotFoundError
from registry.domain.events import AliasDeleted, AliasSet
from registry.domain.model import ModelVersion, normalize_name, validate_alias
from registry.domain.permissions import Role
from registry.services.access import check_role, check_visible, lock_model, require_model
from registry.services.commands import DeleteAlias, SetAlias
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import Page, UnitOfWork
from registry.services.versions import require_version


async def set_alias(cmd: SetAlias, uow: UnitOfWork) -> tuple[ModelVersion, bool]:
    """Point the alias at a version; returns the version and whether the alias is protected."""
    alias = validate_alias(cmd.alias)
    async with uow:
        model = await lock_model(uow, cmd.model, Role.EDITOR, "setting an alias")
        version = await require_version(uow.repo, model, cmd.version)
        previous = await uow.repo.get_alias(model, alias)
        was_protected = previous is not None and previous.protected
        protected = was_protected if cmd.protected is None else cmd.protected
        if was_protected or protected:
            check_role(uow, Role.ADMIN, "moving a protected alias")
        if previous is None or (previous.version, previous.protected) != (cmd.version, protected):
            await uow.repo.set_alias(model, alias, cmd.version, protected)
            uow.record(model, AliasSet(
                model=model.name, version=cmd.version,
                before=None if previous is None else {
                    "alias": alias, "version": previous.version, "protected": previous.protected},
                after={"alias": alias, "version": cmd.version, "protected": protected},
                extra={"alias": alias,
                       "previous_version": None if previous is None else previous.version},
            ))
            await uow.commit()
    version.aliases = sorted({*version.aliases, alias})
    return version, protected


async def list_aliases(model_name: str, cursor: str | None, limit: int | None, uow: UnitOfWork) -> Page:
    """The model's aliases as (name, record) pairs, ordered by name (code point order)."""
    limit = check_limit(limit)
    after = decode_cursor(cursor, str)
    async with uow:
        model = await require_model(uow, model_name)
        rows = await uow.repo.list_aliases(model, after, limit + 1)
    items, next_cursor = page(rows, limit, lambda row: row[0])
    return Page(items, next_cursor)


async def get_alias(model_name: str, alias: str, uow: UnitOfWork) -> tuple[ModelVersion, bool]:
    """What serving asks by alias: one query."""
    model_name, alias = check_visible(uow, model_name), normalize_name(alias)
    async with uow:
        found = await uow.repo.alias_by_name(model_name, alias)
    if found is None:
        raise NotFoundError(f"model {model_name!r} does not exist")
    record, version = found
    if record is None or version is None:
        raise NotFoundError(f"model {model_name!r} has no alias {alias!r}")
    return version, record.protected


async def delete_alias(cmd: DeleteAlias, uow: UnitOfWork) -> None:
    async with uow:
        alias = normalize_name(cmd.alias)
        model = await lock_model(uow, cmd.model, Role.EDITOR, "deleting an alias")
        previous = await uow.repo.get_alias(model, alias)
        if previous is None:
            raise NotFoundError(f"model {model.name!r} has no alias {alias!r}")
        if previous.protected:
            check_role(uow, Role.ADMIN, "deleting a protected alias")
        await uow.repo.delete_alias(model, alias)
        uow.record(model, AliasDeleted(
            model=model.name, version=previous.version,
            before={"alias": alias, "version": previous.version, "protected": previous.protected},
            after=None,
            extra={"alias": alias, "previous_version": previous.version},
        ))
        await uow.commit()
