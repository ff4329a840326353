"""The permission checks every use case makes, in one place: visibility first (a model outside
the caller's scope does not exist for it), then the role."""

from __future__ import annotations

from registry.domain.errors import ForbiddenError, NotFoundError
from registry.domain.model import RegisteredModel, normalize_name
from registry.domain.permissions import Role, require, visible
from registry.services.ports import UnitOfWork


def check_visible(uow: UnitOfWork, name: str) -> str:
    """The name (in NFC, as names are stored) when the caller may see the model."""
    name = normalize_name(name)
    if not visible(uow.actor.models, name):
        raise NotFoundError(f"model {name!r} does not exist")
    return name


def check_role(uow: UnitOfWork, needed: Role, what: str) -> None:
    require(uow.actor.role, needed, what)


async def require_model(uow: UnitOfWork, name: str, *, aliases: bool = False) -> RegisteredModel:
    """A visible model, for reading; with ``aliases``, their names too (in the same query)."""
    name = check_visible(uow, name)
    model = await uow.repo.get_model(name, aliases=aliases)
    if model is None:
        raise NotFoundError(f"model {name!r} does not exist")
    return model


async def lock_model(uow: UnitOfWork, name: str, needed: Role, what: str) -> RegisteredModel:
    """A visible model, locked for a change the caller's role allows."""
    name = check_visible(uow, name)
    check_role(uow, needed, what)
    return await uow.repo.lock_model(name)


def check_can_create(uow: UnitOfWork, name: str) -> None:
    if not visible(uow.actor.models, name):
        raise ForbiddenError(f"model {name!r} is outside this token's models")
    check_role(uow, Role.EDITOR, "creating a model")
