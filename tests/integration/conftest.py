"""Fixtures of the integration suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import create_pg_database, drop_pg_database, sqlite_url


@pytest.fixture
async def url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database no migration has touched (for the migration tests)."""
    url = sqlite_url(tmp_path) if backend == "sqlite" else await create_pg_database()
    yield url
    if backend == "postgresql":
        await drop_pg_database(url)
