"""MLflow's model-registry REST API (``/api/2.0/mlflow/...`` and ``/ajax-api/2.0/mlflow/...``), so
``mlflow.MlflowClient`` and ``models:/`` URIs work against this registry unchanged. Its own wire
format and error table; the services are the native API's."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import structlog
from litestar import Router, route
from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.params import PathParameter

from registry.api.mlflow.errors import EXCEPTION_HANDLERS
from registry.api.mlflow.handlers import HANDLERS
from registry.domain.errors import UnauthenticatedError
from registry.services.tokens import Authenticator

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")


def bearer(authorization: str | None) -> str | None:
    """The header as a bearer credential: MLflow's client sends ``MLFLOW_TRACKING_TOKEN`` as
    ``Bearer <token>`` and ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` as Basic, where the password
    is the token (the user name is not checked)."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return authorization
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise UnauthenticatedError("Basic credentials must be base64 of user:token") from None
    _, sep, password = decoded.partition(":")
    if not sep or not password:
        raise UnauthenticatedError("send the API token as the Basic password")
    return f"Bearer {password}"


class MlflowAuthMiddleware(AbstractAuthenticationMiddleware):
    """Bearer or Basic (token as password) to the same principals as the native API."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        authenticator: Authenticator = connection.app.state.container.authenticator
        principal = await authenticator.authenticate(bearer(connection.headers.get("authorization")))
        structlog.contextvars.bind_contextvars(actor=principal.token_name)
        return AuthenticationResult(user=principal, auth=None)


@route("/{path:path}", http_method=["GET", "POST", "PATCH", "PUT", "DELETE"])
async def unknown_endpoint(path: Annotated[str, PathParameter()]) -> None:
    """MLflow's endpoints this registry does not serve (experiments, runs, ...)."""
    raise NotFoundException()


def routers() -> list[Router]:
    """One router per prefix, each with the MLflow error table and authentication."""
    return [Router(path=prefix, route_handlers=[*HANDLERS, unknown_endpoint],
                   middleware=[DefineMiddleware(MlflowAuthMiddleware)],
                   exception_handlers=EXCEPTION_HANDLERS, include_in_schema=False)
            for prefix in PREFIXES]
