"""The workers' side of the outbox: relay events into deliveries, claim due deliveries under a
lease, record each attempt, prune what is old.

Relay: outbox rows not yet relayed are claimed with ``FOR UPDATE SKIP LOCKED`` (so any number of
relays share the work on PostgreSQL); each becomes one delivery per matching active subscription
and, for registrations and stage changes, one OpenLineage event plus one delivery per sink.
Claim: due deliveries are leased in a short transaction (``SKIP LOCKED`` again) and sent after it
commits; no row lock is held across an HTTP call. An ordered delivery waits while an earlier one
of its target and chain is pending, unless that one has been failing for longer than the hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, delete, exists, func, insert, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.bell import OUTBOX_CHANNEL
from registry.adapters.db.engine import connect_driver
from registry.adapters.db.idempotency import prune_keys
from registry.adapters.db.repository import event_of
from registry.adapters.db.statements import Db, Query, bound
from registry.adapters.db.tables import (
    attempts_t,
    deliveries_t,
    lineage_t,
    outbox_t,
    subscriptions_t,
)
from registry.adapters.db.transaction import Transaction
from registry.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from registry.adapters.lineage import LineageBuilder, is_lineage_event
from registry.services.audit import rfc3339
from registry.services.webhooks import matches, target_of

log = structlog.get_logger("registry.outbox")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Job:
    """One leased delivery, with everything needed to send it."""

    delivery_id: int
    lease_token: str
    target: str
    subscription_id: int | None
    attempt: int  # this attempt's number (1-based, over the delivery's life)
    round_attempt: int  # its position in the retry schedule
    event: dict[str, Any]  # id, type, model, version, sequence, actor, request_id, at, data
    url: str | None = None
    secret: str | None = None  # encrypted
    previous_secret: str | None = None  # encrypted; only while it still signs
    lineage: dict[str, Any] | None = None
    traceparent: str | None = None  # of the request that wrote the event; not in the event


@dataclass(frozen=True, slots=True)
class Finished:
    state: str  # pending (retry), delivered, failed
    applied: bool  # False when the lease had passed to another worker
    disable: str | None = None  # a reason, when the subscription must be disabled


_EVENT_COLS = (outbox_t.c.id, outbox_t.c.event_id, outbox_t.c.chain, outbox_t.c.type,
               outbox_t.c.model, outbox_t.c.version, outbox_t.c.sequence, outbox_t.c.actor,
               outbox_t.c.request_id, outbox_t.c.at, outbox_t.c.data, outbox_t.c.target,
               outbox_t.c.traceparent)


_UNRELAYED = Query(select(*_EVENT_COLS).where(outbox_t.c.relayed_at.is_(None))
                   .order_by(outbox_t.c.id).limit(bindparam("limit"))
                   .with_for_update(skip_locked=True))
_ACTIVE_SUBSCRIPTIONS = Query(
    select(subscriptions_t.c.id, subscriptions_t.c.event_types, subscriptions_t.c.models)
    .where(subscriptions_t.c.status == "active"))
_INSERT_LINEAGE = Query(insert(lineage_t).values(bound(
    lineage_t, "event_id", "chain", "model", "version", "at", "payload")))
_INSERT_DELIVERY = Query(insert(deliveries_t).values(bound(
    deliveries_t, "outbox_id", "target", "subscription_id", "chain", "sequence", "ordered", "state",
    "attempts", "round_attempts", "next_attempt_at", "created_at")))
_MARK_RELAYED = Query(update(outbox_t).where(outbox_t.c.id == bindparam("event"))
                      .values(bound(outbox_t, "relayed_at")))


class OutboxStore:
    def __init__(self, uow: SqlUnitOfWorkFactory, *, sinks: Sequence[str] = (),
                 lineage: LineageBuilder | None = None, clock: Callable[[], datetime] = utcnow,
                 first_delay: float = 0.0) -> None:
        self._uow = uow
        self._first_delay = timedelta(seconds=first_delay)  # the retry schedule's first entry
        self._engine = uow.engine
        self.sinks = tuple(sinks)
        self._lineage = lineage
        self._clock = clock
        self._sqlite = self._engine.dialect.name == "sqlite"

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._uow.writer_lock(), self._engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _fast_transaction(self) -> AsyncIterator[Db]:
        """A transaction whose prebuilt statements run on the driver (see transaction.py): the
        relay runs beside the request path on every serve process."""
        engine = self._engine if self._sqlite else self._uow.read_engine
        async with self._uow.writer_lock():
            tx = await Transaction.open(engine, write=True)
            try:
                yield tx.db
                await tx.commit()
            finally:
                await tx.close()

    async def relay(self, limit: int = 200) -> tuple[int, int]:
        """Turn up to ``limit`` unrelayed events into deliveries; returns how many events were
        relayed and how many deliveries they made."""
        async with self._fast_transaction() as db:
            rows = await db.all(_UNRELAYED, limit=limit)
            if not rows:
                return 0, 0
            now = self._clock()
            due = now + self._first_delay
            subs = await db.all(_ACTIVE_SUBSCRIPTIONS)
            deliveries: list[dict[str, Any]] = []
            lineage_rows: list[dict[str, Any]] = []
            for row in rows:
                event = event_of(row)
                targets = [s for s in subs if (s.id == row.target if row.target is not None
                                                else matches(s, row.type, row.model))]
                for sub in targets:
                    deliveries.append(self._delivery(row, target_of(sub.id), sub.id, now, due,
                                                     ordered=row.target is None))
                if self._lineage is not None and row.model is not None and is_lineage_event(event):
                    payload = self._build_lineage(event, row.traceparent)
                    if payload is not None:
                        lineage_rows.append({"event_id": row.event_id, "chain": row.chain,
                                             "model": row.model, "version": row.version,
                                             "at": row.at, "payload": payload})
                        deliveries += [self._delivery(row, sink, None, now, due) for sink in self.sinks]
            await db.run_many(_INSERT_LINEAGE, lineage_rows)
            await db.run_many(_INSERT_DELIVERY, deliveries)
            await db.run_many(_MARK_RELAYED, [{"event": r.id, "relayed_at": now} for r in rows])
        return len(rows), len(deliveries)

    def _build_lineage(self, event: dict[str, Any], traceparent: str | None) -> dict[str, Any] | None:
        """One event that cannot be built must not stop the relay for every other one."""
        assert self._lineage is not None
        try:
            return self._lineage.build(event, traceparent)
        except Exception:
            log.exception("lineage_build_failed", event_id=event["id"], event_type=event["type"])
            return None

    @staticmethod
    def _delivery(row: Any, target: str, sub_id: int | None, now: datetime, due: datetime,
                  ordered: bool = True) -> dict[str, Any]:
        """A ping (addressed to one subscription) is unordered: nothing holds it back."""
        return {"outbox_id": row.id, "target": target, "subscription_id": sub_id,
                "chain": row.chain, "sequence": row.sequence, "ordered": ordered, "state": "pending",
                "attempts": 0, "round_attempts": 0, "next_attempt_at": due, "created_at": now}

    async def claim(self, limit: int, lease: float, hold: float) -> list[Job]:
        """Lease up to ``limit`` due deliveries whose turn it is."""
        d, e = deliveries_t, deliveries_t.alias("earlier")
        async with self._transaction() as conn:
            now = self._clock()
            earlier = exists().where(
                e.c.target == d.c.target, e.c.chain == d.c.chain, e.c.sequence < d.c.sequence,
                e.c.state == "pending", e.c.ordered,
                or_(e.c.first_failed_at.is_(None), e.c.first_failed_at > now - timedelta(seconds=hold)))
            # An earlier event of the chain that another relay is still relaying has no delivery
            # yet; it holds the later ones back too.
            unrelayed = exists().where(outbox_t.c.chain == d.c.chain,
                                       outbox_t.c.sequence < d.c.sequence,
                                       outbox_t.c.relayed_at.is_(None))
            # NOT EXISTS rather than "IS NULL OR IN (...)": SQLite turns that OR into a scan of
            # every delivery through ix_deliveries_subscription_id instead of ix_deliveries_due.
            inactive = exists().where(subscriptions_t.c.id == d.c.subscription_id,
                                      subscriptions_t.c.status != "active")
            stmt = (select(d.c.id).where(
                d.c.state == "pending", d.c.next_attempt_at <= now,
                or_(d.c.lease_until.is_(None), d.c.lease_until < now),
                not_(inactive),
                or_(not_(d.c.ordered), and_(not_(earlier), not_(unrelayed))))
                .order_by(d.c.next_attempt_at, d.c.id).limit(limit)
                .with_for_update(skip_locked=True, of=d))
            ids = [r.id for r in await conn.execute(stmt)]
            if not ids:
                return []
            token = str(uuid.uuid4())
            await conn.execute(update(d).where(d.c.id.in_(ids)).values(
                lease_until=now + timedelta(seconds=lease), lease_token=token,
                attempts=d.c.attempts + 1, round_attempts=d.c.round_attempts + 1))
            s = subscriptions_t
            stmt = (select(d.c.id.label("delivery_id"), d.c.target, d.c.subscription_id, d.c.attempts,
                           d.c.round_attempts, *[c for c in _EVENT_COLS if c.name != "id"],
                           s.c.url, s.c.secret, s.c.previous_secret, s.c.previous_secret_until,
                           lineage_t.c.payload.label("lineage"))
                    .join(outbox_t, outbox_t.c.id == d.c.outbox_id)
                    .outerjoin(s, s.c.id == d.c.subscription_id)
                    .outerjoin(lineage_t, and_(lineage_t.c.event_id == outbox_t.c.event_id,
                                               d.c.subscription_id.is_(None)))
                    .where(d.c.id.in_(ids)).order_by(d.c.next_attempt_at, d.c.id))
            jobs = []
            for r in await conn.execute(stmt):
                previous = r.previous_secret
                if previous is not None and (r.previous_secret_until is None
                                             or r.previous_secret_until <= now):
                    previous = None
                jobs.append(Job(r.delivery_id, token, r.target, r.subscription_id, r.attempts,
                                r.round_attempts, event_of(r), r.url, r.secret, previous, r.lineage,
                                r.traceparent))
        return jobs

    async def finish(self, job: Job, *, ok: bool, status: int | None, latency_ms: float,
                     error: str | None, retry_after: float | None, schedule: Sequence[float],
                     disable_after: float | None) -> Finished:
        """Record the attempt and move the delivery on: delivered, retried later, or failed."""
        d = deliveries_t
        async with self._transaction() as conn:
            now = self._clock()
            disable = None
            if ok:
                state, values = "delivered", {"finished_at": now}
            elif status == 410:
                state, values = "failed", {"finished_at": now}
                disable = "the endpoint answered 410 Gone"
            elif job.round_attempt >= len(schedule):
                state, values = "failed", {"finished_at": now}
            else:
                delay = retry_after if retry_after is not None else schedule[job.round_attempt]
                state, values = "pending", {"next_attempt_at": now + timedelta(seconds=delay)}
            values.update(state=state, lease_until=None, lease_token=None, last_status=status,
                          last_error=error)
            if not ok:
                values["first_failed_at"] = func.coalesce(d.c.first_failed_at, now)
            result = await conn.execute(update(d).where(d.c.id == job.delivery_id,
                                                        d.c.lease_token == job.lease_token)
                                        .values(**values))
            if not result.rowcount and (await conn.execute(
                    select(d.c.id).where(d.c.id == job.delivery_id))).first() is None:
                return Finished(state, False)  # deleted with its subscription meanwhile
            await conn.execute(insert(attempts_t).values(
                delivery_id=job.delivery_id, number=job.attempt, at=now, status_code=status,
                latency_ms=latency_ms, error=error,
                outcome="delivered" if ok else ("failed" if state == "failed" else "retrying")))
            if job.subscription_id is not None:
                disable = await self._track_failures(conn, job.subscription_id, ok, now,
                                                     disable_after) or disable
        return Finished(state, bool(result.rowcount), disable)

    async def release(self, jobs: Sequence[Job]) -> int:
        """Give back the leases of deliveries a stopping worker abandoned mid-send, so another
        worker sends them at once instead of after the lease runs out. The attempt is not
        counted (attempts and the retry schedule step back, no attempt row): the receiver did not
        fail it, we hung up. Only where our lease still holds: a delivery whose attempt was
        recorded, or that another worker leased since, is left alone. Returns how many."""
        d = deliveries_t
        released = 0
        async with self._transaction() as conn:
            for job in jobs:
                result = await conn.execute(
                    update(d).where(d.c.id == job.delivery_id, d.c.lease_token == job.lease_token,
                                    d.c.state == "pending")
                    .values(lease_until=None, lease_token=None, attempts=d.c.attempts - 1,
                            round_attempts=d.c.round_attempts - 1))
                released += result.rowcount
        return released

    async def _track_failures(self, conn: AsyncConnection, sub_id: int, ok: bool, now: datetime,
                              disable_after: float | None) -> str | None:
        s = subscriptions_t
        if ok:
            await conn.execute(update(s).where(s.c.id == sub_id, s.c.failing_since.is_not(None))
                               .values(failing_since=None))
            return None
        await conn.execute(update(s).where(s.c.id == sub_id, s.c.failing_since.is_(None))
                           .values(failing_since=now))
        since = (await conn.execute(select(s.c.failing_since).where(s.c.id == sub_id))).scalar()
        if since is not None and disable_after is not None and (now - since).total_seconds() > disable_after:
            return f"deliveries have failed since {rfc3339(since)}"
        return None

    async def prune(self, older_than: datetime, batch: int = 1000) -> tuple[int, int]:
        """Delete delivered deliveries (with their attempts) finished before ``older_than``, then
        relayed outbox events from before it that no delivery needs. Audit entries and lineage
        events are never pruned. Returns (deliveries, events) deleted."""
        d = deliveries_t
        deliveries = events = 0
        while True:
            async with self._transaction() as conn:
                ids = [r.id for r in await conn.execute(
                    select(d.c.id).where(d.c.state == "delivered", d.c.finished_at < older_than)
                    .limit(batch))]
                if ids:
                    await conn.execute(delete(attempts_t).where(attempts_t.c.delivery_id.in_(ids)))
                    await conn.execute(delete(d).where(d.c.id.in_(ids)))
                    deliveries += len(ids)
                needed = exists().where(d.c.outbox_id == outbox_t.c.id)
                old = [r.id for r in await conn.execute(
                    select(outbox_t.c.id).where(outbox_t.c.relayed_at.is_not(None),
                                                outbox_t.c.at < older_than, not_(needed))
                    .limit(batch))]
                if old:
                    await conn.execute(delete(outbox_t).where(outbox_t.c.id.in_(old)))
                    events += len(old)
            if len(ids) < batch and len(old) < batch:
                return deliveries, events

    async def prune_idempotency_keys(self, older_than: datetime) -> int:
        """Stored Idempotency-Key answers past their time to live."""
        async with self._transaction() as conn:
            return await prune_keys(conn, older_than)


@contextlib.asynccontextmanager
async def listen(database_url: str, on_notify: Callable[[], None],
                 connect_timeout: float = 60.0) -> AsyncIterator[Any]:
    """On PostgreSQL, call ``on_notify`` whenever a commit wrote outbox events (any process)."""
    conn = await connect_driver(database_url, connect_timeout)
    try:
        await conn.add_listener(OUTBOX_CHANNEL, lambda *_: on_notify())
        yield conn
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 5)
