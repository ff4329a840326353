"""Stopping `serve` while a webhook is in flight: the workers stop cleanly and the delivery that
was being sent is finished and recorded within the grace period, not abandoned to its lease."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import deliveries_t
from tests.conftest import unique
from tests.support import run, server_for

ANSWER_AFTER = 2.0  # seconds the receiver takes; less than the workers' 5 s grace


class SlowReceiver:
    def __init__(self) -> None:
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                outer.arrived.set()
                time.sleep(ANSWER_AFTER)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    r = SlowReceiver()
    yield r
    r.server.shutdown()


async def _states(database_url: str) -> list[str]:
    engine = create_engine(database_url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return [r.state for r in await conn.execute(select(deliveries_t.c.state))]
    finally:
        await engine.dispose()


def test_sigterm_mid_delivery_finishes_it_and_stops_cleanly(
        backend: str, receiver: SlowReceiver, tmp_path: Path) -> None:
    env = {"REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true", "REGISTRY_WORKER_POLL_INTERVAL": "0.2"}
    with server_for(backend, tmp_path, extra_env=env) as srv:
        with httpx.Client(base_url=srv.api, headers=srv.headers, timeout=10) as c:
            c.post("/webhooks", json={"url": receiver.url, "event_types": ["model.created"]}
                   ).raise_for_status()
            c.post("/models", json={"name": unique("stop")}).raise_for_status()
        assert receiver.arrived.wait(15), "the delivery never started"
        srv.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert srv.process.wait(timeout=20) in (0, -signal.SIGTERM)
        states = run(_states(srv.database_url))
        log = [json.loads(line) for line in srv.log.read_text().splitlines() if line.startswith("{")]
    events = [entry.get("event") for entry in log]
    assert states == ["delivered"], states
    assert "workers_stopped" in events
    assert not [e for e in log if e.get("level") in ("error", "critical")], log
    assert "shutdown failed" not in srv.log.read_text()
