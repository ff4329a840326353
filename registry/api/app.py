"""The app factory: settings in, a Litestar app out. Nothing reads the environment at import."""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme, Server

import registry
from registry.api.controllers.audit import AuditController
from registry.api.controllers.health import healthz, readyz
from registry.api.controllers.models import ModelController
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


def create_app(container: Container) -> Litestar:
    api = Router(
        path="/api/v1",
        route_handlers=[ModelController, VersionController, AuditController],
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
