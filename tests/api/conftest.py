"""Fixtures of the API suite."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.helpers import api_client
from tests.support import Server


@pytest.fixture(scope="module")
def c(server: Server) -> Iterator[httpx.Client]:
    """An authenticated client of the module's server."""
    with api_client(server) as client:
        yield client
