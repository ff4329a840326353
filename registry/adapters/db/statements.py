"""Statements built once, executed by the fastest path each backend has.

A :class:`Query` wraps a SQLAlchemy Core statement whose every value is a ``bindparam``; it is
built at import, so no statement is constructed, coerced or cache-keyed per call (PERF.md: that
was most of a promotion's CPU). :class:`Db` runs queries on one unit of work's connection:

- PostgreSQL: the statement is compiled once to asyncpg's SQL and run on the connection's own
  asyncpg driver (asyncpg prepares it once per connection and caches it), inside whatever
  transaction that connection is in. Values pass through SQLAlchemy's own bind and result
  processors for the dialect, so rows hold exactly what the Core path would give.
- SQLite: the statement runs through SQLAlchemy, hitting its compiled cache.

Rows have attribute access on both backends (a named tuple per statement on PostgreSQL).
Driver errors leave as SQLAlchemy's exception types, so one translation serves both paths.
"""

from __future__ import annotations

import contextlib
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement as asyncpg runs it: positional SQL, its parameters' order and processors,
    and the row type with its columns' result processors."""

    sql: str
    names: tuple[str, ...]
    binds: tuple[Processor, ...]
    fixed: dict[str, Any]  # the values of literals in the statement (anonymous bind parameters)
    row: Any
    results: tuple[Processor, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        fixed = self.fixed
        values = [params[n] if n in params else fixed[n] for n in self.names]
        return [v if p is None else p(v) for v, p in zip(values, self.binds, strict=True)]

    def rows(self, records: Sequence[asyncpg.Record]) -> list[Any]:
        make, procs = self.row._make, self.results
        return [make([v if p is None else p(v) for v, p in zip(r, procs, strict=True)]) for r in records]


class Query:
    """One prebuilt statement; compiled for PostgreSQL on first use."""

    __slots__ = ("stmt", "_pg")

    def __init__(self, stmt: Executable) -> None:
        self.stmt = stmt
        self._pg: _Compiled | None = None

    def compiled(self, dialect: Dialect) -> _Compiled:
        if self._pg is None:
            self._pg = _compile(self.stmt, dialect)
        return self._pg


def _compile(stmt: Any, dialect: Dialect) -> _Compiled:
    columns = list(stmt.exported_columns)
    # An INSERT without RETURNING of its own gets none (SQLAlchemy adds one for the key).
    compiled = stmt.compile(dialect=dialect, for_executemany=not columns)
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("a prebuilt statement cannot hold an expanding IN; spell it with OR")
    names = tuple(compiled.positiontup or ())
    fixed = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
    binds = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
    keys = [getattr(c, "key", None) or c.name for c in columns]
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    row = namedtuple("Row", keys, rename=True) if keys else None  # type: ignore[misc]
    return _Compiled(compiled.string, names, binds, fixed, row, results)


class Db:
    """Runs :class:`Query` objects on one connection (and its asyncpg driver on PostgreSQL)."""

    __slots__ = ("conn", "driver", "_dialect")

    def __init__(self, conn: AsyncConnection, driver: asyncpg.Connection | None) -> None:
        self.conn = conn
        self.driver = driver
        self._dialect = conn.dialect

    async def all(self, q: Query, **params: Any) -> list[Any]:
        if self.driver is None:
            return list((await self.conn.execute(q.stmt, params)).all())
        c = q.compiled(self._dialect)
        try:  # not driver_errors(): a context manager per statement costs ~1 us on the hot path
            return c.rows(await self.driver.fetch(c.sql, *c.args(params)))
        except DRIVER_ERRORS as exc:
            raise _wrapped(exc, c.sql) from exc

    async def first(self, q: Query, **params: Any) -> Any | None:
        rows = await self.all(q, **params)
        return rows[0] if rows else None

    async def scalar(self, q: Query, **params: Any) -> Any:
        row = await self.first(q, **params)
        return row[0] if row is not None else None

    async def run(self, q: Query, **params: Any) -> int:
        """Execute a statement that returns no rows; its row count."""
        if self.driver is None:
            return (await self.conn.execute(q.stmt, params)).rowcount
        c = q.compiled(self._dialect)
        try:
            status = await self.driver.execute(c.sql, *c.args(params))
        except DRIVER_ERRORS as exc:
            raise _wrapped(exc, c.sql) from exc
        tail = status.rpartition(" ")[2]
        return int(tail) if tail.isdigit() else 0

    async def run_many(self, q: Query, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute a statement once per parameter set, pipelined in one round trip."""
        if not rows:
            return
        if self.driver is None:
            await self.conn.execute(q.stmt, list(rows))
            return
        c = q.compiled(self._dialect)
        try:
            await self.driver.executemany(c.sql, [c.args(r) for r in rows])
        except DRIVER_ERRORS as exc:
            raise _wrapped(exc, c.sql) from exc

    async def execute_sql(self, sql: str, args: Sequence[Any]) -> None:
        """Execute hand-written SQL on the driver (PostgreSQL only)."""
        assert self.driver is not None
        with driver_errors(sql):
            await self.driver.execute(sql, *args)


DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@contextlib.contextmanager
def driver_errors(sql: str) -> Iterator[None]:
    """Raise the driver's errors as the SQLAlchemy exceptions the Core path would have raised."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise _wrapped(exc, sql) from exc


def _wrapped(exc: BaseException, sql: str) -> DBAPIError:
    """An asyncpg error as the SQLAlchemy exception the Core path would have raised."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(sql, None, exc)  # type: ignore[arg-type]
    if isinstance(exc, asyncpg.QueryCanceledError):  # a statement timeout: the connection lives
        return OperationalError(sql, None, exc)  # type: ignore[arg-type]
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.PostgresConnectionError):
        return DBAPIError(sql, None, exc)  # type: ignore[arg-type]
    return OperationalError(sql, None, exc, connection_invalidated=True)  # type: ignore[arg-type]


def bound(table: Any, *names: str) -> dict[str, Any]:
    """``{column: bindparam(column)}`` for an INSERT's or UPDATE's values, typed by the column."""
    return {n: bindparam(n, type_=table.c[n].type) for n in names}
