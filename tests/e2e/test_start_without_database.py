"""A worker or server started while its database refuses connections (every slot taken) waits,
says so in its log, and starts once the database lets it in, instead of exiting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.support import (
    REPO,
    asyncpg_dsn,
    drop_pg_database,
    free_port,
    migrated_pg_database,
    postgres_url,
    run,
    stop,
)


async def _connection_limit(database: str, limit: int) -> None:
    # From the run's own database: a database's owner may change its connection limit.
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url()))
    try:
        await conn.execute(f'ALTER DATABASE "{database}" CONNECTION LIMIT {limit}')
    finally:
        await conn.close()


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text()
        if text in log:
            return log
        assert proc.poll() is None, f"the process exited ({proc.returncode}):\n{log}"
        time.sleep(0.1)
    pytest.fail(f"{text!r} not in the log after {timeout} s:\n{path.read_text()}")


@pytest.mark.postgresql
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_process_started_without_a_connection_slot_waits_for_one(command: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    url = run(migrated_pg_database())
    database = make_url(url).database or ""
    run(_connection_limit(database, 0))  # "too many connections" for everyone but superusers
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATABASE_URL=url, REGISTRY_DATA_DIR=str(tmp_path), REGISTRY_LOG_FORMAT="json",
               REGISTRY_DB_POOL_SIZE="2")
    args = ["--port", str(free_port())] if command == "serve" else []
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "registry", command, *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        text = _wait_for(log, "database_unavailable_at_start", proc)
        _wait_for(log, '"retry_in": 1.0', proc)  # it backs off, and is still running
        assert "TooManyConnections" in text or "too many connections" in text
        assert "Traceback" not in log.read_text()
        run(_connection_limit(database, -1))
        _wait_for(log, "running" if command == "worker" else "Serving the model registry", proc)
        assert proc.poll() is None
        # A local artifact folder on PostgreSQL: replicas must share it, and the log says so.
        assert "local_artifact_store_with_postgresql" in log.read_text()
    finally:
        stop(proc)
        run(_connection_limit(database, -1))
        run(drop_pg_database(url))
