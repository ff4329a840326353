"""Test helpers shared by the suites: databases per test run, and real server processes."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

PG_ENV = "REGISTRY_TEST_DATABASE_URL"
REPO = Path(__file__).resolve().parents[1]


def postgres_url() -> str:
    """The PostgreSQL URL the run was given. Its absence fails the test: PostgreSQL tests never
    skip, so a CI that forgot the database cannot pass."""
    url = os.environ.get(PG_ENV)
    if not url:
        import pytest

        pytest.fail(f"{PG_ENV} is not set: PostgreSQL tests need a database (see README, Tests)")
    return url


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_pg_database() -> str:
    """A new, empty database beside the configured one; returns its SQLAlchemy URL."""
    base = make_url(postgres_url())
    name = f"{base.database}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_url()))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_url()))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'registry.db'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def run_server(database_url: str, data_dir: Path, workers: int = 1,
               extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``python -m registry serve`` as a real process on loopback until the block ends."""
    port = free_port()
    token = "mrt_test_" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATABASE_URL=database_url, REGISTRY_DATA_DIR=str(data_dir),
               REGISTRY_BOOTSTRAP_TOKEN=token, REGISTRY_LOG_FORMAT="json", **(extra_env or {}))
    log = data_dir / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", token, database_url, proc, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def server_for(backend: str, data_dir: Path, workers: int = 1) -> Iterator[Server]:
    """A server on a fresh database of ``backend`` ("sqlite" or "postgresql"), dropped afterwards."""
    url = sqlite_url(data_dir) if backend == "sqlite" else run(create_pg_database())
    try:
        with run_server(url, data_dir, workers=workers) as srv:
            yield srv
    finally:
        if backend == "postgresql":
            run(drop_pg_database(url))


def _wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log.read_text()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log.read_text()}")


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine from synchronous fixture code."""
    return asyncio.run(coro)
