"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from registry.api.errors import problem, problem_responses
from registry.api.schemas import Health, Problem


@get("/healthz", operation_id="healthz", tags=["health"], exclude_from_auth=True, security=[{}])
async def healthz() -> Health:
    """The process is up."""
    return Health("ok")


@get("/readyz", operation_id="readyz", tags=["health"], exclude_from_auth=True, security=[{}],
     responses={503: problem_responses()[503]})
async def readyz(request: Request[Any, Any, Any]) -> Response[Health] | Response[Problem]:
    """The database answers (within 1.5 s, whatever it does) and the artifact store is usable.
    503 `unavailable` with `Retry-After` otherwise."""
    reason = await request.app.state.container.not_ready()
    if reason is not None:
        return problem(503, "unavailable", "Service unavailable", reason, request)
    return Response(Health("ok"))
