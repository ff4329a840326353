"""A real ``python -m registry serve`` (or ``worker``) whose stderr, the log, is kept apart from
its stdout (what the command prints for a person), for the tests of logs and trace context."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import REPO, Server, free_port, stop, wait_ready


@dataclass
class Logged:
    """A process and the files its stdout and stderr go to."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def lines(self) -> list[str]:
        return [line for line in self.stderr.read_text().splitlines() if line.strip()]

    def entries(self) -> list[dict[str, Any]]:
        """Every line of stderr as JSON: a line that is not JSON fails the test, with the line."""
        out = []
        for number, line in enumerate(self.lines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"stderr line {number} is not JSON: {line!r}") from None
        return out

    def wait_for(self, found: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.entries():
                if found(entry):
                    return entry
            time.sleep(0.1)
        raise AssertionError(f"no such log line after {timeout}s; stderr:\n" + "\n".join(self.lines()[-30:]))


def environment(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REGISTRY_", "OTEL_"))}
    env.update(REGISTRY_DATABASE_URL=database_url, REGISTRY_DATA_DIR=str(data_dir),
               REGISTRY_LOG_FORMAT="json", **extra)
    return env


def start(command: list[str], env: dict[str, str], folder: Path, name: str) -> Logged:
    stdout, stderr = folder / f"{name}.out", folder / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "registry", *command], cwd=REPO, env=env,
                                stdout=out, stderr=err)
    return Logged(proc, stdout, stderr)


@contextmanager
def serve(database_url: str, data_dir: Path, **extra: str) -> Iterator[tuple[Server, Logged]]:
    """``serve`` on loopback until the block ends; then SIGTERM, and wait for it to end."""
    port, token = free_port(), "mrt_test_" + secrets.token_urlsafe(24)
    env = environment(database_url, data_dir, REGISTRY_BOOTSTRAP_TOKEN=token, **extra)
    logged = start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, data_dir, f"serve-{port}")
    server = Server(f"http://127.0.0.1:{port}", token, database_url, logged.process, logged.stderr)
    try:
        wait_ready(server)  # its log is the process's stderr
        yield server, logged
    finally:
        stop(logged.process)
