"""ASGI middleware: request ids, trace context, access log lines and request metrics, and
bearer-token authentication."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from registry import metrics, tracing
from registry.api.errors import send_problem
from registry.services.tokens import Authenticator

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
access_log = structlog.get_logger("registry.access")


class RequestIdMiddleware:
    """Accepts a sane ``X-Request-ID`` or makes one, continues the caller's trace (W3C
    ``traceparent``) or starts one, binds both for every log line of the request, echoes the
    request id in the response, and writes one access line per request and counts it in the
    metrics (registry.metrics: by route template, never by path). On lifespan shutdown it
    sends the spans still batched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan passes straight through
            try:
                await self.app(scope, receive, send)
            finally:
                if scope["type"] == "lifespan":
                    tracing.shutdown()
            return
        request_id = traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and request_id is None:
                candidate = value.decode("latin-1")
                request_id = candidate if _VALID_REQUEST_ID.match(candidate) else ""
            elif name == b"traceparent" and traceparent is None:
                traceparent = value.decode("latin-1")
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        parent = tracing.parse_traceparent(traceparent)
        if not tracing.exporting():  # the ids only: one context variable, one binding
            ctx = parent.child() if parent is not None else tracing.new_trace()
            token = tracing.enter(ctx)
            structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=ctx.trace_id,
                                                   span_id=ctx.span_id)
            try:
                await self._serve(scope, receive, send, request_id)
            finally:
                tracing.leave(token)
            return
        structlog.contextvars.bind_contextvars(request_id=request_id)
        method, path = scope["method"], scope["path"]
        with tracing.span(method, parent, kind="server",
                          attributes={"http.request.method": method, "url.path": path,
                                      "registry.request_id": request_id}) as span:
            status = await self._serve(scope, receive, send, request_id)
            route = scope.get("path_template")
            span.rename(f"{method} {route}" if route else method)
            span.set({"http.route": route, "http.response.status_code": status})
            if status >= 500:
                span.fail(f"HTTP {status}")

    async def _serve(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        started = time.perf_counter()
        status = 500
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the shutdown grace is over, and would answer
            # 500. The request was cut off, not wrong: 503, so the client retries elsewhere (a
            # write cut off before its commit left nothing; an Idempotency-Key makes any retry
            # safe). The task has done its part: it ends here rather than cancelled.
            if answered:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await send_problem(send_with_id, 503, "unavailable", "Service unavailable",
                               "the server is stopping and could not finish this request in its "
                               "shutdown grace; retry", [(b"connection", b"close")])
        finally:
            elapsed = time.perf_counter() - started
            access_log.info("request", method=scope["method"], path=scope["path"], status=status,
                            duration_ms=round(elapsed * 1000, 2))
            metrics.request_answered(scope["method"], scope.get("path_template"), status, elapsed)
        return status


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer`` to a principal (``request.user``); 401 otherwise."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        authenticator: Authenticator = connection.app.state.container.authenticator
        principal = await authenticator.authenticate(connection.headers.get("authorization"))
        structlog.contextvars.bind_contextvars(actor=principal.token_name)
        return AuthenticationResult(user=principal, auth=None)
