"""Fixtures shared by every suite.

``backend`` parametrises a test over SQLite and PostgreSQL. PostgreSQL comes from
``REGISTRY_TEST_DATABASE_URL`` (a role allowed to create databases); without it those tests fail.
At the end of a run, one line per backend says how many of its tests passed and failed; CI reads it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from registry.bootstrap import Container, build
from registry.config import Settings
from tests.support import (
    Server,
    drop_pg_database,
    migrated_pg_database,
    migrated_sqlite_url,
    server_for,
)

BACKENDS = ["sqlite", "postgresql"]


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for key in ("backend", "server_backend"):
            if key in callspec.params:
                return callspec.params[key]
    return "postgresql" if item.get_closest_marker("postgresql") else None


_outcomes: Counter[tuple[str, str]] = Counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    backend = _backend_of(item)
    if backend is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _outcomes[(backend, "skipped" if report.skipped else report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for backend in BACKENDS:
        terminalreporter.write_line(
            f"backend {backend}: {_outcomes[(backend, 'passed')]} passed, "
            f"{_outcomes[(backend, 'failed')]} failed, {_outcomes[(backend, 'skipped')]} skipped"
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="chaos suite (tests/reliability): the long form, minutes of load and more "
                          "faults, for the figures")


def pytest_configure(config: pytest.Config) -> None:
    """Without ``REGISTRY_TEST_DATABASE_URL``, make a throwaway database for this run on the
    local PostgreSQL (tests/provision.py), or stop with the commands that fix it."""
    import atexit
    import os

    from tests import provision
    from tests.support import PG_ENV

    if os.environ.get(PG_ENV) or hasattr(config, "workerinput"):
        return
    made = provision.provision()
    if isinstance(made, str):
        raise pytest.UsageError(f"{provision.FIX}\n(what failed: {made})")
    url, database = made
    os.environ[PG_ENV] = url  # server processes the tests start inherit it
    # Registered before any test registers its own clean-up, so it runs after all of them.
    atexit.register(provision.drop, database)
    config.stash[_provisioned] = database


_provisioned = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str | None:
    database = config.stash.get(_provisioned, None)
    return f"PostgreSQL: made the throwaway database {database} for this run" if database else None


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database at the latest revision for one test (a copy of one migrated database)."""
    url = migrated_sqlite_url(tmp_path) if backend == "sqlite" else await migrated_pg_database()
    yield url
    if backend == "postgresql":
        await drop_pg_database(url)


@pytest.fixture
async def container(database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    settings = Settings.from_env({"REGISTRY_DATABASE_URL": database_url,
                                  "REGISTRY_DATA_DIR": str(tmp_path), "REGISTRY_LOG_FORMAT": "json"})
    c = build(settings)
    yield c
    await c.close()


@pytest.fixture(scope="module", params=BACKENDS)
def server_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(server_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``python -m registry serve`` process on loopback, with its own database."""
    with server_for(server_backend, tmp_path_factory.mktemp(f"serve-{server_backend}")) as srv:
        yield srv
