"""``GET /metrics``, on the API's port and, for a ``worker`` process, on a port of its own (with
the worker's liveness, ``/healthz``, beside it).

``/metrics`` is outside ``/api``, out of the OpenAPI document and outside token authentication:
Prometheus scrapes it with ``REGISTRY_METRICS_TOKEN`` as a bearer token when that is set, and
without any when it is not (then keep the port off the public network, as is usual).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from litestar import Request, Response, get

from registry import metrics
from registry.adapters.db.metrics_queries import outbox_backlog

if TYPE_CHECKING:
    from registry.bootstrap import Container

log = structlog.get_logger("registry.metrics")
BACKLOG_TIMEOUT = 2.0  # a scrape answers even when the database does not


async def scrape(container: Container) -> bytes:
    """The exposition text, with the outbox backlog read now (or ``registry_outbox_up 0``)."""
    try:
        backlog = await asyncio.wait_for(
            outbox_backlog(container.uow.read_engine, datetime.now(UTC)), BACKLOG_TIMEOUT)
    except Exception as exc:  # the counters still matter most when the database is in trouble
        log.warning("metrics_backlog_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
        backlog = None
    return metrics.render(backlog)


@get("/metrics", include_in_schema=False, exclude_from_auth=True)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus' text format."""
    container: Container = request.app.state.container
    if not metrics.authorized(container.settings.metrics_token, request.headers.get("authorization")):
        return Response(b"a metrics token is needed: Authorization: Bearer <REGISTRY_METRICS_TOKEN>\n",
                        status_code=401, media_type="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(await scrape(container), media_type=metrics.MEDIA_TYPE)


async def serve_metrics(container: Container, host: str, port: int,
                        problem: Callable[[], str | None]) -> asyncio.Server:
    """``/metrics`` for a process that serves no API (``python -m registry worker``), and its
    liveness, ``/healthz`` (no token: 200, or 503 with ``problem()``): a small HTTP/1.1 server in
    the worker's event loop, one answer per connection. Answered from that loop, so a loop that
    is blocked or a process that is frozen fails the probe, where a TCP connect would pass (the
    kernel completes it)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, path = (request_line.split(" ") + ["", ""])[:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
            route = path.split("?")[0]
            if method in ("GET", "HEAD") and route == "/healthz":
                why = problem()
                status, body, kind = (("200 OK", b"ok\n", "text/plain") if why is None else
                                      ("503 Service Unavailable", f"{why}\n".encode(), "text/plain"))
            elif method not in ("GET", "HEAD") or route != "/metrics":
                status, body, kind = ("404 Not Found", b"GET /metrics, or /healthz\n", "text/plain")
            elif not metrics.authorized(container.settings.metrics_token, headers.get("authorization")):
                status, body, kind = "401 Unauthorized", b"a metrics token is needed\n", "text/plain"
            else:
                status, body, kind = "200 OK", await scrape(container), metrics.CONTENT_TYPE
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sent no request, or went away
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port, limit=16384)
