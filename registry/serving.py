"""What ``serve`` runs in each server process: the app and, unless REGISTRY_RUN_WORKERS=false,
the workers in the same event loop (started after the app, stopped before the database closes).

On SIGTERM (uvicorn; with ``--workers N`` the supervisor passes it on to each process): the
listening socket closes and idle keep-alive connections with it; requests in flight get up to
REGISTRY_SHUTDOWN_GRACE seconds to finish, each answered with ``Connection: close``; then the
lifespan shutdown stops the workers (deliveries in flight get the same grace, the rest have their
leases released) and the container closes the database pools, senders and artifact store."""

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
        await workers.stop(settings.shutdown_grace)

    return asgi_app(container, on_startup=[start_workers], on_shutdown=[stop_workers])


def exit_cleanly_on_sigterm(workers: int) -> None:
    """Make ``serve``'s own process end a graceful stop with status 0 and, with several server
    processes, refuse new connections while they drain. Call just before ``uvicorn.run``."""
    import signal

    def stopped(signum: int, frame: object) -> None:
        raise SystemExit(0)

    # uvicorn re-raises the signal it stopped for once it has shut down gracefully; with Python's
    # default SIGTERM handling that would report a clean stop as "killed" (status 143). Exit 0,
    # as after SIGINT and as `worker` does. uvicorn holds its own handler while it serves.
    signal.signal(signal.SIGTERM, stopped)
    if workers > 1:
        from uvicorn.supervisors.multiprocess import Multiprocess

        forward = Multiprocess.terminate_all

        def terminate_all(self: Multiprocess) -> None:
            # Left open while the processes drain, the supervisor's copy of the listening socket
            # has the kernel queue connections nobody accepts (reset when it exits): closed, they
            # are refused at once and the client can go elsewhere. (uvicorn 0.54's supervisor.)
            for sock in self.sockets:
                sock.close()
            forward(self)

        Multiprocess.terminate_all = terminate_all  # type: ignore[method-assign]
