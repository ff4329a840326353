"""What ``serve`` runs in each server process: the app and, unless REGISTRY_RUN_WORKERS=false,
the workers in the same event loop (started after the app, stopped before the database closes)."""

from __future__ import annotations

import structlog

from registry.api.app import asgi_app
from registry.api.middleware import RequestIdMiddleware
from registry.bootstrap import WorkersAlreadyRunning, build
from registry.config import Settings
from registry.log import configure
from registry.workers.runner import Workers


def app_from_env() -> RequestIdMiddleware:
    """Factory for uvicorn workers: read settings once, configure logs, build the container."""
    settings = Settings.from_env()
    configure(settings.log_format)
    container = build(settings)
    if not settings.run_workers:
        return asgi_app(container)
    workers = Workers(container)

    async def start_workers() -> None:
        try:
            await workers.start()
        except WorkersAlreadyRunning as exc:  # SQLite: a `worker` process has them; serve the API
            structlog.get_logger("registry.workers").warning("workers_not_started", reason=str(exc))

    async def stop_workers() -> None:  # Litestar passes the app to a hook that takes arguments
        await workers.stop()

    return asgi_app(container, on_startup=[start_workers], on_shutdown=[stop_workers])
