"""Test helpers shared by the suites: databases per test run, and real server processes."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from registry.adapters.db import migrate
from registry.adapters.db.engine import create_engine, is_sqlite

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


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_pg_database(template: str | None = None) -> str:
    """A new database beside the configured one (empty, or a copy of ``template``); returns its
    SQLAlchemy URL."""
    base = make_url(postgres_url())
    name = f"{base.database}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url()))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await conn.close()
    return base.set(database=name).render_as_string(hide_password=False)


# Databases at the latest revision, made once per run by the real migrations and then copied: a
# copy costs a fraction of running every migration again for each test and each server. The
# migrations themselves are tested from empty databases (tests/integration/test_migration*.py).
_migrated: dict[str, str] = {}


async def migrated_pg_database() -> str:
    """A new PostgreSQL database at the latest revision (CREATE DATABASE ... TEMPLATE)."""
    if "postgresql" not in _migrated:
        url = await create_pg_database()
        await asyncio.to_thread(migrate.upgrade, url)
        _migrated["postgresql"] = make_url(url).database or ""
        atexit.register(lambda: asyncio.run(drop_pg_database(url)))
    return await create_pg_database(template=_migrated["postgresql"])


def migrated_sqlite_url(directory: Path) -> str:
    """A SQLite database at the latest revision in ``directory`` (a copy of one migrated file)."""
    if "sqlite" not in _migrated:
        made = Path(tempfile.mkdtemp(prefix="registry-template-"))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # it runs its own event loop
            pool.submit(migrate.upgrade, sqlite_url(made)).result()
        with sqlite3.connect(made / "registry.db") as db:  # everything into the main file
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _migrated["sqlite"] = str(made / "registry.db")
        atexit.register(shutil.rmtree, made, True)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated["sqlite"], directory / "registry.db")
    return sqlite_url(directory)


async def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url()))
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
               extra_env: dict[str, str] | None = None, migrated: bool = False) -> Iterator[Server]:
    """Run ``python -m registry serve`` as a real process on loopback until the block ends
    (on PostgreSQL after ``python -m registry migrate``, unless the database is ``migrated``)."""
    port = free_port()
    token = "mrt_test_" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATABASE_URL=database_url, REGISTRY_DATA_DIR=str(data_dir),
               REGISTRY_BOOTSTRAP_TOKEN=token, REGISTRY_LOG_FORMAT="json", **(extra_env or {}))
    log = data_dir / f"serve-{port}.log"
    if not migrated and not database_url.startswith("sqlite"):  # as in production: migrate, serve
        subprocess.run([sys.executable, "-m", "registry", "migrate"], cwd=REPO, env=env, check=True,
                       capture_output=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", token, database_url, proc, log)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask a process to end (SIGTERM), and kill it if it has not within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def max_in_flight(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant (an end before a start at a tie)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def request_interval(access_line: dict[str, Any]) -> tuple[float, float]:
    """When a request was inside the server (headers received to response sent), from its access
    line, which carries its end time and duration."""
    end = datetime.fromisoformat(access_line["timestamp"]).timestamp()
    return end - access_line["duration_ms"] / 1000, end


def end_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM to a process started with ``start_new_session`` (an ``mlflow server``: it ends its
    gunicorn or uvicorn and its job runner), then SIGKILL to whatever of its process group is left
    after ``grace`` seconds."""
    proc.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)  # anyone of the group left?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def server_for(backend: str, data_dir: Path, workers: int = 1,
               extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """A server on a fresh database of ``backend`` ("sqlite" or "postgresql"), dropped afterwards."""
    url = migrated_sqlite_url(data_dir) if backend == "sqlite" else run(migrated_pg_database())
    try:
        with run_server(url, data_dir, workers=workers, extra_env=extra_env, migrated=True) as srv:
            yield srv
    finally:
        if backend == "postgresql":
            run(drop_pg_database(url))


def wait_ready(server: Server, timeout: float = 60.0) -> None:
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


# -- tampering with the append-only audit table -----------------------------------------------------

AUDIT_TABLE = "audit_log"

# pg_trigger.tgenabled -> the ALTER TABLE clause that puts a trigger back in that mode.
_PG_ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}


async def tamper(database_url: str, *statements: str | Executable, **params: Any) -> list[int]:
    """Run ``statements`` against the database as an attacker with the owner's rights would:
    past the triggers that make ``audit_log`` append-only, in one transaction, which also puts
    the triggers back exactly as they were, so no other session ever sees the table unguarded.

    A statement is SQL text (``params`` bind its ``:name`` placeholders) or a SQLAlchemy
    statement. Returns each statement's rowcount. Works whether the triggers exist or not.

    PostgreSQL: the table's enabled user triggers are disabled by name and re-enabled in their
    former mode (this needs table ownership; ``SET session_replication_role`` would need a
    superuser). SQLite: under ``BEGIN IMMEDIATE`` the table's triggers are read from
    ``sqlite_master``, dropped, and recreated from their stored text.
    """
    engine = create_engine(database_url, null_pool=True)
    try:
        async with engine.begin() as conn:
            if is_sqlite(database_url):
                return await _tamper_sqlite(conn, statements, params)
            return await _tamper_postgresql(conn, statements, params)
    finally:
        await engine.dispose()


def tamper_sync(database_url: str, *statements: str | Executable, **params: Any) -> list[int]:
    """:func:`tamper` from synchronous code, on a thread of its own so that no event loop of the
    test session is touched."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, tamper(database_url, *statements, **params)).result()


async def _run_statements(conn: AsyncConnection, statements: tuple[str | Executable, ...],
                          params: dict[str, Any]) -> list[int]:
    counts = []
    for statement in statements:
        if isinstance(statement, str):
            result = await conn.execute(text(statement), params)
        else:
            result = await conn.execute(statement)
        counts.append(result.rowcount)
    return counts


async def _tamper_postgresql(conn: AsyncConnection, statements: tuple[str | Executable, ...],
                             params: dict[str, Any]) -> list[int]:
    enabled = (await conn.execute(text(
        "SELECT tgname, CAST(tgenabled AS text) FROM pg_trigger "
        "WHERE tgrelid = to_regclass(CAST(:table AS text)) AND NOT tgisinternal AND tgenabled <> 'D' "
        "ORDER BY tgname"), {"table": AUDIT_TABLE})).all()
    if enabled:
        # Same effect as DISABLE TRIGGER USER, but only for the triggers this undoes afterwards.
        await conn.exec_driver_sql(f"ALTER TABLE {AUDIT_TABLE} " + ", ".join(
            f"DISABLE TRIGGER {_pg_ident(name)}" for name, _ in enabled))
    counts = await _run_statements(conn, statements, params)
    if enabled:
        await conn.exec_driver_sql(f"ALTER TABLE {AUDIT_TABLE} " + ", ".join(
            f"{_PG_ENABLE[str(mode)]} {_pg_ident(name)}" for name, mode in enabled))
    return counts


async def _tamper_sqlite(conn: AsyncConnection, statements: tuple[str | Executable, ...],
                         params: dict[str, Any]) -> list[int]:
    triggers = (await conn.execute(text(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND lower(tbl_name) = :table "
        "ORDER BY rowid"), {"table": AUDIT_TABLE})).all()
    for name, _ in triggers:
        await conn.exec_driver_sql(f"DROP TRIGGER {_sqlite_ident(name)}")
    counts = await _run_statements(conn, statements, params)
    for _, sql in triggers:
        await conn.exec_driver_sql(sql)
    return counts


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_sqlite_ident = _pg_ident
