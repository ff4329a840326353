"""Every line a served process writes to stderr is one JSON object, with REGISTRY_LOG_FORMAT=json:
uvicorn's start and stop lines, alembic's migration lines, SQLAlchemy's (its engine's statements,
asked for through REGISTRY_LOG_LEVEL), the registry's own, and a traceback as a structured list.

On SQLite ``serve`` migrates the empty database itself; on PostgreSQL ``python -m registry
migrate`` does, and its stderr is read the same way. The traceback comes from a real failure: a
webhook secret that the configured key cannot open (as after a wrong REGISTRY_SECRET_KEY)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from registry.adapters.db.tables import subscriptions_t
from registry.backup.export import head_revision
from tests.api.helpers import db_execute
from tests.conftest import unique
from tests.e2e.logged_server import environment, serve, start
from tests.e2e.receivers import Receiver
from tests.support import create_pg_database, drop_pg_database, run, sqlite_url

SERVE_ENV = {
    "REGISTRY_LOG_LEVEL": "info,sqlalchemy.engine=info",
    "REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true",
    "REGISTRY_WEBHOOK_RETRY_SCHEDULE": "0,30",
    "REGISTRY_WORKER_POLL_INTERVAL": "0.2",
}


def _migrations(entries: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in entries
            if e["logger"] == "alembic.runtime.migration" and e["event"].startswith("Running upgrade")]


def _migrate_postgresql(url: str, folder: Path) -> None:
    """``python -m registry migrate`` on the empty database: its stderr is JSON lines too."""
    migrate = start(["migrate"], environment(url, folder), folder, "migrate")
    assert migrate.process.wait(timeout=120) == 0, migrate.stderr.read_text()
    assert migrate.stdout.read_text() == "database is at the latest revision\n"
    assert _migrations(migrate.entries())[0].startswith("Running upgrade  -> 0001")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_line_on_stderr_is_json_with_its_logger_and_structured_tracebacks(
        backend: str, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path) if backend == "sqlite" else run(create_pg_database())
    try:
        if backend == "postgresql":
            _migrate_postgresql(url, tmp_path)
        with Receiver() as receiver, serve(url, tmp_path, **SERVE_ENV) as (server, logged):
            endpoint = receiver.endpoint("hook")
            with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as c:
                r = c.post("/webhooks", json={"url": endpoint.url, "event_types": ["*"]})
                assert r.status_code == 201, r.text
                # A secret the configured key cannot open: the delivery fails inside the worker.
                assert db_execute(server, update(subscriptions_t).values(secret="not-a-fernet-token")) == 1
                assert c.post("/models", json={"name": unique("logs")}).status_code == 201
            failed = logged.wait_for(lambda e: e["event"] == "delivery_error")
        assert logged.process.returncode in (0, -15)  # uvicorn ends by the signal it handled
        entries = logged.entries()  # every line, after SIGTERM and shutdown
    finally:
        if backend == "postgresql":
            run(drop_pg_database(url))

    by_logger = Counter(e["logger"] for e in entries)
    assert all({"timestamp", "level", "logger", "event"} <= e.keys() for e in entries)
    uvicorn = [e["event"] for e in entries if e["logger"] == "uvicorn.error"]
    assert uvicorn[0].startswith("Started server process") and uvicorn[-1].startswith("Finished server process")
    assert "Application shutdown complete." in uvicorn
    assert by_logger["sqlalchemy.engine.Engine"] > 10 and by_logger["registry.access"] >= 3
    assert by_logger["registry.workers"] >= 2  # workers_started, delivery_error, workers_stopped
    if backend == "sqlite":
        assert f"-> {head_revision(url)}," in _migrations(entries)[-1]
    assert not any("Traceback" in e["event"] for e in entries)

    [exc] = failed["exception"]  # a list of dicts, one per exception in the chain
    assert failed["level"] == "error" and exc["exc_type"] == "SecretKeyError"
    assert "cannot be decrypted" in exc["exc_value"]
    assert "_send" in [f["name"] for f in exc["frames"]] and exc["frames"][-1]["name"] == "decrypt"
    assert all("locals" not in f for f in exc["frames"])

    # stdout is for a person, not a log: what serve prints, and nothing else
    printed = logged.stdout.read_text().splitlines()
    assert printed[-1].startswith("Serving the model registry on http://127.0.0.1:"), printed
    assert not any(line.startswith("{") for line in printed)


def test_a_failed_start_still_logs_json(tmp_path: Path) -> None:
    """The port is taken: uvicorn says so and the process ends non-zero; what it said on the way,
    the migration and uvicorn's own error included, is JSON."""
    folder = tmp_path / "data"
    folder.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(["serve", "--port", str(port)], environment(sqlite_url(folder), folder), tmp_path, "serve")
        try:
            proc.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            raise
    assert proc.process.returncode != 0
    entries = proc.entries()  # each line parsed as JSON, or the test fails
    errors = [e for e in entries if e["logger"] == "uvicorn.error" and e["level"] == "error"]
    assert errors and "address already in use" in errors[0]["event"].lower(), proc.lines()
    assert _migrations(entries), proc.lines()


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_an_embedded_database_that_cannot_be_opened_ends_the_start_at_once(
        command: list[str], tmp_path: Path) -> None:
    """A SQLite URL naming a folder: nothing to wait for (there is no server to come up), so the
    command ends with status 1 and one JSON error line that names the file, instead of retrying."""
    folder = tmp_path / "not-a-file.db"
    folder.mkdir()
    proc = start(command, environment(f"sqlite+aiosqlite:///{folder}", tmp_path), tmp_path, command[0])
    try:
        assert proc.process.wait(timeout=60) == 1
    except subprocess.TimeoutExpired:
        proc.process.kill()
        raise AssertionError("still waiting for a database it can never open:\n" + "\n".join(proc.lines())) from None
    entries = proc.entries()  # every line JSON: no plain traceback, from a thread or otherwise
    assert not any(e["event"] == "database_unavailable_at_start" for e in entries)
    [error] = [e for e in entries if e["level"] in ("error", "critical")]
    assert error["event"] == "cannot_continue" and error["logger"] == "registry.start"
    assert f"cannot open the SQLite database {folder}" in error["detail"]
    assert proc.stdout.read_text() == ""


@pytest.mark.parametrize(("log_format", "command"), [
    ("json", ["serve"]), ("json", ["worker"]), ("json", ["export", "x.jsonl.gz"]),
    ("console", ["serve"]), ("yaml", ["serve"])])
def test_a_setting_the_service_refuses_is_said_in_the_log_s_format(
        log_format: str, command: list[str], tmp_path: Path) -> None:
    """The most common failed start, a bad setting, is known before the settings are: it is said
    in REGISTRY_LOG_FORMAT's format, or the default (JSON off a terminal) when that is the one
    that is wrong, and the command ends with status 1 having touched nothing."""
    env = {**environment(sqlite_url(tmp_path), tmp_path), "REGISTRY_LOG_FORMAT": log_format,
           "REGISTRY_SHUTDOWN_GRACE": "abc" if log_format != "yaml" else "10"}
    done = subprocess.run([sys.executable, "-m", "registry", *command], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    wrong = "REGISTRY_LOG_FORMAT" if log_format == "yaml" else "REGISTRY_SHUTDOWN_GRACE"
    if log_format == "console":
        assert done.stderr.startswith(f"error: invalid configuration: {wrong}"), done.stderr
        return
    [line] = [json.loads(text) for text in done.stderr.splitlines()]  # one line, and it is JSON
    assert (line["level"], line["logger"], line["event"]) == ("error", "registry.start", "cannot_continue")
    assert line["detail"].startswith(f"invalid configuration: {wrong}"), line
    assert not (tmp_path / "registry.db").exists()
