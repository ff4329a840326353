"""Fixtures of the MLflow suite: one real ``python -m registry serve`` per backend for the whole
session (SQLite with its one HTTP worker, PostgreSQL with two), a token per role on each, and the
real MLflow clients' interpreters from their cached venvs (``tests/mlflow/env.py``).

Tests take ``backend`` (and ``client``) by direct parametrisation, so conftest's per-backend
counters count them; ``mlflow_server(backend)`` starts a backend's server on first use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.mlflow.env import CLIENT_2, CLIENT_3, python_of
from tests.mlflow.helpers import Registry
from tests.support import server_for

CLIENTS = {"3": CLIENT_3, "2": CLIENT_2}
ROLES = ("viewer", "editor", "stager", "releaser")
# PostgreSQL's 100 connections are shared with every other test process on the machine: each of
# the two HTTP workers gets a pool of 12 (the 32 concurrent transitions queue on the model's row
# lock anyway, so more connections would only wait there).
PG_ENV = {"REGISTRY_DB_POOL_SIZE": "12"}
# The servers run far from UTC, so a timestamp read or written as local time anywhere is hours off
# in what the clients see (the scripts check their timestamps against the clock).
SERVER_ENV = {"TZ": "Pacific/Auckland"}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Registry]]:
    """``mlflow_server(backend)``: the session's server on that backend, started on first use,
    with a token per role (each its own principal, named after the role)."""
    started: dict[str, Registry] = {}
    with ExitStack() as stack:
        def get(backend: str) -> Registry:
            if backend not in started:
                data = tmp_path_factory.mktemp(f"mlflow-{backend}")
                srv = stack.enter_context(server_for(
                    backend, data, workers=1 if backend == "sqlite" else 2,
                    extra_env={**SERVER_ENV, **(PG_ENV if backend == "postgresql" else {})}))
                registry = Registry(srv, backend)
                stack.callback(registry.close)
                with registry.http() as c:
                    for role in ROLES:
                        r = c.post("/tokens", json={"name": f"mlflow-{role}", "role": role})
                        assert r.status_code == 201, r.text
                        registry.tokens[role] = r.json()["token"]
                started[backend] = registry
            return started[backend]

        yield get


@pytest.fixture(scope="session")
def mlflow_python() -> Callable[[str], Path]:
    """``mlflow_python("3")``: the interpreter of that client's venv (built on first use)."""
    made: dict[str, Path] = {}

    def get(client: str) -> Path:
        if client not in made:
            made[client] = python_of(CLIENTS[client])
        return made[client]

    return get


