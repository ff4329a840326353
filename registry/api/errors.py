"""Every error becomes one RFC 9457 problem response, here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import Send

from registry.api.schemas import Problem
from registry.api.wording import humanize
from registry.domain import errors as e
from registry.services.idempotency import Replay

T = TypeVar("T")
PROBLEM_MEDIA_TYPE = "application/problem+json"
CLIENT_GONE = "client disconnected prematurely"  # what Litestar 2 raises when a body is cut short
TYPE_BASE = "https://model-registry.dev/problems/"
log = structlog.get_logger("registry.api")

_DESCRIPTIONS = {
    400: "validation_error: the request is malformed or a value is out of range",
    401: "unauthenticated: no valid bearer token",
    403: "forbidden: the token's role may not do this, or the model is outside its scope",
    404: "not_found: the model, version or alias does not exist",
    409: "already_exists, invalid_transition (with `allowed`), conflict, or "
         "idempotency_in_progress (a request with this Idempotency-Key is still running)",
    412: "precondition_failed: If-Match or an expected_* field is stale",
    413: "validation_error: the body is larger than this operation takes",
    422: "gate_failed (with `results` and `failed`), or idempotency_conflict (the "
         "Idempotency-Key was used with another body)",
    503: "unavailable: the database cannot be reached",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI declarations of the problem responses an operation can give."""
    return {
        status: ResponseSpec(data_container=Problem, media_type=PROBLEM_MEDIA_TYPE,
                             description=_DESCRIPTIONS[status], generate_examples=False)
        for status in (*statuses, 401, 503)
    }


# Seconds a client should wait before retrying a 503 (every 503 says so): long enough not to hammer
# a database that is recovering, short enough that a pipeline's next attempt lands soon after it.
RETRY_AFTER = "2"


def problem(status: int, code: str, title: str, detail: str, request: Request | None = None,
            headers: dict[str, str] | None = None, **extensions: Any) -> Response[Problem]:
    body = Problem(type=TYPE_BASE + code, title=title, status=status, detail=detail, code=code,
                   instance=request.url.path if request is not None else None, **extensions)
    if status == 503:
        headers = {**(headers or {}), "Retry-After": RETRY_AFTER}
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def send_problem(send: Send, status: int, code: str, title: str, detail: str,
                       headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A problem response written to the ASGI ``send`` directly, for middleware outside the app."""
    body = json.dumps({"type": TYPE_BASE + code, "title": title, "status": status,
                       "detail": detail, "code": code}).encode()
    start = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
             *headers]
    if status == 503:
        start.append((b"retry-after", RETRY_AFTER.encode()))
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# Each domain error as this API answers it: (status, code, title). The nearest class in an
# error's MRO decides, so a subclass without a row answers as its parent.
STATUSES: dict[type[e.RegistryError], tuple[int, str, str]] = {
    e.RegistryError: (400, "error", "Request failed"),
    e.ValidationError: (400, "validation_error", "Invalid request"),
    e.TooLargeError: (413, "validation_error", "Request too large"),
    e.UnauthenticatedError: (401, "unauthenticated", "Authentication required"),
    e.ForbiddenError: (403, "forbidden", "Forbidden"),
    e.NotFoundError: (404, "not_found", "Not found"),
    e.AlreadyExistsError: (409, "already_exists", "Already exists"),
    e.ConflictError: (409, "conflict", "Conflict"),
    e.IdempotencyInProgressError: (409, "idempotency_in_progress", "Request in progress"),
    e.IdempotencyConflictError: (422, "idempotency_conflict", "Idempotency key reused"),
    e.InvalidTransitionError: (409, "invalid_transition", "Invalid stage transition"),
    e.PreconditionFailedError: (412, "precondition_failed", "Precondition failed"),
    e.GateFailedError: (422, "gate_failed", "Gate failed"),
    e.UnavailableError: (503, "unavailable", "Service unavailable"),
}


def row_of(table: Mapping[type[e.RegistryError], T], exc: e.RegistryError) -> T:
    """A wire format's row for a domain error: the nearest class in the error's MRO that the
    table names (every table has a row for RegistryError itself)."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]  # type: ignore[index]
    raise AssertionError("RegistryError has a row")  # pragma: no cover


def status_of(exc: e.RegistryError) -> tuple[int, str, str]:
    """(status, code, title) of a domain error in this API."""
    return row_of(STATUSES, exc)


def registry_error_handler(request: Request, exc: e.RegistryError) -> Response[Problem]:
    status, code, title = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(status, code, title, exc.detail, request, headers, **exc.extensions())


def replay_handler(request: Request, exc: Replay) -> Response[bytes]:
    """The stored answer of an earlier call with the same Idempotency-Key and body."""
    stored = exc.stored
    headers = {k: v for k, v in stored.headers.items() if k != "content-type"}
    return Response(stored.body, status_code=stored.status, media_type=stored.headers.get(
        "content-type", "application/json"), headers={**headers, "Idempotent-Replayed": "true"})


def validation_handler(request: Request, exc: ValidationException) -> Response[Problem]:
    errors = [{**err, "message": humanize(str(err.get("message", "")),
                                          in_body=err.get("source", "body") == "body")}
              for err in exc.extra if isinstance(err, dict)] if isinstance(exc.extra, list) else None
    detail = "; ".join(_error_line(err) for err in errors or []) or str(exc.detail)
    return problem(400, "validation_error", "Invalid request", detail, request, errors=errors)


def _error_line(err: dict[str, Any]) -> str:
    """'metrics.auc: expected a number, got a string'; a message that names its key already
    ("unknown query parameter 'order_by'") is not prefixed with it."""
    key, message = err.get("key") or "body", err["message"]
    return message if f"'{key}'" in message else f"{key}: {message}"


def http_error_handler(request: Request, exc: HTTPException) -> Response[Problem]:
    if isinstance(exc, NotFoundException):
        return problem(404, "not_found", "Not found", "no such resource", request)
    if isinstance(exc, NotAuthorizedException):
        return problem(401, "unauthenticated", "Authentication required", str(exc.detail), request,
                       {"WWW-Authenticate": "Bearer"})
    if isinstance(exc, MethodNotAllowedException):
        return problem(405, "method_not_allowed", "Method not allowed", str(exc.detail), request,
                       exc.headers)
    if isinstance(exc, InternalServerException) and exc.detail == CLIENT_GONE:
        # Not our fault and nobody to answer: a line for the record, not an error.
        log.info("client_disconnected", path=request.url.path, method=request.method)
        return problem(400, "validation_error", "Invalid request", "the client disconnected before "
                       "sending the whole request", request)
    if exc.status_code >= 500:
        return internal_error_handler(request, exc)
    if exc.status_code == 400:  # e.g. a body that is not JSON: one type, one title
        return problem(400, "validation_error", "Invalid request", str(exc.detail), request, exc.headers)
    return problem(exc.status_code, "http_error", "Request failed", str(exc.detail), request, exc.headers)


def internal_error_handler(request: Request, exc: Exception) -> Response[Problem]:
    log.error("unhandled_error", path=request.url.path, method=request.method, exc_info=exc)
    return problem(500, "internal_error", "Internal error",
                   "the registry failed to handle the request; it has been logged", request)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    e.RegistryError: registry_error_handler,
    Replay: replay_handler,
    ValidationException: validation_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
