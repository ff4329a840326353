"""The app factory: settings in, a Litestar app out. Nothing reads the environment at import."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme, Server
from litestar.routes import HTTPRoute

import registry
from registry import metrics
from registry.api import ui
from registry.api.body_timeout import BodyIdleTimeout
from registry.api.controllers.artifacts import ArtifactController, resolve_uri
from registry.api.controllers.audit import AuditController
from registry.api.controllers.comments import CommentController
from registry.api.controllers.gates import GateController, TransitionRequestController
from registry.api.controllers.health import healthz, readyz
from registry.api.controllers.models import ModelController
from registry.api.controllers.tokens import TokenController
from registry.api.controllers.versions import VersionController
from registry.api.controllers.webhooks import LineageSinkController, WebhookController
from registry.api.errors import EXCEPTION_HANDLERS, http_error_handler
from registry.api.idempotency import IdempotencyMiddleware
from registry.api.metrics import metrics_endpoint
from registry.api.middleware import RequestIdMiddleware, TokenAuthMiddleware
from registry.api.mlflow import PREFIXES as MLFLOW_PREFIXES
from registry.api.mlflow import routers as mlflow_routers
from registry.api.mlflow.errors import http_error_handler as mlflow_http_error_handler
from registry.api.openapi import tighten
from registry.api.strict import StrictRequest, install, reject_loose_query
from registry.bootstrap import Container

Hook = Callable[[], Awaitable[None]]


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Model Registry",
        version=registry.__version__,
        description=(
            "Registered models and their versions, moved through the stage machine "
            "none -> staging -> production -> archived; every move guarded, audited in a "
            "hash-chained log and announced through a transactional outbox. Errors are RFC 9457 "
            "problem documents with a stable `code`."
        ),
        servers=[Server(url="/")],
        security=[{"BearerToken": []}],
        components=Components(security_schemes={
            "BearerToken": SecurityScheme(type="http", scheme="bearer",
                                          description="an API token (mrt_...)"),
        }),
        path="/schema",
        create_examples=False,
    )


def _fix_default_options(app: Litestar) -> None:
    """Litestar 2 (litestar-org/litestar#4169, fixed only in v3): the default OPTIONS handler of a
    path served by several handlers answers with the methods of the first route built for that
    path (`Allow: OPTIONS, POST` on /api/v1/models). Point each one at its final route."""
    for route in app.routes:
        if isinstance(route, HTTPRoute) and "OPTIONS" in route.route_handler_map:
            for cell in route.route_handler_map["OPTIONS"][0].fn.__closure__ or ():
                if isinstance(cell.cell_contents, HTTPRoute):
                    cell.cell_contents = route


def _http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Errors raised before any route was chosen (a method the path does not serve) answer in
    the wire format of the surface the path belongs to."""
    if request.url.path.startswith(MLFLOW_PREFIXES):
        return mlflow_http_error_handler(request, exc)
    return http_error_handler(request, exc)


def create_app(container: Container, *, on_startup: Sequence[Hook] = (),
               on_shutdown: Sequence[Hook] = ()) -> Litestar:
    """``on_startup``/``on_shutdown`` run in the server's event loop (the workers, when serve
    runs them); the container closes last."""
    api = Router(
        path="/api/v1",
        route_handlers=[ModelController, VersionController, AuditController, TokenController,
                        WebhookController, LineageSinkController, GateController,
                        TransitionRequestController, CommentController, ArtifactController, resolve_uri],
        middleware=[DefineMiddleware(TokenAuthMiddleware)],
        # Strict bodies and queries for every operation (see strict.py); a handler's own
        # before_request would replace the check, so none declares one.
        request_class=StrictRequest,
        before_request=reject_loose_query,
    )

    publishing: list[asyncio.Task[None]] = []

    async def publish() -> None:
        publishing.append(asyncio.create_task(metrics.publish_forever()))

    async def close() -> None:
        for task in publishing:
            task.cancel()
        await container.close()
        metrics.process_exited()

    app = Litestar(
        route_handlers=[api, *mlflow_routers(), *ui.handlers(), healthz, readyz, metrics_endpoint],
        template_config=ui.template_config(),
        exception_handlers={**EXCEPTION_HANDLERS, HTTPException: _http_error_handler},
        openapi_config=openapi_config(),
        on_startup=[publish, *on_startup],
        on_shutdown=[*on_shutdown, close],
        logging_config=None,
        debug=False,
    )
    app.state.container = container
    _fix_default_options(app)
    install(app)
    tighten(app.openapi_schema)  # cached: /schema serves the tightened document too
    return app


def asgi_app(container: Container, *, on_startup: Sequence[Hook] = (),
             on_shutdown: Sequence[Hook] = ()) -> RequestIdMiddleware:
    """The app as served: the request-id middleware wraps everything, error responses included
    (so its access lines and request metrics see what the client sees); inside it, Idempotency-Key
    handling holds each keyed POST's answer until it committed."""
    app = create_app(container, on_startup=on_startup, on_shutdown=on_shutdown)
    idle = container.settings.body_idle_timeout
    return RequestIdMiddleware(BodyIdleTimeout(IdempotencyMiddleware(app, container), idle))
