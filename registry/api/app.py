"""The app factory: settings in, a Litestar app out. Nothing reads the environment at import."""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme, Server
from litestar.routes import HTTPRoute

import registry
from registry.api.controllers.audit import AuditController
from registry.api.controllers.health import healthz, readyz
from registry.api.controllers.models import ModelController
from registry.api.controllers.tokens import TokenController
from registry.api.controllers.versions import VersionController
from registry.api.errors import EXCEPTION_HANDLERS
from registry.api.middleware import RequestIdMiddleware, TokenAuthMiddleware
from registry.api.openapi import tighten
from registry.bootstrap import Container, build
from registry.config import Settings
from registry.log import configure


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


def create_app(container: Container) -> Litestar:
    api = Router(
        path="/api/v1",
        route_handlers=[ModelController, VersionController, AuditController, TokenController],
        middleware=[DefineMiddleware(TokenAuthMiddleware)],
    )

    async def close() -> None:
        await container.close()

    app = Litestar(
        route_handlers=[api, healthz, readyz],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(),
        on_shutdown=[close],
        logging_config=None,
        debug=False,
    )
    app.state.container = container
    _fix_default_options(app)
    tighten(app.openapi_schema)  # cached: /schema serves the tightened document too
    return app


def asgi_app(container: Container) -> RequestIdMiddleware:
    """The app as served: the request-id middleware wraps everything, error responses included."""
    return RequestIdMiddleware(create_app(container))


def app_from_env() -> RequestIdMiddleware:
    """Factory for uvicorn workers: read settings once, configure logs, build the container."""
    settings = Settings.from_env()
    configure(settings.log_format)
    return asgi_app(build(settings))
