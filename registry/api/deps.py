"""Small helpers the controllers share to reach the services."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.params import PathParameter

from registry.api.schemas import ALIAS_PATTERN, MODEL_NAME_PATTERN
from registry.services.commands import MISSING
from registry.services.ports import Actor, UnitOfWork

# A path that cannot be a model name is a 400 on both backends, not a lookup.
ModelPath = Annotated[str, PathParameter(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN,
                                         description="model name, percent-encoded")]
VersionPath = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="version number")]
AliasPath = Annotated[str, PathParameter(min_length=1, max_length=255, pattern=ALIAS_PATTERN,
                                         description="alias name")]


def actor(request: Request[Any, Any, Any]) -> Actor:
    return Actor(request.user.token_name, request.scope["state"]["request_id"])


def writer(request: Request[Any, Any, Any]) -> UnitOfWork:
    return request.app.state.container.uow(actor(request))


def reader(request: Request[Any, Any, Any]) -> UnitOfWork:
    return request.app.state.container.uow(actor(request), write=False)


def given(value: Any) -> Any:
    """msgspec's UNSET as the services' MISSING."""
    return MISSING if value is msgspec.UNSET else value
