"""Aliases: named, movable pointers to versions (MLflow's aliases)."""

from __future__ import annotations

from registry.domain.errors import NotFoundError
from registry.domain.events import AliasDeleted, AliasSet
from registry.domain.model import ModelVersion, validate_alias
from registry.services.commands import DeleteAlias, SetAlias
from registry.services.ports import UnitOfWork
from registry.services.versions import require_model, require_version


async def set_alias(cmd: SetAlias, uow: UnitOfWork) -> ModelVersion:
    validate_alias(cmd.alias)
    async with uow:
        model = await uow.repo.lock_model(cmd.model)
        version = await require_version(uow.repo, model, cmd.version)
        previous = await uow.repo.get_alias(model, cmd.alias)
        if previous != cmd.version:
            await uow.repo.set_alias(model, cmd.alias, cmd.version)
            uow.record(model, AliasSet(
                model=model.name, version=cmd.version,
                before=None if previous is None else {"alias": cmd.alias, "version": previous},
                after={"alias": cmd.alias, "version": cmd.version},
                extra={"alias": cmd.alias, "previous_version": previous},
            ))
            await uow.commit()
    return version


async def get_alias(model_name: str, alias: str, uow: UnitOfWork) -> ModelVersion:
    async with uow:
        model = await require_model(uow.repo, model_name)
        number = await uow.repo.get_alias(model, alias)
        if number is None:
            raise NotFoundError(f"model {model.name!r} has no alias {alias!r}")
        return await require_version(uow.repo, model, number)


async def delete_alias(cmd: DeleteAlias, uow: UnitOfWork) -> None:
    async with uow:
        model = await uow.repo.lock_model(cmd.model)
        previous = await uow.repo.get_alias(model, cmd.alias)
        if previous is None:
            raise NotFoundError(f"model {model.name!r} has no alias {cmd.alias!r}")
        await uow.repo.delete_alias(model, cmd.alias)
        uow.record(model, AliasDeleted(
            model=model.name, version=previous,
            before={"alias": cmd.alias, "version": previous}, after=None,
            extra={"alias": cmd.alias, "previous_version": previous},
        ))
        await uow.commit()
