"""What a metrics scrape reads from the database: the outbox backlog.

Each count runs on a partial index (``relayed_at IS NULL``, ``state = 'pending'``, ``state =
'failed'``), so a scrape costs a few index reads however long the delivered history is.

Deliveries to a paused or disabled subscription are *held*: no worker claims them until the
subscription is active again. They are counted apart and left out of the oldest age, which would
otherwise grow for as long as the subscription stays off and keep an alert on it firing, unable to
tell stalled workers from a receiver someone turned off.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, not_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.adapters.db.tables import DeliveryRow, OutboxRow, subscriptions_t

_events = OutboxRow.__table__  # type: ignore[attr-defined]
_deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]

UNRELAYED = select(func.count(), func.min(_events.c.at)).where(_events.c.relayed_at.is_(None))
_held = exists().where(subscriptions_t.c.id == _deliveries.c.subscription_id,
                      subscriptions_t.c.status != "active")  # as the workers' claim reads it
PENDING = (select(func.count(), func.min(_events.c.at))
           .select_from(_deliveries.join(_events, _events.c.id == _deliveries.c.outbox_id))
           .where(_deliveries.c.state == "pending", not_(_held)))
HELD = select(func.count()).select_from(_deliveries).where(_deliveries.c.state == "pending", _held)
FAILED = select(func.count()).select_from(_deliveries).where(_deliveries.c.state == "failed")


def _aware(value: datetime | str | None) -> datetime | None:
    """``min()`` over a timestamp column comes back as text on SQLite."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


async def outbox_backlog(engine: AsyncEngine, now: datetime) -> dict[str, Any]:
    """Events not yet relayed, deliveries not yet delivered, the age in seconds of the oldest
    event either is waiting on, the deliveries held by a subscription that is off, and the
    deliveries given up on."""
    async with engine.connect() as conn:
        events, oldest_event = (await conn.execute(UNRELAYED)).one()
        deliveries, oldest_delivery = (await conn.execute(PENDING)).one()
        held = (await conn.execute(HELD)).scalar_one()
        failed = (await conn.execute(FAILED)).scalar_one()
    oldest = [t for t in (_aware(oldest_event), _aware(oldest_delivery)) if t is not None]
    age = max(0.0, (now - min(oldest)).total_seconds()) if oldest else 0.0
    return {"events": events, "deliveries": deliveries, "held": held, "oldest_age": age,
            "failed": failed}
