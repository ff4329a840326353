"""The chaos suite's form: ``--long`` (registered in tests/conftest.py) runs the long one
(minutes, more faults)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def long_form(request: pytest.FixtureRequest) -> bool:
    """``--long``, or REGISTRY_CHAOS_LONG=1 where the option cannot be given."""
    return bool(request.config.getoption("--long", default=False)) or os.environ.get(
        "REGISTRY_CHAOS_LONG", "") == "1"
