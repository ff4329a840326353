"""The unit of work: the one place that commits.

``commit`` turns the changes the services recorded into hash-chained audit entries and outbox
events, writes them beside the state change, advances the chain heads and commits, all in one
transaction. Leaving the block without ``commit`` rolls back. Database failures leave here as
domain errors: a constraint violation is a 409, an unreachable database a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from registry import metrics, tracing
from registry.adapters.db.bell import OutboxBell
from registry.adapters.db.changes import write_changes
from registry.adapters.db.idempotency import IdempotentCall
from registry.adapters.db.repository import SqlRepository
from registry.adapters.db.transaction import Transaction
from registry.domain.errors import (
    GateFailedError,
    RegistryError,
    TransientConflictError,
    UnavailableError,
    ValidationError,
)
from registry.domain.events import Change, SystemChange
from registry.domain.gates import Policy
from registry.domain.model import RegisteredModel
from registry.domain.stages import Stage
from registry.services.audit import SYSTEM_CHAIN, canonical, chain_hash, model_chain, rfc3339
from registry.services.idempotency import StoredResponse
from registry.services.ports import Actor

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


async def _count(changes: list[Change]) -> None:
    metrics.changes_committed(changes)  # after the commit: a rolled-back move never counts


class SqlUnitOfWork:
    def __init__(self, engine: AsyncEngine, read_engine: AsyncEngine, actor: Actor, *, write: bool,
                 clock: Clock = utcnow, write_lock: asyncio.Lock | None = None,
                 on_events: Callable[[], None] | None = None,
                 default_policies: Mapping[Stage, Policy] | None = None) -> None:
        self.actor = actor
        self.default_policies: Mapping[Stage, Policy] = default_policies or {}
        self._on_events = on_events
        # PostgreSQL writers too take the autocommit view: their transaction is the driver's
        # (see transaction.py); SQLite writers keep SQLAlchemy's, begun IMMEDIATE.
        self._engine = engine if write and engine.dialect.name == "sqlite" else read_engine
        self._write = write
        self._clock = clock
        self._write_lock = write_lock if write else None
        self._tx: Transaction | None = None
        self._now: datetime | None = None
        self._pending: dict[str, list[Change | SystemChange]] = defaultdict(list)
        self._after_commit: list[Callable[[], Awaitable[None]]] = []
        self._committed = False
        self.repo: SqlRepository

    async def __aenter__(self) -> SqlUnitOfWork:
        if self._write_lock is not None:
            await self._write_lock.acquire()
        try:
            self._tx = await Transaction.open(self._engine, write=self._write)
            await self._opened(self._tx)
        except BaseException as exc:
            await self._release(broken=connection_lost(exc))
            translated = translate_db_error(exc) if isinstance(exc, Exception) else None
            if isinstance(translated, UnavailableError):
                raise translated from exc
            if isinstance(exc, DBAPIError):
                raise UnavailableError("the database is unreachable") from exc
            raise
        self.repo = SqlRepository(self._tx.db)
        return self

    async def _opened(self, tx: Transaction) -> None:
        """The first statements of the transaction, before any use case's (none here)."""

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        translated = None
        if exc is not None and not isinstance(exc, RegistryError):
            translated = translate_db_error(exc)
        refusal = exc if isinstance(exc, RegistryError) else translated
        if isinstance(exc, GateFailedError):
            metrics.gates_refused(exc.failed)
        if not await self._keep_open(exc, refusal):
            await self._release(broken=exc is not None and connection_lost(exc))
        if translated is not None:
            raise translated from exc
        if self._committed:
            await self._settle()

    async def _keep_open(self, exc: BaseException | None, refusal: RegistryError | None) -> bool:
        """Whether the transaction outlives the block (never, here)."""
        return False

    def after_commit(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` once this unit's changes are durably committed (after the lock is
        released), never otherwise; with an Idempotency-Key that is when the answer is stored."""
        self._after_commit.append(fn)

    async def _settle(self) -> None:
        hooks, self._after_commit = self._after_commit, []
        for fn in hooks:
            await fn()

    async def _release(self, *, broken: bool = False) -> None:
        try:
            if self._tx is not None:
                await self._tx.close(broken=broken)  # rolls back whatever did not commit
        finally:
            self._tx = None
            if self._write_lock is not None:
                self._write_lock.release()
                self._write_lock = None

    def now(self) -> datetime:
        """One timestamp per unit of work, taken at first use (after the chain lock)."""
        if self._now is None:
            self._now = self._clock()
        return self._now

    def record(self, model: RegisteredModel | int, change: Change) -> None:
        model_id = model if isinstance(model, int) else model.id
        self._pending[model_chain(model_id)].append(change)

    def record_system(self, change: SystemChange) -> None:
        self._pending[SYSTEM_CHAIN].append(change)

    def next_sequence(self, model: RegisteredModel) -> int:
        chain = model_chain(model.id)
        return self.repo.heads[chain].event_seq + len(self._pending.get(chain, ())) + 1

    async def commit(self) -> None:
        assert self._tx is not None, "commit outside the unit of work"
        at = self.now()
        at_text = rfc3339(at)
        audit_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        heads = []
        traceparent = tracing.current_traceparent()  # the deliveries continue the request's trace
        for chain, changes in self._pending.items():
            head = self.repo.heads.get(chain) or await self.repo.lock_chain(chain)
            for change in changes:
                head.audit_seq += 1
                action = change.action if isinstance(change, SystemChange) else change.type
                model = None if isinstance(change, SystemChange) else change.model
                version = None if isinstance(change, SystemChange) else change.version
                entry = {
                    "seq": head.audit_seq, "chain": chain, "at": at_text, "actor": self.actor.name,
                    "request_id": self.actor.request_id, "action": action, "model": model,
                    "version": version, "before": change.before, "after": change.after,
                    "prev_hash": head.audit_hash,
                }
                text = canonical(entry)
                digest = chain_hash(head.audit_hash, text)
                audit_rows.append({
                    "chain": chain, "seq": head.audit_seq, "at": at, "actor": self.actor.name,
                    "request_id": self.actor.request_id, "action": action, "model": model,
                    "version": version, "canonical": text, "prev_hash": head.audit_hash,
                    "hash": digest,
                })
                head.audit_hash = digest
                if isinstance(change, Change):
                    head.event_seq += 1
                    event_rows.append({
                        "event_id": str(uuid.uuid4()), "chain": chain, "sequence": head.event_seq,
                        "type": change.type, "model": change.model, "version": change.version,
                        "actor": self.actor.name, "request_id": self.actor.request_id, "at": at,
                        "data": change.event_data(), "target": None, "traceparent": traceparent,
                    })
                elif change.event is not None:
                    head.event_seq += 1
                    event_rows.append({
                        "event_id": str(uuid.uuid4()), "chain": chain, "sequence": head.event_seq,
                        "type": change.action, "model": None, "version": None,
                        "actor": self.actor.name, "request_id": self.actor.request_id, "at": at,
                        "data": change.event, "target": change.target, "traceparent": traceparent,
                    })
            heads.append(head)
        await write_changes(self._tx.db, audit_rows, event_rows, [
            {"id": h.chain, "audit_seq": h.audit_seq, "audit_hash": h.audit_hash, "event_seq": h.event_seq}
            for h in heads])
        committed = [c for changes in self._pending.values() for c in changes if isinstance(c, Change)]
        self._pending.clear()
        await self._end(wrote_events=bool(event_rows))
        if committed:
            self.after_commit(functools.partial(_count, committed))

    async def _end(self, *, wrote_events: bool) -> None:
        """COMMIT, and ring the in-process relay's doorbell if events were written."""
        assert self._tx is not None
        await self._tx.commit()
        self._committed = True
        if wrote_events and self._on_events is not None:
            self._on_events()


class Held(enum.Enum):
    """What an idempotent writer's open transaction awaits its answer with."""

    EFFECT = "effect"  # the change, released from its savepoint: committed with the answer
    REFUSAL = "refusal"  # rolled back to the savepoint: only the answer is stored


class IdempotentUnitOfWork(SqlUnitOfWork):
    """The first writer of a POST that carries an Idempotency-Key.

    In its transaction it claims the key (an advisory lock on PostgreSQL, and a stored answer to
    replay if there is one; see ``idempotency.py``), then works inside a savepoint. Its commit
    stops short of COMMIT: the transaction stays open (``call.held``) until the API layer hands
    over the rendered answer to :meth:`finish`, which stores it beside the effect and commits
    both. A refusal worth replaying rolls back to the savepoint and is held the same way, to
    store the answer alone. So a client never sees a success that did not commit."""

    def __init__(self, *args: Any, call: IdempotentCall, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._call = call
        self._held: Held | None = None
        self._wrote_events = False

    async def _opened(self, tx: Transaction) -> None:
        await self._call.claim(tx.conn, self._clock())
        await tx.savepoint()

    async def _end(self, *, wrote_events: bool) -> None:
        assert self._tx is not None
        await self._tx.release_savepoint()  # COMMIT waits for the answer
        self._held, self._wrote_events = Held.EFFECT, wrote_events

    async def _keep_open(self, exc: BaseException | None, refusal: RegistryError | None) -> bool:
        if exc is not None:
            if refusal is None or not refusal.replayable or self._tx is None or not self._tx.in_savepoint:
                return False
            try:
                await self._tx.rollback_savepoint()
            except (DBAPIError, OSError):
                return False
            self._held = Held.REFUSAL
        if self._held is None:
            return False
        self._call.held = self
        return True

    async def _release(self, *, broken: bool = False) -> None:
        try:
            await super()._release(broken=broken)
        finally:
            self._call.joined = self._held is not None  # a later writer of the request may join

    @property
    def holds_effect(self) -> bool:
        """Whether the held transaction carries an effect (not only a refusal)."""
        return self._held is Held.EFFECT

    async def finish(self, answer: StoredResponse | None) -> bool:
        """End the held transaction: store ``answer`` and commit (the effect too, if there was
        one), or roll everything back when ``answer`` is None. True if it committed."""
        assert self._held is not None and self._tx is not None
        held, committed, broken = self._held, False, False
        try:
            if answer is not None:
                await self._call.store(self._tx.conn, answer, self.now())
                await self._tx.commit()
                committed = True
        except (DBAPIError, OSError) as exc:
            committed, broken = False, connection_lost(exc)
        finally:
            self._held = self._call.held = None
            await self._release(broken=broken)
        if committed and held is Held.EFFECT:  # a stored refusal carries no effect
            if self._wrote_events and self._on_events is not None:
                self._on_events()
            await self._settle()
        return committed


# SQLSTATE classes that say the database cannot serve now, not that the request is wrong:
# 08 connection exception, 53 insufficient resources (too many connections), 57 operator
# intervention (57014: statement_timeout; 57P01..03: shutting down, cannot connect now).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57")


def connection_lost(exc: BaseException) -> bool:
    """Whether the connection can no longer be trusted with a statement: its socket failed, or a
    wait on it timed out with a statement still in flight (a ROLLBACK would wait as long again)."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, OSError)
    return isinstance(exc, OSError)  # ConnectionError and TimeoutError included


def database_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked": another connection holds the write lock (it passes)."""
    return isinstance(exc, OperationalError) and "locked" in str(exc)


def translate_db_error(exc: BaseException) -> RegistryError | None:
    """A database failure as the domain error a client can act on; None if it is a bug."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    if isinstance(exc, DBAPIError) and sqlstate == "22021":
        # Backstop: PostgreSQL text cannot hold U+0000 (character_not_in_repertoire).
        return ValidationError("text must not contain the NUL character (U+0000)")
    if isinstance(exc, PoolTimeoutError):
        return UnavailableError("no database connection became free in time; retry")
    if isinstance(exc, TimeoutError) or (isinstance(exc, DBAPIError) and isinstance(exc.orig, TimeoutError)):
        return UnavailableError("the database did not answer in time; retry")
    if isinstance(exc, DBAPIError) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
        return UnavailableError("the database cannot serve the request now; retry")
    if isinstance(exc, IntegrityError):
        return TransientConflictError(
            "the change conflicts with the current state of the registry; retry")
    if isinstance(exc, (OperationalError, InterfaceError, OSError, ConnectionError)):
        if database_busy(exc):
            return UnavailableError("the database is busy; retry")
        return UnavailableError("the database is unreachable")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return UnavailableError("the database connection was lost")
    return None


class SqlUnitOfWorkFactory:
    """Makes units of work; on SQLite (one process) writers also queue on an asyncio lock, so
    they wait in the event loop instead of spinning on SQLite's busy timeout."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utcnow,
                 default_policies: Mapping[Stage, Policy] | None = None) -> None:
        self.engine = engine
        self.default_policies: Mapping[Stage, Policy] = default_policies or {}
        self.read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._clock = clock
        self._sqlite = engine.dialect.name == "sqlite"
        self._lock: asyncio.Lock | None = None
        # Called after a commit that wrote outbox events (the in-process relay's doorbell).
        self.on_events: Callable[[], None] | None = None
        # Without a relay in this process, other processes' relays are told (PostgreSQL).
        self.bell = None if self._sqlite else OutboxBell(self.read_engine)

    def _events_committed(self) -> None:
        if self.on_events is not None:
            self.on_events()  # this process relays them (and every other event it finds)
        elif self.bell is not None:
            self.bell.ring()

    def writer_lock(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The in-process writers' queue (SQLite), for writers that are not units of work."""
        if not self._sqlite:
            return contextlib.nullcontext()
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def __call__(self, actor: Actor, *, write: bool = True,
                 idempotency: IdempotentCall | None = None) -> SqlUnitOfWork:
        """A unit of work; the first writer of a request with an Idempotency-Key joins it."""
        if self._sqlite and write and self._lock is None:
            self._lock = asyncio.Lock()
        args = (self.engine, self.read_engine, actor)
        kwargs: dict[str, Any] = {"write": write, "clock": self._clock, "write_lock": self._lock,
                                  "on_events": self._events_committed,
                                  "default_policies": self.default_policies}
        if write and idempotency is not None and not idempotency.joined:
            idempotency.joined = True
            return IdempotentUnitOfWork(*args, call=idempotency, **kwargs)
        return SqlUnitOfWork(*args, **kwargs)
