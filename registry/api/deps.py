"""Small helpers the controllers share to reach the services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.params import PathParameter, QueryParameter

from registry.api.schemas import ALIAS_PATTERN, MODEL_NAME_PATTERN, RFC3339
from registry.domain.errors import ValidationError
from registry.services.commands import MISSING
from registry.services.ports import Actor, UnitOfWork

# A path that cannot be a model name is a 400 on both backends, not a lookup.
ModelPath = Annotated[str, PathParameter(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN,
                                         description="model name, percent-encoded")]
VersionPath = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="version number")]
AliasPath = Annotated[str, PathParameter(min_length=1, max_length=255, pattern=ALIAS_PATTERN,
                                         description="alias name")]


def rfc3339(description: str) -> Any:
    """A query parameter holding an RFC 3339 timestamp with its offset (Litestar's own datetime
    parsing would also take Unix numbers, which the document does not say)."""
    return QueryParameter(pattern=RFC3339, max_length=40, description=description,
                          schema_extra={"format": "date-time"})


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValidationError(f"{value!r} is not an RFC 3339 timestamp") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # an offset carried it past year 1 or 9999: the nearest representable
        return (datetime.max if parsed.year == 9999 else datetime.min).replace(tzinfo=UTC)


def actor(request: Request[Any, Any, Any]) -> Actor:
    """The authenticated principal as the services see it: audit name, role and model scope."""
    user = request.user
    return Actor(user.token_name, request.scope["state"]["request_id"], user.role, user.models, user.name)


def writer(request: Request[Any, Any, Any]) -> UnitOfWork:
    """A unit of work for a change; it joins the request's Idempotency-Key, if it has one."""
    return request.app.state.container.uow(actor(request),
                                           idempotency=request.scope["state"].get("idempotency"))


def reader(request: Request[Any, Any, Any]) -> UnitOfWork:
    return request.app.state.container.uow(actor(request), write=False)


def given(value: Any) -> Any:
    """msgspec's UNSET as the services' MISSING."""
    return MISSING if value is msgspec.UNSET else value
