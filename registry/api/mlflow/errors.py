"""Errors on the MLflow surface: ``{"error_code", "message"}`` with MLflow's codes and statuses,
mapped from the same domain errors the native API maps to problem documents (one table)."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException, ValidationException

from registry.api.errors import CLIENT_GONE, RETRY_AFTER, row_of
from registry.domain import errors as e
from registry.domain.stages import Stage

log = structlog.get_logger("registry.api.mlflow")

INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"

# (error_code, status) of each domain error; the nearest class in the error's MRO decides. No
# refusal answers a status MLflow's client retries (408, 429, 5xx) unless a retry can succeed:
# MLflow's own INVALID_STATE is a 500, so refusals of state are RESOURCE_CONFLICT (409) here.
CODES: dict[type[e.RegistryError], tuple[str, int]] = {
    e.RegistryError: ("BAD_REQUEST", 400),
    e.ValidationError: (INVALID_PARAMETER_VALUE, 400),
    e.UnauthenticatedError: ("UNAUTHENTICATED", 401),
    e.ForbiddenError: ("PERMISSION_DENIED", 403),
    e.NotFoundError: ("RESOURCE_DOES_NOT_EXIST", 404),
    e.AlreadyExistsError: ("RESOURCE_ALREADY_EXISTS", 400),
    e.ConflictError: ("RESOURCE_CONFLICT", 409),
    e.TransientConflictError: ("ABORTED", 409),
    e.IdempotencyInProgressError: ("ABORTED", 409),
    e.IdempotencyConflictError: (INVALID_PARAMETER_VALUE, 400),
    # The stage table has no such edge: MLflow would allow it, so the caller's parameter is wrong.
    e.InvalidTransitionError: (INVALID_PARAMETER_VALUE, 400),
    e.PreconditionFailedError: ("RESOURCE_CONFLICT", 409),
    e.GateFailedError: ("RESOURCE_CONFLICT", 409),
    e.UnavailableError: ("TEMPORARILY_UNAVAILABLE", 503),
}

# Stages as MLflow spells them.
STAGE_NAMES = {Stage.NONE: "None", Stage.STAGING: "Staging", Stage.PRODUCTION: "Production",
               Stage.ARCHIVED: "Archived"}


def code_of(exc: e.RegistryError) -> tuple[str, int]:
    return row_of(CODES, exc)


def message_of(exc: e.RegistryError) -> str:
    """The domain's message, with stages in MLflow's spelling where the client needs to act."""
    if isinstance(exc, e.InvalidTransitionError):
        allowed = [STAGE_NAMES[Stage(s)] for s in exc.allowed]
        return (f"cannot move a version from {STAGE_NAMES[Stage(exc.from_stage)]} to "
                f"{STAGE_NAMES[Stage(exc.to_stage)]} here; allowed stages: "
                f"{', '.join(allowed) or 'none'}")
    if isinstance(exc, e.GateFailedError):
        failed = [f"{r.gate} ({r.detail})" for r in exc.results if not r.passed]
        return f"gates failed: {'; '.join(failed)}"
    return exc.detail


def error(code: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    if status == 503:
        headers = {**(headers or {}), "Retry-After": RETRY_AFTER}
    return Response({"error_code": code, "message": message}, status_code=status,
                    media_type="application/json", headers=headers)


def registry_error_handler(request: Request[Any, Any, Any], exc: e.RegistryError) -> Response[Any]:
    code, status = code_of(exc)
    headers = {"WWW-Authenticate": 'Bearer, Basic realm="registry"'} if status == 401 else None
    return error(code, status, message_of(exc), headers)


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, NotFoundException | MethodNotAllowedException):
        return error("ENDPOINT_NOT_FOUND", 404, f"no endpoint {request.method} {request.url.path}")
    if isinstance(exc, HTTPException) and exc.detail == CLIENT_GONE:
        log.info("client_disconnected", path=request.url.path, method=request.method)
        return error(INVALID_PARAMETER_VALUE, 400, "the client disconnected before sending the whole request")
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return error(INVALID_PARAMETER_VALUE if exc.status_code == 400 else "BAD_REQUEST",
                     exc.status_code, str(exc.detail))
    log.error("unhandled_error", path=request.url.path, method=request.method, exc_info=exc)
    return error("INTERNAL_ERROR", 500, "the registry failed to handle the request; it has been logged")


# The app's table has rows for these classes too; the router's rows replace them on this surface.
EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    e.RegistryError: registry_error_handler,
    HTTPException: http_error_handler,
    ValidationException: http_error_handler,
    Exception: http_error_handler,
}
