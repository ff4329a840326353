"""Repository queries for webhook subscriptions, the delivery log and lineage events (mixed into
SqlRepository; they run in the caller's unit of work)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.tables import (
    attempts_t,
    deliveries_t,
    lineage_t,
    outbox_t,
    subscriptions_t,
)
from registry.services.ports import AttemptRecord, DeliveryRecord, SubscriptionRecord

_SUB_COLS = (subscriptions_t.c.id, subscriptions_t.c.url, subscriptions_t.c.description,
             subscriptions_t.c.event_types, subscriptions_t.c.models, subscriptions_t.c.status,
             subscriptions_t.c.disabled_reason, subscriptions_t.c.failing_since,
             subscriptions_t.c.previous_secret_until, subscriptions_t.c.created_at,
             subscriptions_t.c.updated_at, subscriptions_t.c.created_by)


def subscription(row: Any) -> SubscriptionRecord:
    return SubscriptionRecord(row.id, row.url, row.description, row.event_types, row.models,
                              row.status, row.disabled_reason, row.failing_since,
                              row.previous_secret_until, row.created_at, row.updated_at,
                              row.created_by)


_DELIVERIES = (
    select(deliveries_t.c.id, deliveries_t.c.target, outbox_t.c.event_id, outbox_t.c.type,
           outbox_t.c.model, deliveries_t.c.sequence, deliveries_t.c.state, deliveries_t.c.attempts,
           deliveries_t.c.next_attempt_at, deliveries_t.c.lease_until, deliveries_t.c.last_status,
           deliveries_t.c.last_error, deliveries_t.c.created_at, deliveries_t.c.finished_at)
    .join(outbox_t, outbox_t.c.id == deliveries_t.c.outbox_id)
)


class DeliveryQueries:
    conn: AsyncConnection

    async def add_subscription(self, url: str, description: str, event_types: list[str],
                               models: list[str] | None, secret: str, actor: str,
                               now: datetime) -> int:
        return (await self.conn.execute(insert(subscriptions_t).values(
            url=url, description=description, event_types=event_types, models=models,
            status="active", secret=secret, created_at=now, updated_at=now, created_by=actor,
        ).returning(subscriptions_t.c.id))).scalar_one()

    async def get_subscription(self, sub_id: int) -> SubscriptionRecord | None:
        row = (await self.conn.execute(select(*_SUB_COLS).where(subscriptions_t.c.id == sub_id))).first()
        return None if row is None else subscription(row)

    async def list_subscriptions(self, after: int, limit: int) -> list[SubscriptionRecord]:
        stmt = (select(*_SUB_COLS).where(subscriptions_t.c.id > after)
                .order_by(subscriptions_t.c.id).limit(limit))
        return [subscription(r) for r in await self.conn.execute(stmt)]

    async def update_subscription(self, sub_id: int, values: dict[str, Any]) -> None:
        await self.conn.execute(update(subscriptions_t).where(subscriptions_t.c.id == sub_id)
                                .values(**values))

    async def subscription_secrets(self, sub_id: int) -> tuple[str, str | None]:
        row = (await self.conn.execute(select(subscriptions_t.c.secret, subscriptions_t.c.previous_secret)
                                       .where(subscriptions_t.c.id == sub_id))).one()
        return row.secret, row.previous_secret

    async def delete_subscription(self, sub_id: int) -> None:
        ids = select(deliveries_t.c.id).where(deliveries_t.c.subscription_id == sub_id)
        # Wait for a worker's finish in progress first: it would otherwise add an attempt after
        # the attempts are deleted (a foreign key violation, a spurious 409).
        await self.conn.execute(ids.with_for_update())
        await self.conn.execute(delete(attempts_t).where(attempts_t.c.delivery_id.in_(ids)))
        await self.conn.execute(delete(deliveries_t).where(deliveries_t.c.subscription_id == sub_id))
        await self.conn.execute(delete(subscriptions_t).where(subscriptions_t.c.id == sub_id))

    async def list_deliveries(self, target: str, state: str | None, before: int | None,
                              limit: int) -> list[DeliveryRecord]:
        stmt = _DELIVERIES.where(deliveries_t.c.target == target)
        if state is not None:
            stmt = stmt.where(deliveries_t.c.state == state)
        if before is not None:
            stmt = stmt.where(deliveries_t.c.id < before)
        rows = list(await self.conn.execute(stmt.order_by(deliveries_t.c.id.desc()).limit(limit)))
        return await self._with_attempts(rows)

    async def get_delivery(self, target: str, delivery_id: int) -> DeliveryRecord | None:
        rows = list(await self.conn.execute(
            _DELIVERIES.where(deliveries_t.c.target == target, deliveries_t.c.id == delivery_id)))
        found = await self._with_attempts(rows)
        return found[0] if found else None

    async def _with_attempts(self, rows: list[Any]) -> list[DeliveryRecord]:
        if not rows:
            return []
        log: dict[int, list[AttemptRecord]] = {r.id: [] for r in rows}
        stmt = (select(attempts_t).where(attempts_t.c.delivery_id.in_(list(log)))
                .order_by(attempts_t.c.delivery_id, attempts_t.c.number))
        for a in await self.conn.execute(stmt):
            log[a.delivery_id].append(AttemptRecord(a.number, a.at, a.status_code, a.latency_ms,
                                                    a.error, a.outcome))
        now = datetime.now(UTC)
        return [DeliveryRecord(
            id=r.id, target=r.target, event_id=r.event_id, event_type=r.type, model=r.model,
            sequence=r.sequence, state=r.state, attempts=r.attempts,
            next_attempt_at=r.next_attempt_at if r.state == "pending" else None,
            in_flight=r.state == "pending" and r.lease_until is not None and r.lease_until > now,
            last_status=r.last_status, last_error=r.last_error, created_at=r.created_at,
            finished_at=r.finished_at, attempt_log=log[r.id]) for r in rows]

    async def requeue_deliveries(self, target: str, now: datetime, *, delivery_id: int | None = None,
                                 failed_since: datetime | None = None) -> int:
        stmt = update(deliveries_t).where(deliveries_t.c.target == target)
        if delivery_id is not None:
            # Never clear the lease of an attempt a worker claimed since the caller looked.
            stmt = stmt.where(deliveries_t.c.id == delivery_id,
                              or_(deliveries_t.c.lease_until.is_(None), deliveries_t.c.lease_until < now))
        if failed_since is not None:
            stmt = stmt.where(deliveries_t.c.state == "failed", deliveries_t.c.created_at >= failed_since)
        result = await self.conn.execute(stmt.values(
            state="pending", ordered=False, round_attempts=0, next_attempt_at=now,
            lease_until=None, lease_token=None, finished_at=None, first_failed_at=None))
        return result.rowcount or 0

    async def lineage_events(self, chain: str, version: int) -> list[dict[str, Any]]:
        stmt = (select(lineage_t.c.payload).where(lineage_t.c.chain == chain,
                                                  lineage_t.c.version == version)
                .order_by(lineage_t.c.id))
        return [r.payload for r in await self.conn.execute(stmt)]
