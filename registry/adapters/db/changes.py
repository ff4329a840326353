"""Writing a unit of work's audit entries, outbox events and chain heads at commit.

PostgreSQL: one statement. Two data-modifying CTEs insert every audit row and every event from
arrays (``unnest``), and the main UPDATE advances the chain heads: one round trip where three
were (PERF.md: each statement costs CPU on both sides of the connection, and at load both cores
are busy). The outbox has no trigger since migration 0006: the wake-up is sent after COMMIT
(see bell.py).
SQLite: the same rows through three prebuilt statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, Table, bindparam, insert, update
from sqlalchemy.dialects import postgresql

from registry.adapters.db.statements import Db, Query, bound
from registry.adapters.db.tables import audit_t, chains_t, outbox_t

AUDIT_COLUMNS = ("chain", "seq", "at", "actor", "request_id", "action", "model", "version",
                 "canonical", "prev_hash", "hash")
EVENT_COLUMNS = ("event_id", "chain", "sequence", "type", "model", "version", "actor", "request_id",
                 "at", "data", "target", "traceparent")
HEAD_COLUMNS = ("audit_seq", "audit_hash", "event_seq")

_INSERT_AUDIT = Query(insert(audit_t).values(bound(audit_t, *AUDIT_COLUMNS)))
_INSERT_EVENT = Query(insert(outbox_t).values(bound(outbox_t, *EVENT_COLUMNS)))
_ADVANCE_CHAIN = Query(update(chains_t).where(chains_t.c.id == bindparam("chain_id"))
                       .values(bound(chains_t, *HEAD_COLUMNS)))

_PG = postgresql.asyncpg.dialect()


class _Arrays:
    """Positional array parameters (``$n::TYPE[]``) for the columns of a table, in order."""

    def __init__(self) -> None:
        self.casts: list[str] = []
        self.columns: list[tuple[str, Any]] = []  # (name, bind processor)

    def add(self, table: Table, names: Sequence[str]) -> str:
        first = len(self.casts) + 1
        for name in names:
            column_type = table.c[name].type
            # Strings unbounded: a cast to VARCHAR(n) would truncate a longer value silently,
            # where the column itself refuses it.
            cast = "VARCHAR" if isinstance(column_type, String) else column_type.compile(dialect=_PG)
            self.casts.append(cast)
            self.columns.append((name, column_type.dialect_impl(_PG).bind_processor(_PG)))
        return ", ".join(f"${first + i}::{self.casts[first - 1 + i]}[]" for i in range(len(names)))


def _statement(with_events: bool) -> tuple[str, list[tuple[str, Any]], int, int]:
    arrays = _Arrays()
    sql = (f"WITH audit AS (INSERT INTO {audit_t.name} ({', '.join(AUDIT_COLUMNS)}) "
           f"SELECT * FROM unnest({arrays.add(audit_t, AUDIT_COLUMNS)}))")
    audit_end = len(arrays.columns)
    if with_events:
        sql += (f", events AS (INSERT INTO {outbox_t.name} ({', '.join(EVENT_COLUMNS)}) "
                f"SELECT * FROM unnest({arrays.add(outbox_t, EVENT_COLUMNS)}))")
    events_end = len(arrays.columns)
    heads = arrays.add(chains_t, ("id", *HEAD_COLUMNS))
    sql += (f" UPDATE {chains_t.name} AS c SET "
            + ", ".join(f"{n} = h.{n}" for n in HEAD_COLUMNS)
            + f" FROM unnest({heads}) AS h(id, {', '.join(HEAD_COLUMNS)}) WHERE c.id = h.id")
    return sql, arrays.columns, audit_end, events_end


_WITH_EVENTS = _statement(with_events=True)
_AUDIT_ONLY = _statement(with_events=False)


async def write_changes(db: Db, audit_rows: list[dict[str, Any]], event_rows: list[dict[str, Any]],
                        heads: list[dict[str, Any]]) -> None:
    """Insert the audit rows and events, and set each chain head (``id`` and its new
    ``audit_seq``, ``audit_hash``, ``event_seq``)."""
    if db.driver is None:
        await db.run_many(_INSERT_AUDIT, audit_rows)
        await db.run_many(_INSERT_EVENT, event_rows)
        await db.run_many(_ADVANCE_CHAIN, [{"chain_id": h["id"], **{n: h[n] for n in HEAD_COLUMNS}}
                                           for h in heads])
        return
    sql, columns, audit_end, events_end = _WITH_EVENTS if event_rows else _AUDIT_ONLY
    args = []
    for i, (name, process) in enumerate(columns):
        rows = audit_rows if i < audit_end else event_rows if i < events_end else heads
        args.append([r[name] if process is None else process(r[name]) for r in rows])
    await db.execute_sql(sql, args)
