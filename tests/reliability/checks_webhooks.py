"""Webhook checks, once the faults have stopped and the outbox has drained: every event reached
every matching subscriber at least once, signed, per model in sequence order, with duplicates only
as the same ``webhook-id``; the 410 subscriber ends disabled and gets nothing after it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import asyncpg

from tests.e2e.receivers import Endpoint, Received
from tests.reliability.checks_db import Snapshot
from tests.reliability.profile import WEBHOOK_TIMEOUT
from tests.reliability.report import Violations
from tests.support import asyncpg_dsn


@dataclass
class Sub:
    endpoint: Endpoint
    id: int
    event_types: list[str]
    models: list[str] | None
    baseline: int  # the outbox id every later event has; earlier ones predate the subscription
    gone: bool = False  # told to answer 410: held to less
    received: list[Received] = field(default_factory=list)

    def wants(self, e: asyncpg.Record) -> bool:
        return (e["id"] > self.baseline and any(fnmatchcase(e["type"], p) for p in self.event_types)
                and (self.models is None or (e["model"] is not None
                                             and any(fnmatchcase(e["model"], p) for p in self.models))))


async def drain(database_url: str, timeout: float) -> tuple[bool, float]:
    """Wait until every event is relayed and no delivery to an active subscription is pending."""
    started = time.monotonic()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        while time.monotonic() - started < timeout:
            left = await conn.fetchval(
                "SELECT (SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL) + "
                "(SELECT count(*) FROM deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id "
                " WHERE d.state = 'pending' AND s.status = 'active')")
            if left == 0:
                return True, time.monotonic() - started
            await asyncio.sleep(0.25)
        return False, time.monotonic() - started
    finally:
        await conn.close()


async def delivery_rows(database_url: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return (await conn.fetch("SELECT d.subscription_id, d.state, d.attempts, o.event_id FROM deliveries d "
                                 "JOIN outbox_events o ON o.id = d.outbox_id"),
                await conn.fetch("SELECT id, status, disabled_reason FROM webhook_subscriptions"))
    finally:
        await conn.close()


def check_deliveries(subs: list[Sub], snap: Snapshot, deliveries: list[asyncpg.Record],
                     statuses: list[asyncpg.Record], v: Violations) -> dict[str, Any]:
    v.check("every webhook request verifies (standardwebhooks), its webhook-id is its event's id")
    v.check("every event reached every matching subscriber at least once (the 410 one: up to the 410)")
    v.check("per subscriber and model, events arrive in sequence order; repeats only of the same webhook-id")
    v.check("the server's delivery log says delivered for every event of the healthy subscribers")
    v.check("the 410 subscriber ends disabled and gets nothing after the 410 (plus the timeout)")
    by_id = {e["event_id"]: e for e in snap.outbox}
    figures: dict[str, Any] = {}
    for sub in subs:
        sub.received = [r for r in sub.endpoint.received if not cut_off(r)]
        figures.setdefault("cut_off_by_a_kill", 0)
        figures["cut_off_by_a_kill"] += len(sub.endpoint.received) - len(sub.received)
        _signed_and_known(sub, by_id, v)
        late = _in_order(sub, v)
        mine = [d for d in deliveries if d["subscription_id"] == sub.id]
        if sub.gone:
            _gone(sub, snap, mine, statuses, v)
        else:
            _complete(sub, snap, mine, v)
        counts = Counter(r.webhook_id for r in sub.received)
        lag = sorted(r.at - by_id[r.webhook_id]["at"] for r in sub.received if r.webhook_id in by_id)
        figures[sub.endpoint.name] = {"requests": len(sub.received), "events": len(counts),
                                      "repeated": sum(n > 1 for n in counts.values()),
                                      "late_repeats": late,
                                      "commit_to_receipt_s": _spread(lag),
                                      "answered_2xx": sum(1 for r in sub.received if r.status and r.status < 300)}
    return figures


def cut_off(r: Received) -> bool:
    """A request whose body stopped short of its Content-Length: the sending worker was killed
    mid-request. Nothing was delivered; the receiver saw a broken request, not a bad signature."""
    return len(r.raw) < int(r.headers.get("content-length") or 0)


def _signed_and_known(sub: Sub, by_id: dict[str, asyncpg.Record], v: Violations) -> None:
    for r in sub.received:
        event = by_id.get(r.webhook_id or "")
        data = r.body.get("data") if isinstance(r.body, dict) else None
        if not r.verified:
            v.add("unverified_delivery", {"sub": sub.endpoint.name, "id": r.webhook_id, "error": r.error})
        elif event is None or not isinstance(data, dict) or data.get("id") != r.webhook_id:
            v.add("delivery_of_unknown_event", {"sub": sub.endpoint.name, "id": r.webhook_id, "body": r.body,
                                                "in_outbox": event is not None})
        elif data.get("sequence") != event["sequence"] or r.body.get("type") != event["type"]:
            v.add("delivery_body_differs", {"sub": sub.endpoint.name, "id": r.webhook_id, "body": r.body})
        elif not any(fnmatchcase(event["type"], p) for p in sub.event_types):
            v.add("delivery_not_subscribed", {"sub": sub.endpoint.name, "type": event["type"]})


def _in_order(sub: Sub, v: Violations) -> int:
    """First arrivals of each model's events must come in sequence order. A repeat (same
    webhook-id, which receivers deduplicate on) may come late, e.g. when a lease ran out during a
    stall and two workers sent the same event; those are counted and returned, not violations."""
    by_model: dict[Any, list[tuple[int, str]]] = defaultdict(list)
    for r in sorted(sub.received, key=lambda r: r.index):
        data = r.body.get("data") if isinstance(r.body, dict) else None
        if isinstance(data, dict) and isinstance(data.get("sequence"), int):
            by_model[data.get("model")].append((data["sequence"], r.webhook_id or ""))
    late = 0
    for model, got in by_model.items():
        first: dict[int, str] = {}
        top = 0
        for i, (seq, wid) in enumerate(got):
            if seq in first:
                if first[seq] != wid:
                    v.add("two_webhook_ids_for_one_event", {"sub": sub.endpoint.name, "model": model, "sequence": seq})
                late += seq < top
                continue
            if seq < top:
                v.add("delivered_out_of_order", {"sub": sub.endpoint.name, "model": model, "first_arrivals_near": [
                    s for s, _ in got[max(0, i - 6):i + 3]], "sequence": seq, "after": top})
            first[seq] = wid
            top = max(top, seq)
    return late


def _complete(sub: Sub, snap: Snapshot, mine: list[asyncpg.Record], v: Violations) -> None:
    got = {r.webhook_id for r in sub.received if r.verified and r.status is not None and r.status < 300}
    missing = [e["event_id"] for e in snap.outbox if sub.wants(e) and e["event_id"] not in got]
    if missing:
        v.add("event_not_delivered", {"sub": sub.endpoint.name, "missing": len(missing), "first": missing[:3]})
    undelivered = [d["event_id"] for d in mine if d["state"] != "delivered"]
    if undelivered:
        v.add("delivery_log_not_delivered", {"sub": sub.endpoint.name, "count": len(undelivered),
                                             "states": dict(Counter(d["state"] for d in mine))})


def _gone(sub: Sub, snap: Snapshot, mine: list[asyncpg.Record], statuses: list[asyncpg.Record],
          v: Violations) -> None:
    row = next((s for s in statuses if s["id"] == sub.id), None)
    if row is None or row["status"] != "disabled" or "410" not in (row["disabled_reason"] or ""):
        v.add("gone_not_disabled", {"sub": sub.endpoint.name, "row": dict(row) if row else None})
    first_410 = min((r.answered_at or r.at for r in sub.received if r.status == 410), default=None)
    if first_410 is None:
        v.add("gone_never_answered_410", {"sub": sub.endpoint.name, "requests": len(sub.received)})
        return
    late = [r for r in sub.received if r.at > first_410 + WEBHOOK_TIMEOUT + 3.0]
    if late:
        v.add("delivered_after_disable", {"sub": sub.endpoint.name, "late": len(late),
                                          "after_s": round(late[0].at - first_410, 2)})
    got = {r.webhook_id for r in sub.received if r.status is not None and r.status < 300}
    _prefix_delivered(sub, snap, got, v)
    claimed = [d["event_id"] for d in mine if d["state"] == "delivered" and d["event_id"] not in got]
    if claimed:
        v.add("delivery_log_claims_unreceived", {"sub": sub.endpoint.name, "count": len(claimed)})


def _prefix_delivered(sub: Sub, snap: Snapshot, got: set[str | None], v: Violations) -> None:
    """Up to the 410: per model, the events it acknowledged are a prefix of those it should get,
    so nothing before the last one it took was skipped."""
    wanted: dict[Any, list[asyncpg.Record]] = defaultdict(list)
    for e in snap.outbox:
        if sub.wants(e):
            wanted[e["model"]].append(e)
    for model, events in wanted.items():
        flags = [e["event_id"] in got for e in sorted(events, key=lambda e: e["sequence"])]
        last = max((i for i, f in enumerate(flags) if f), default=-1)
        if not all(flags[:last + 1]):
            v.add("gone_skipped_event_before_410", {"sub": sub.endpoint.name, "model": model,
                                                    "skipped": flags[:last + 1].count(False)})


def _spread(values: list[float]) -> dict[str, float] | None:
    """p50, p99 and max of sorted values, in seconds."""
    if not values:
        return None
    return {"p50": round(values[len(values) // 2], 3), "p99": round(values[int(len(values) * 0.99)], 3),
            "max": round(values[-1], 3)}
