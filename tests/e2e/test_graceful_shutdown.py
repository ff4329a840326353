"""SIGTERM under load: a real ``python -m registry serve`` (and ``worker``) stops gracefully.

A burst of clients, each on its own keep-alive connection, registers models as fast as the server
answers, while a few slow uploads are half-sent and webhook deliveries hang at a slow receiver on
loopback. SIGTERM arrives in the middle of it. Then:

- every request written whole before SIGTERM got a 2xx, and so did the half-sent uploads, which
  finish their bodies after it; any other may find the server gone (refused, or reset if it was
  queued in the listening socket's backlog, or sent on an idle keep-alive connection as that was
  closed), and learns so at once rather than when the process exits; no answer is ever a 5xx;
- the process exits 0 within the grace (requests, then deliveries: at most twice
  REGISTRY_SHUTDOWN_GRACE, plus a little);
- no delivery is left leased: the ones cut off at the end of the grace had their lease released,
  their attempt not counted;
- every model a 201 promised is in the database, the audit chains verify, the log has no errors
  or leaked connections, and PostgreSQL has no session left on the database.

``worker`` alone: SIGTERM while deliveries are in flight releases their leases, and a new worker
sends them at once, long before the 60 s lease would have expired.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import attempts_t, deliveries_t, models_t, versions_t
from registry.bootstrap import build
from registry.config import Settings
from registry.domain.permissions import Role
from registry.services.audit import verify_audit
from registry.services.ports import Actor
from tests.api.helpers import create_model
from tests.conftest import BACKENDS, unique
from tests.e2e.receivers import OK, Receiver, Reply, poll
from tests.support import REPO, Server, asyncpg_dsn, postgres_url, run, server_for, stop

GRACE = 3.0  # REGISTRY_SHUTDOWN_GRACE for these servers
HANG = 40.0  # the receiver's answer time: longer than any grace, so deliveries are cut off
CLIENTS = 40
UPLOADS = 4
ENV = {"REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true", "REGISTRY_WORKER_POLL_INTERVAL": "0.2",
       "REGISTRY_SHUTDOWN_GRACE": str(GRACE), "REGISTRY_WEBHOOK_TIMEOUT": "30",
       "REGISTRY_DB_POOL_SIZE": "10"}
# What a clean stop never prints: tracebacks, pools or tasks left behind, uvicorn cutting requests.
BAD_LOG = ("Traceback", "not returned", "garbage collect", "Task was destroyed", "Event loop is closed",
           "timeout graceful shutdown exceeded", "shutdown failed", "non-checked-in connection")


@dataclass
class Call:
    kind: str  # "create" (the burst) or "upload" (a body sent in two halves around SIGTERM)
    name: str
    started: float  # time.monotonic() when the request began
    sent: float | None = None  # when its last byte had been written (None: never written whole)
    ended: float = 0.0
    status: int | None = None
    error: str | None = None


    async def trace(self, name: str, info: dict) -> None:
        """httpcore's trace hook: note when the whole request had been written."""
        if name == "http11.send_request_body.complete":
            self.sent = time.monotonic()


@dataclass
class Burst:
    calls: list[Call]
    signalled: float  # time.monotonic() just before SIGTERM
    exited: float  # when the process had exited


# -- the load -----------------------------------------------------------------------------------


async def _client(srv: Server, calls: list[Call]) -> None:
    """Register models one after another on one connection until the server is gone."""
    async with httpx.AsyncClient(base_url=srv.api, headers=srv.headers, timeout=60,
                                 limits=httpx.Limits(max_connections=1)) as c:
        while True:
            call = Call("create", unique("burst"), time.monotonic())
            calls.append(call)
            try:
                r = await c.post("/models", json={"name": call.name},
                                 extensions={"trace": call.trace})
            except httpx.TransportError as exc:
                call.ended, call.error = time.monotonic(), f"{type(exc).__name__}: {exc}"
                return
            call.ended, call.status = time.monotonic(), r.status_code


async def _upload(srv: Server, calls: list[Call], half_sent: asyncio.Event,
                  rest: asyncio.Event) -> None:
    """A POST whose body is half sent before SIGTERM and finished after it."""
    call = Call("upload", unique("upload"), time.monotonic())
    calls.append(call)
    body = json.dumps({"name": call.name, "description": "x" * 200}).encode()

    async def halves() -> AsyncIterator[bytes]:
        yield body[:100]
        half_sent.set()  # httpx asks for the next part once the first is written
        await rest.wait()
        yield body[100:]

    async with httpx.AsyncClient(base_url=srv.api, headers=srv.headers, timeout=60) as c:
        try:
            r = await c.post("/models", content=halves(), extensions={"trace": call.trace},
                             headers={"content-type": "application/json",
                                      "content-length": str(len(body))})
        except httpx.TransportError as exc:
            call.ended, call.error = time.monotonic(), f"{type(exc).__name__}: {exc}"
            return
        call.ended, call.status = time.monotonic(), r.status_code


async def _burst(srv: Server, receiver: Receiver) -> Burst:
    calls: list[Call] = []
    half_sent = [asyncio.Event() for _ in range(UPLOADS)]
    rest = asyncio.Event()
    tasks = [asyncio.create_task(_client(srv, calls)) for _ in range(CLIENTS)]
    tasks += [asyncio.create_task(_upload(srv, calls, e, rest)) for e in half_sent]
    deadline = time.monotonic() + 30
    while not (all(e.is_set() for e in half_sent) and len(receiver.in_flight) >= 3
               and sum(c.status == 201 for c in calls) >= 100):
        assert time.monotonic() < deadline, (len(receiver.in_flight), len(calls))
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the uploads' first halves are read
    signalled = time.monotonic()
    srv.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.0)  # the server is draining: the uploads still have bodies to send
    rest.set()
    code = await asyncio.to_thread(srv.process.wait, 2 * GRACE + 20)
    exited = time.monotonic()
    assert code == 0, f"exit status {code}:\n{srv.log.read_text()[-3000:]}"
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return Burst(calls, signalled, exited)


# -- what the database and the log say afterwards -----------------------------------------------


async def _rows(database_url: str, statement: Any) -> list[Any]:
    """The rows of one query, on a connection of its own (the server's pools are not ours)."""
    engine = create_engine(database_url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(statement))
    finally:
        await engine.dispose()


async def _leased(database_url: str) -> list[tuple[int, str]]:
    d = deliveries_t
    return [(r.id, r.state) for r in await _rows(database_url, select(d.c.id, d.c.state).where(
        (d.c.lease_token.is_not(None)) | (d.c.lease_until.is_not(None))))]


async def _model_names(database_url: str) -> set[str]:
    return {r.name for r in await _rows(database_url, select(models_t.c.name))}


async def _audit_ok(database_url: str, data_dir: Path) -> bool:
    container = build(Settings.from_env({"REGISTRY_DATABASE_URL": database_url,
                                         "REGISTRY_DATA_DIR": str(data_dir)}))
    try:
        verdict = await verify_audit(None, container.uow(Actor("test", "test", Role.ADMIN),
                                                         write=False))
    finally:
        await container.close()
    return verdict.ok and verdict.checked > 0


async def _sessions_on(database_url: str) -> int:
    """PostgreSQL sessions connected to this test's database (the server's pools, if left)."""
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url()))
    try:
        name = database_url.rsplit("/", 1)[1]
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()


def _log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _check_clean_log(path: Path) -> list[dict]:
    text = path.read_text()
    for bad in BAD_LOG:
        assert bad not in text, f"{bad!r} in the log:\n{text[-4000:]}"
    lines = _log_lines(path)
    assert not [e for e in lines if e.get("level") in ("error", "critical")], text[-4000:]
    return lines


def _released(lines: list[dict]) -> int:
    return sum(e.get("deliveries", 0) for e in lines if e.get("event") == "leases_released")


# -- serve ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "workers"), [("sqlite", 1), ("postgresql", 1), ("postgresql", 2)],
                         ids=["sqlite", "postgresql", "postgresql-2-workers"])
def test_sigterm_during_a_burst_loses_nothing(backend: str, workers: int, tmp_path: Path) -> None:
    with Receiver() as receiver, server_for(backend, tmp_path, workers=workers, extra_env=ENV) as srv:
        hook = receiver.endpoint("slow")
        hook.answer(then=Reply(200, delay=HANG))
        made = httpx.post(srv.api + "/webhooks", headers=srv.headers, timeout=10,
                          json={"url": hook.url, "event_types": ["model.created"]})
        assert made.status_code == 201, made.text
        hook.secrets = [made.json()["secret"]]

        burst = run(_burst(srv, receiver))

        calls = burst.calls
        assert not [c for c in calls if c.status is not None and not 200 <= c.status < 300], calls
        # Written whole before SIGTERM: the server has it and must answer it.
        sent = [c for c in calls if c.sent is not None and c.sent < burst.signalled]
        lost = [(c, c.sent - burst.signalled) for c in sent if c.status is None]
        assert not lost, lost[:5]
        # The rest may find the server gone, but at once (refused, or reset from the backlog),
        # not left hanging until the process exits: a client must be free to go elsewhere.
        late = [c.ended - burst.signalled for c in calls if c.status is None]
        assert max(late, default=0) < GRACE, sorted(late)
        across = [c for c in sent if c.ended > burst.signalled]
        assert len(across) >= 10, f"only {len(across)} requests were in flight at SIGTERM"
        uploads = [c for c in calls if c.kind == "upload"]
        assert [c.status for c in uploads] == [201] * UPLOADS, uploads
        took = burst.exited - burst.signalled
        assert took < 2 * GRACE + 5, f"{took:.1f} s from SIGTERM to exit"

        assert run(_leased(srv.database_url)) == []
        promised = {c.name for c in calls if c.status == 201}
        assert promised <= run(_model_names(srv.database_url))
        assert run(_audit_ok(srv.database_url, srv.log.parent))
        lines = _check_clean_log(srv.log)
        assert _released(lines) >= 1, "no delivery was in flight at the end of the grace"
        assert sum(e.get("event") == "workers_stopped" for e in lines) == workers
        if backend == "postgresql":
            poll(lambda: run(_sessions_on(srv.database_url)) == 0, 5, "sessions left on the database")


class _ModelLocked:
    """Another session holding the write lock a change to the model needs: PostgreSQL's row lock
    on the model, or SQLite's database lock (the server then waits in SQLite's busy handler, in
    aiosqlite's thread). Released by ``release``, from any thread."""

    def __init__(self, database_url: str, name: str) -> None:
        self.database_url, self.name = database_url, name
        self.loop = asyncio.new_event_loop()
        self.held: Any = None

    def __enter__(self) -> _ModelLocked:
        if self.database_url.startswith("sqlite"):
            path = make_url(self.database_url).database
            self.held = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.held.execute("BEGIN EXCLUSIVE")
        else:
            self.held = self.loop.run_until_complete(asyncpg.connect(asyncpg_dsn(self.database_url)))
            self.loop.run_until_complete(self._lock())
        return self

    async def _lock(self) -> None:
        await self.held.execute("BEGIN")
        await self.held.execute("SELECT 1 FROM registered_models WHERE name = $1 FOR UPDATE", self.name)

    def release(self) -> None:
        if self.held is None:
            return
        if isinstance(self.held, sqlite3.Connection):
            self.held.execute("ROLLBACK")
            self.held.close()
        else:
            self.loop.run_until_complete(self.held.close())
        self.held = None

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.loop.close()


async def _versions_of(database_url: str, name: str) -> int:
    [(count,)] = await _rows(database_url, select(func.count()).select_from(
        versions_t.join(models_t, versions_t.c.model_id == models_t.c.id))
        .where(models_t.c.name == name))
    return count


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_request_still_running_when_the_grace_ends_gets_503_and_changes_nothing(
        backend: str, tmp_path: Path) -> None:
    """A registration waits for a lock another session holds past the grace: uvicorn cancels
    it, and the client is told 503 (retry; the server is stopping), never 500; the version it
    asked for does not exist, even once the lock is free; the process still exits 0."""
    with server_for(backend, tmp_path, extra_env=ENV) as srv:
        with httpx.Client(base_url=srv.api, headers=srv.headers, timeout=10) as c:
            name = create_model(c, "held")
        with _ModelLocked(srv.database_url, name) as lock, ThreadPoolExecutor(1) as pool:
            asked = pool.submit(httpx.post, f"{srv.api}/models/{name}/versions", headers=srv.headers,
                                json={"source": "s3://bucket/model"}, timeout=60)
            time.sleep(1.0)  # the registration is waiting for the lock
            assert not asked.done()
            signalled = time.monotonic()
            srv.process.send_signal(signal.SIGTERM)
            # SQLite's busy handler does not see cancellation: free the lock after the grace
            freed = threading.Timer(GRACE + 1.0, lock.release)
            freed.start()
            r = asked.result(timeout=GRACE + 20)
            answered = time.monotonic() - signalled
            assert srv.process.wait(timeout=2 * GRACE + 10) == 0
            freed.join()  # before the block releases it too: one release, from one thread
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "unavailable" and "stopping" in r.json()["detail"]
        assert r.headers["connection"] == "close" and r.headers["retry-after"]
        assert r.headers["x-request-id"]
        assert answered >= GRACE - 0.5, f"cut off {answered:.1f} s after SIGTERM, before the grace"
        if backend == "postgresql":  # the cancelled session ends once it has the lock
            poll(lambda: run(_sessions_on(srv.database_url)) == 0, 10, "sessions left on the database")
        assert run(_versions_of(srv.database_url, name)) == 0
        assert run(_audit_ok(srv.database_url, srv.log.parent))
        text = srv.log.read_text()
        assert "Exception in ASGI application" not in text and "Traceback" not in text
        access = [e for e in _log_lines(srv.log) if e.get("event") == "request"
                  and e.get("path", "").endswith("/versions")]
        assert [e["status"] for e in access] == [503]


# -- worker ---------------------------------------------------------------------------------------


def _start_worker(srv: Server, label: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m registry worker`` on the server's database and data directory (its key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(ENV, REGISTRY_DATABASE_URL=srv.database_url, REGISTRY_DATA_DIR=str(srv.log.parent),
               REGISTRY_LOG_FORMAT="json")
    log = srv.log.parent / f"{label}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "registry", "worker"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    poll(lambda: proc.poll() is not None or "workers_started" in log.read_text(), 60,
         lambda: log.read_text())
    assert proc.poll() is None, log.read_text()
    return proc, log


async def _deliveries(database_url: str) -> list[tuple[str, int, int]]:
    """(state, attempts, attempt rows) of every delivery."""
    d, a = deliveries_t, attempts_t
    rows = (select(d.c.state, d.c.attempts, func.count(a.c.id))
            .outerjoin(a, a.c.delivery_id == d.c.id).group_by(d.c.id).order_by(d.c.id))
    return [tuple(r) for r in await _rows(database_url, rows)]


def test_sigterm_to_a_worker_hands_its_deliveries_on(backend: str, tmp_path: Path) -> None:
    events = 5
    env = {**ENV, "REGISTRY_RUN_WORKERS": "false"}
    with Receiver() as receiver, server_for(backend, tmp_path, extra_env=env) as srv:
        hook = receiver.endpoint("slow")
        hook.answer(then=Reply(200, delay=HANG))
        with httpx.Client(base_url=srv.api, headers=srv.headers, timeout=10) as c:
            made = c.post("/webhooks", json={"url": hook.url, "event_types": ["model.created"]})
            assert made.status_code == 201, made.text
            hook.secrets = [made.json()["secret"]]
            for _ in range(events):
                r = c.post("/models", json={"name": unique("held")})
                assert r.status_code == 201, r.text

        first, first_log = _start_worker(srv, "worker-1")
        try:
            hook.wait_for(lambda got: len(got) == events, 20, "every delivery in flight")
            signalled = time.monotonic()
            first.send_signal(signal.SIGTERM)
            assert first.wait(GRACE + 15) == 0, first_log.read_text()
        finally:
            stop(first)
        assert time.monotonic() - signalled < GRACE + 5
        assert run(_leased(srv.database_url)) == []
        # Not counted: the receiver did not fail these attempts, the worker hung up on them.
        assert run(_deliveries(srv.database_url)) == [("pending", 0, 0)] * events
        assert _released(_check_clean_log(first_log)) == events

        hook.answer(then=OK)
        second, second_log = _start_worker(srv, "worker-2")
        try:
            # Well before the 60 s lease the first worker's claims would otherwise have held.
            poll(lambda: run(_deliveries(srv.database_url)) == [("delivered", 1, 1)] * events, 10,
                 lambda: f"{run(_deliveries(srv.database_url))}\n{second_log.read_text()[-3000:]}")
        finally:
            stop(second)
        assert [r.status for r in hook.received[events:]] == [200] * events
