"""Every wait on the database is bounded by a setting, and each way a wait can end without an
answer is a 503 the client may retry, never a 500."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from registry.adapters.db.engine import Timeouts, _asyncpg_args
from registry.adapters.db.unit_of_work import connection_lost, translate_db_error
from registry.config import ConfigError, DatabaseTimeouts, Settings
from registry.domain.errors import UnavailableError


def test_timeouts_have_documented_defaults_and_can_be_set() -> None:
    assert Settings.from_env({}).db_timeouts == DatabaseTimeouts(connect=5, pool=5, command=10, statement=8)
    got = Settings.from_env({"REGISTRY_DB_CONNECT_TIMEOUT": "1", "REGISTRY_DB_POOL_TIMEOUT": "2",
                             "REGISTRY_DB_COMMAND_TIMEOUT": "3", "REGISTRY_DB_STATEMENT_TIMEOUT": "2.5"})
    assert got.db_timeouts == DatabaseTimeouts(connect=1, pool=2, command=3, statement=2.5)


@pytest.mark.parametrize("env", [{"REGISTRY_DB_STATEMENT_TIMEOUT": "10"},
                                 {"REGISTRY_DB_COMMAND_TIMEOUT": "0"},
                                 {"REGISTRY_DB_POOL_TIMEOUT": "soon"}])
def test_unusable_timeouts_are_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_the_driver_is_given_every_timeout() -> None:
    args = _asyncpg_args(Timeouts(connect=1.5, pool=2, command=3, statement=2.5))
    assert args == {"timeout": 1.5, "command_timeout": 3,
                    "server_settings": {"statement_timeout": "2500"}}


def _pg_error(cls: type[asyncpg.PostgresError]) -> DBAPIError:
    return DBAPIError("SELECT 1", None, cls(""))  # type: ignore[arg-type]


@pytest.mark.parametrize("exc", [
    PoolTimeoutError("QueuePool limit of size 20 overflow 0 reached"),
    TimeoutError(),
    OperationalError("SELECT 1", None, TimeoutError(), connection_invalidated=True),  # type: ignore[arg-type]
    _pg_error(asyncpg.TooManyConnectionsError),
    _pg_error(asyncpg.QueryCanceledError),  # statement_timeout
    _pg_error(asyncpg.CannotConnectNowError),
])
def test_a_wait_without_an_answer_is_unavailable(exc: Exception) -> None:
    assert isinstance(translate_db_error(exc), UnavailableError)


def test_only_a_connection_that_failed_or_timed_out_is_dropped() -> None:
    assert connection_lost(TimeoutError())
    assert connection_lost(OperationalError("x", None, OSError(), connection_invalidated=True))  # type: ignore[arg-type]
    assert not connection_lost(_pg_error(asyncpg.QueryCanceledError))  # the server ended it: usable
    assert not connection_lost(ValueError())
