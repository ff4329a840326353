"""The workers' side of the outbox against a real database: the relay turns events into one
delivery per matching active subscription (and lineage events plus sink deliveries), the
dispatcher's claim honours due times, leases and per (target, chain) order, finish moves a
delivery along the retry schedule, and prune forgets only what nobody needs any more.

Time is a hand-moved clock given to the store; the services stamp their rows with the real time,
so the clock starts there and catches up after them. Rows are read straight from the tables."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from registry.adapters.db.engine import create_engine
from registry.adapters.db.outbox import Finished, Job, OutboxStore
from registry.adapters.db.tables import (
    attempts_t,
    audit_t,
    deliveries_t,
    lineage_t,
    outbox_t,
    subscriptions_t,
)
from registry.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from registry.adapters.lineage import LineageBuilder
from registry.bootstrap import Container
from registry.services import versions, webhooks
from registry.services.commands import UpdateModelVersion
from registry.services.webhooks import CreateWebhook, UpdateWebhook, WebhookTools
from tests.conftest import unique
from tests.integration.helpers import (
    ALICE,
    chain_of,
    move,
    new_model,
    outbox_rows,
    reader,
    register,
    to_production,
)

LEASE, HOLD = 60.0, 600.0
SCHEDULE = (0.0, 5.0, 30.0)
SINKS = ("lineage:http", "lineage:file")


class Clock:
    """Frozen until moved; starts at the real time, which the services stamp their rows with."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def catch_up(self) -> None:
        """After a service call stamped something with the real time (a requeue's due time)."""
        self.now = max(self.now, datetime.now(UTC))


def store_of(c: Container, clock: Clock, sinks: Sequence[str] = ()) -> OutboxStore:
    return OutboxStore(c.uow, sinks=sinks, lineage=LineageBuilder("ns"), clock=clock)


async def _any_url(url: str) -> None:
    """The store is under test, not the URL guard."""


def tools_of(c: Container) -> WebhookTools:
    return WebhookTools(check_url=_any_url, cipher=c.cipher)


async def subscribe(c: Container, event_types: Sequence[str] = ("*",),
                    models: list[str] | None = None) -> int:
    made = await webhooks.create_webhook(
        CreateWebhook(url="https://hooks.example/in", event_types=list(event_types), models=models),
        tools_of(c), c.uow(ALICE))
    return made.record.id


async def set_status(c: Container, sub_id: int, status: str) -> None:
    await webhooks.update_webhook(sub_id, UpdateWebhook(status=status), tools_of(c), c.uow(ALICE))


async def claim(store: OutboxStore, limit: int = 100, hold: float = HOLD) -> list[Job]:
    return await store.claim(limit, LEASE, hold)


async def finish(store: OutboxStore, job: Job, status: int | None, *,
                 schedule: Sequence[float] = SCHEDULE, retry_after: float | None = None,
                 disable_after: float | None = None) -> Finished:
    ok = status is not None and 200 <= status < 300
    return await store.finish(job, ok=ok, status=status, latency_ms=12.5,
                              error=None if ok else f"answered {status}", retry_after=retry_after,
                              schedule=schedule, disable_after=disable_after)


async def deliveries(c: Container) -> list[dict[str, Any]]:
    """Every delivery with its event's type, model and id, oldest first."""
    stmt = (select(deliveries_t, outbox_t.c.type, outbox_t.c.model, outbox_t.c.event_id)
            .join(outbox_t, outbox_t.c.id == deliveries_t.c.outbox_id).order_by(deliveries_t.c.id))
    async with reader(c.engine).connect() as conn:
        return [r._asdict() for r in await conn.execute(stmt)]


async def delivery(c: Container, delivery_id: int) -> dict[str, Any]:
    async with reader(c.engine).connect() as conn:
        row = (await conn.execute(select(deliveries_t).where(deliveries_t.c.id == delivery_id))).one()
        return row._asdict()


async def attempts(c: Container, delivery_id: int) -> list[tuple[int, int | None, str]]:
    async with reader(c.engine).connect() as conn:
        rows = await conn.execute(select(attempts_t).where(attempts_t.c.delivery_id == delivery_id)
                                  .order_by(attempts_t.c.id))
        return [(r.number, r.status_code, r.outcome) for r in rows]


async def failing_since(c: Container, sub_id: int) -> datetime | None:
    async with reader(c.engine).connect() as conn:
        return (await conn.execute(select(subscriptions_t.c.failing_since)
                                   .where(subscriptions_t.c.id == sub_id))).scalar_one()


async def count(c: Container, table: Any) -> int:
    async with reader(c.engine).connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


def keys(jobs: Sequence[Job]) -> set[tuple[str, str, int]]:
    """(target, model, sequence) of each claimed job."""
    return {(j.target, j.event["model"], j.event["sequence"]) for j in jobs}


# Relay


async def test_relay_makes_one_delivery_per_matching_active_subscription(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    everything = await subscribe(container)
    moves = await subscribe(container, ["model_version.stage_changed"])
    fraud_versions = await subscribe(container, ["model_version.*"], models=["fraud-*"])
    paused = await subscribe(container)
    await set_status(container, paused, "paused")
    disabled = await subscribe(container)
    assert await webhooks.disable_webhook(disabled, "gone", container.uow(ALICE))  # webhook.disabled
    fraud, churn = await new_model(container, unique("fraud")), await new_model(container, unique("churn"))
    for name in (fraud, churn):
        await register(container, name)
        await move(container, name, 1, "staging")
    await webhooks.ping_webhook(moves, container.uow(ALICE))  # a ping outside its own filter

    relayed, _ = await store.relay()

    names = {everything: "everything", moves: "moves", fraud_versions: "fraud_versions",
             paused: "paused", disabled: "disabled"}
    got = Counter((d["type"], d["model"], names[d["subscription_id"]]) for d in await deliveries(container))
    assert got == Counter([
        ("webhook.disabled", None, "everything"),
        ("model.created", fraud, "everything"),
        ("model.created", churn, "everything"),
        ("model_version.created", fraud, "everything"),
        ("model_version.created", fraud, "fraud_versions"),
        ("model_version.created", churn, "everything"),
        ("model_version.stage_changed", fraud, "everything"),
        ("model_version.stage_changed", fraud, "moves"),
        ("model_version.stage_changed", fraud, "fraud_versions"),
        ("model_version.stage_changed", churn, "everything"),
        ("model_version.stage_changed", churn, "moves"),
        ("webhook.ping", None, "moves"),
    ])
    async with reader(container.engine).connect() as conn:
        events = {r.id: r for r in await conn.execute(select(outbox_t))}
    assert relayed == len(events) == 8
    assert {e.relayed_at for e in events.values()} == {clock.now}
    for d in await deliveries(container):
        event = events[d["outbox_id"]]
        assert d["target"] == f"webhook:{d['subscription_id']}"
        assert (d["chain"], d["sequence"]) == (event.chain, event.sequence)
        # A ping is addressed to one subscription and goes out of order: nothing holds it back.
        ordered = event.type != "webhook.ping"
        assert (d["state"], d["ordered"], d["attempts"], d["round_attempts"]) == ("pending", ordered, 0, 0)
        assert d["next_attempt_at"] == clock.now and d["lease_token"] is None

    # Nothing is relayed twice, even with more subscriptions now.
    await subscribe(container)
    assert await store.relay() == (0, 0)
    assert len(await deliveries(container)) == 12
    assert await count(container, lineage_t) == 4  # two registrations, two stage changes


async def test_relay_builds_lineage_for_registrations_and_the_moved_version_only(
    container: Container,
) -> None:
    store = store_of(container, Clock(), sinks=SINKS)
    name = await new_model(container)
    await register(container, name, 2)
    await to_production(container, name, 1)
    await move(container, name, 2, "staging")
    await move(container, name, 2, "production")  # archives v1: its event is no lineage run
    await versions.update_model_version(UpdateModelVersion(model=name, version=2, tags={"a": "b"}),
                                        container.uow(ALICE))
    await store.relay()

    events = await outbox_rows(container, await chain_of(container, name))
    archived = [e for e in events if "superseded_by" in e["data"]]
    assert [(e["version"], e["data"]["to_stage"]) for e in archived] == [(1, "archived")]
    runs = [e for e in events if e["type"] == "model_version.created"
            or (e["type"] == "model_version.stage_changed" and e not in archived)]
    assert [(e["type"], e["version"]) for e in runs] == [
        ("model_version.created", 1), ("model_version.created", 2),
        ("model_version.stage_changed", 1), ("model_version.stage_changed", 1),
        ("model_version.stage_changed", 2), ("model_version.stage_changed", 2)]

    async with reader(container.engine).connect() as conn:
        lineage = list(await conn.execute(select(lineage_t).order_by(lineage_t.c.id)))
    assert [r.event_id for r in lineage] == [e["event_id"] for e in runs]
    for row, event in zip(lineage, runs, strict=True):
        job = "register" if event["type"] == "model_version.created" else "transition"
        assert (row.model, row.version, row.at) == (name, event["version"], event["at"])
        assert row.payload["run"]["runId"] == event["event_id"]
        assert (row.payload["job"]["namespace"], row.payload["job"]["name"]) == ("ns", f"{name}.{job}")
    promotion = lineage[-1].payload
    assert [o["name"] for o in promotion["outputs"]] == [f"{name}/2", f"{name}/1"]

    sent = Counter((d["event_id"], d["target"]) for d in await deliveries(container))
    assert sent == Counter((e["event_id"], sink) for e in runs for sink in SINKS)
    assert {d["subscription_id"] for d in await deliveries(container)} == {None}

    # A sink's job carries the stored RunEvent, not a webhook's URL or secret.
    jobs = await claim(store)
    assert {j.target for j in jobs} == set(SINKS)
    assert all(j.url is None and j.secret is None for j in jobs)
    assert {j.lineage["run"]["runId"] for j in jobs} == {runs[0]["event_id"]}


# Claim


async def test_a_leased_delivery_is_claimable_again_only_once_the_lease_expires(
    container: Container,
) -> None:
    clock = Clock()
    store = store_of(container, clock)
    sub = await subscribe(container)
    name = await new_model(container)
    await store.relay()

    [first] = await claim(store)
    assert (first.target, first.subscription_id, first.attempt, first.round_attempt) == (
        f"webhook:{sub}", sub, 1, 1)
    assert (first.event["type"], first.event["model"], first.url) == (
        "model.created", name, "https://hooks.example/in")
    assert first.secret is not None and first.lineage is None
    assert await claim(store) == []
    clock.advance(LEASE - 1)
    assert await claim(store) == []

    clock.advance(2)
    [second] = await claim(store)
    assert second.delivery_id == first.delivery_id and second.lease_token != first.lease_token
    assert (second.attempt, second.round_attempt) == (2, 2)
    lease_until = clock.now + timedelta(seconds=LEASE)

    # The first worker reports late: its attempt is logged, the newer lease stands.
    late = await finish(store, first, 500)
    assert late.applied is False
    row = await delivery(container, first.delivery_id)
    assert (row["state"], row["lease_token"], row["lease_until"]) == ("pending", second.lease_token,
                                                                      lease_until)
    assert (row["last_status"], row["first_failed_at"], row["finished_at"]) == (None, None, None)
    assert await claim(store) == []
    assert await attempts(container, first.delivery_id) == [(1, 500, "retrying")]

    done = await finish(store, second, 200)
    assert done == Finished("delivered", True, None)
    row = await delivery(container, first.delivery_id)
    assert (row["state"], row["last_status"], row["finished_at"]) == ("delivered", 200, clock.now)
    assert await attempts(container, first.delivery_id) == [(1, 500, "retrying"), (2, 200, "delivered")]


async def test_a_later_event_waits_until_the_earlier_one_is_delivered(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    await subscribe(container)
    name = await new_model(container)
    await register(container, name)
    await store.relay()

    [one] = await claim(store)
    assert one.event["sequence"] == 1
    assert await claim(store) == []  # seq 2 waits while seq 1 is in flight
    await finish(store, one, 503)  # retried in 5 s
    assert await claim(store) == []  # ... and while it waits for its retry
    clock.advance(SCHEDULE[1])
    [again] = await claim(store)
    assert again.delivery_id == one.delivery_id
    await finish(store, again, 200)
    [two] = await claim(store)
    assert (two.event["sequence"], two.event["type"]) == (2, "model_version.created")


async def test_a_later_event_stops_waiting_once_the_earlier_one_has_failed_longer_than_the_hold(
    container: Container,
) -> None:
    clock = Clock()
    store = store_of(container, clock)
    await subscribe(container)
    name = await new_model(container)
    await register(container, name)
    await store.relay()

    [one] = await claim(store)
    slow = (0.0, 3 * HOLD)  # the first retry comes after the hold is over
    await finish(store, one, 500, schedule=slow)
    clock.advance(HOLD - 1)
    assert await claim(store) == []
    clock.advance(2)
    [two] = await claim(store)
    assert two.event["sequence"] == 2
    assert (await delivery(container, one.delivery_id))["state"] == "pending"


async def test_requeued_deliveries_neither_wait_nor_hold_others_back(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    sub = await subscribe(container)
    name = await new_model(container)
    await register(container, name, 2)
    await store.relay()
    target = f"webhook:{sub}"

    [one] = await claim(store)
    await finish(store, one, 500, schedule=(0.0, 3600.0))  # seq 1 pending for an hour
    ids = {d["sequence"]: d["id"] for d in await deliveries(container)}
    await webhooks.redeliver(target, ids[3], container.uow(ALICE))  # seq 3 jumps the queue
    clock.catch_up()
    assert keys(await claim(store)) == {(target, name, 3)}

    await webhooks.redeliver(target, ids[1], container.uow(ALICE))  # seq 1 no longer holds seq 2
    clock.catch_up()
    assert keys(await claim(store)) == {(target, name, 1), (target, name, 2)}


async def test_order_is_kept_per_target_and_chain_independently(container: Container) -> None:
    store = store_of(container, Clock())
    a, b = await subscribe(container), await subscribe(container)
    m1, m2 = await new_model(container), await new_model(container)
    for name in (m1, m2):
        await register(container, name)
    await store.relay()

    first = await claim(store)
    assert keys(first) == {(f"webhook:{s}", m, 1) for s in (a, b) for m in (m1, m2)}
    [done] = [j for j in first if (j.target, j.event["model"]) == (f"webhook:{a}", m2)]
    await finish(store, done, 200)
    # m2's next event goes to a, though m1's first (lower seq) is pending for a and b's for m2.
    assert keys(await claim(store)) == {(f"webhook:{a}", m2, 2)}


async def test_claim_skips_deliveries_of_paused_and_disabled_subscriptions(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    sub, other = await subscribe(container), await subscribe(container)
    name = await new_model(container)
    await store.relay()

    await set_status(container, sub, "paused")
    assert keys(await claim(store)) == {(f"webhook:{other}", name, 1)}
    clock.advance(2 * LEASE)
    assert {j.target for j in await claim(store)} == {f"webhook:{other}"}  # lease over; not sub's

    await set_status(container, sub, "active")
    assert {j.target for j in await claim(store)} == {f"webhook:{sub}"}
    clock.advance(2 * LEASE)
    assert await webhooks.disable_webhook(sub, "gone", container.uow(ALICE))
    assert {j.target for j in await claim(store)} == {f"webhook:{other}"}
    assert (await deliveries(container))[0]["state"] == "pending"


# Finish


async def test_a_2xx_is_delivered_and_clears_the_lease(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    await subscribe(container)
    await new_model(container)
    await store.relay()
    [job] = await claim(store)
    clock.advance(1.5)
    assert await finish(store, job, 204) == Finished("delivered", True, None)
    row = await delivery(container, job.delivery_id)
    assert (row["state"], row["last_status"], row["last_error"]) == ("delivered", 204, None)
    assert (row["lease_until"], row["lease_token"], row["finished_at"]) == (None, None, clock.now)
    assert await attempts(container, job.delivery_id) == [(1, 204, "delivered")]
    clock.advance(3600)
    assert await claim(store) == []


async def test_retries_follow_the_schedule_and_then_fail(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    await subscribe(container)
    await new_model(container)
    await store.relay()

    started = clock.now
    for position in (1, 2):
        [job] = await claim(store)
        assert job.round_attempt == position
        result = await finish(store, job, 500)
        assert result == Finished("pending", True, None)
        row = await delivery(container, job.delivery_id)
        assert row["next_attempt_at"] == clock.now + timedelta(seconds=SCHEDULE[position])
        assert (row["first_failed_at"], row["last_status"]) == (started, 500)
        clock.advance(SCHEDULE[position] - 0.5)
        assert await claim(store) == []
        clock.advance(0.5)
    [job] = await claim(store)
    assert (job.attempt, job.round_attempt) == (3, 3)
    assert await finish(store, job, 502) == Finished("failed", True, None)
    row = await delivery(container, job.delivery_id)
    assert (row["state"], row["finished_at"], row["last_status"]) == ("failed", clock.now, 502)
    assert await attempts(container, job.delivery_id) == [
        (1, 500, "retrying"), (2, 500, "retrying"), (3, 502, "failed")]
    clock.advance(86400)
    assert await claim(store) == []


async def test_retry_after_overrides_the_schedule(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    await subscribe(container)
    await new_model(container)
    await store.relay()
    [job] = await claim(store)
    await finish(store, job, 429, retry_after=120)
    row = await delivery(container, job.delivery_id)
    assert row["next_attempt_at"] == clock.now + timedelta(seconds=120)
    clock.advance(SCHEDULE[1])
    assert await claim(store) == []
    clock.advance(120 - SCHEDULE[1])
    assert [j.delivery_id for j in await claim(store)] == [job.delivery_id]


async def test_410_fails_the_delivery_and_asks_for_the_subscription_to_be_disabled(
    container: Container,
) -> None:
    store = store_of(container, Clock())
    await subscribe(container)
    await new_model(container)
    await store.relay()
    [job] = await claim(store)
    result = await finish(store, job, 410)
    assert (result.state, result.applied) == ("failed", True)
    assert result.disable is not None and "410" in result.disable
    assert (await delivery(container, job.delivery_id))["state"] == "failed"
    assert await attempts(container, job.delivery_id) == [(1, 410, "failed")]


async def test_failing_longer_than_disable_after_asks_to_disable_and_a_success_resets_it(
    container: Container,
) -> None:
    clock = Clock()
    store = store_of(container, clock)
    sub = await subscribe(container)
    name = await new_model(container)
    await store.relay()
    often = (0.0,) + (1.0,) * 20
    started = clock.now

    async def attempt(status: int) -> Finished:
        [job] = await claim(store)
        return await finish(store, job, status, schedule=often, disable_after=100)

    assert (await attempt(500)).disable is None
    assert await failing_since(container, sub) == started
    clock.advance(99)
    assert (await attempt(500)).disable is None
    clock.advance(2)  # 101 s of failures
    reason = (await attempt(500)).disable
    assert reason is not None and "failed since" in reason
    assert await failing_since(container, sub) == started

    clock.advance(1)
    assert await attempt(200) == Finished("delivered", True, None)
    assert await failing_since(container, sub) is None
    # A new failure starts a new count.
    await register(container, name)
    await store.relay()
    clock.advance(1000)
    assert (await attempt(500)).disable is None
    assert await failing_since(container, sub) == clock.now


async def test_a_requeue_starts_the_retry_schedule_again(container: Container) -> None:
    clock = Clock()
    store = store_of(container, clock)
    sub = await subscribe(container)
    name = await new_model(container)
    await register(container, name)
    await store.relay()
    target, short = f"webhook:{sub}", (0.0, 5.0)

    [one] = await claim(store)
    await finish(store, one, 500, schedule=short)
    clock.advance(5)
    [one] = await claim(store)
    assert await finish(store, one, 500, schedule=short) == Finished("failed", True, None)
    [two] = await claim(store)  # seq 1 failed: seq 2 goes
    await finish(store, two, 200)

    recovered = await webhooks.recover(target, clock.now - timedelta(hours=1), container.uow(ALICE))
    assert recovered == 1  # the delivered one is not re-sent
    row = await delivery(container, one.delivery_id)
    assert (row["state"], row["round_attempts"], row["attempts"], row["ordered"]) == ("pending", 0, 2, False)
    assert (row["finished_at"], row["first_failed_at"], row["lease_token"]) == (None, None, None)
    assert (await delivery(container, two.delivery_id))["state"] == "delivered"

    clock.catch_up()
    [again] = await claim(store)
    assert (again.delivery_id, again.attempt, again.round_attempt) == (one.delivery_id, 3, 1)
    assert (await finish(store, again, 500, schedule=short)).state == "pending"
    assert (await delivery(container, one.delivery_id))["next_attempt_at"] == clock.now + timedelta(seconds=5)

    await webhooks.redeliver(target, two.delivery_id, container.uow(ALICE))
    clock.catch_up()
    [resent] = await claim(store)
    assert (resent.delivery_id, resent.attempt, resent.round_attempt) == (two.delivery_id, 2, 1)
    assert resent.event["id"] == two.event["id"]

    async with reader(container.engine).connect() as conn:
        actions = list((await conn.execute(select(audit_t.c.action).where(audit_t.c.chain == "system")
                                           .order_by(audit_t.c.seq))).scalars())
    assert actions[-2:] == ["delivery.recovered", "delivery.requeued"]


# Prune


async def test_prune_deletes_only_old_delivered_deliveries_and_events_nobody_needs(
    container: Container,
) -> None:
    clock = Clock()
    store = store_of(container, clock)
    await subscribe(container, ["model_version.*"])
    name = await new_model(container)  # model.created: relayed, never delivered anywhere
    await register(container, name, 4)
    await store.relay()
    await versions.update_model_version(UpdateModelVersion(model=name, version=1, tags={"a": "b"}),
                                        container.uow(ALICE))  # not relayed yet
    ids = {d["sequence"]: d["id"] for d in await deliveries(container)}

    async def attempt(status: int, schedule: Sequence[float] = SCHEDULE) -> None:
        [job] = await claim(store)
        await finish(store, job, status, schedule=schedule)

    await attempt(200)  # v1: delivered long ago
    await attempt(500, schedule=(0.0,))  # v2: failed long ago
    cutoff = clock.advance(3600)
    clock.advance(3600)
    await attempt(200)  # v3: delivered after the cutoff
    await attempt(500)  # v4: pending
    audit_before = await count(container, audit_t)
    events_before = await outbox_rows(container, await chain_of(container, name))

    assert await store.prune(cutoff, batch=1) == (1, 2)

    assert {d["sequence"]: d["state"] for d in await deliveries(container)} == {
        3: "failed", 4: "delivered", 5: "pending"}
    assert await attempts(container, ids[2]) == []
    assert [a[2] for a in await attempts(container, ids[3])] == ["failed"]
    assert [a[2] for a in await attempts(container, ids[4])] == ["delivered"]
    events = await outbox_rows(container, await chain_of(container, name))
    assert [e["sequence"] for e in events] == [3, 4, 5, 6]  # seq 1 (no delivery) and 2 went
    assert [e["sequence"] for e in events_before] == [1, 2, 3, 4, 5, 6]
    assert await count(container, lineage_t) == 4
    assert await count(container, audit_t) == audit_before
    assert await store.prune(cutoff) == (0, 0)


# PostgreSQL: workers in several processes share the work


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_concurrent_claims_never_lease_one_delivery_twice(container: Container) -> None:
    subs = [await subscribe(container) for _ in range(3)]
    for _ in range(25):
        await new_model(container)
    await container.outbox.relay()
    total = await count(container, deliveries_t)
    assert total == 75

    other = create_engine(container.settings.database_url)
    try:
        stores = [container.outbox, OutboxStore(SqlUnitOfWorkFactory(other))]

        async def drain(store: OutboxStore) -> list[Job]:
            taken: list[Job] = []
            while jobs := await store.claim(4, LEASE, HOLD):
                taken += jobs
                await asyncio.sleep(0)
            return taken

        results = await asyncio.gather(*(drain(s) for s in stores for _ in range(2)))
    finally:
        await other.dispose()
    claimed = [j.delivery_id for jobs in results for j in jobs]
    assert len(claimed) == len(set(claimed)) == total
    assert all(results), "every claimer got some of the work"
    rows = {d["id"]: d for d in await deliveries(container)}
    for job in itertools.chain.from_iterable(results):
        assert rows[job.delivery_id]["lease_token"] == job.lease_token
        assert rows[job.delivery_id]["attempts"] == 1
    assert {d["subscription_id"] for d in rows.values()} == set(subs)


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_concurrent_relays_relay_each_event_once(container: Container) -> None:
    await subscribe(container)
    await subscribe(container)
    for _ in range(15):
        name = await new_model(container)
        await register(container, name)
    events = await count(container, outbox_t)
    assert events == 30

    other = create_engine(container.settings.database_url)
    try:
        stores = [store_of(container, Clock(), SINKS),
                  OutboxStore(SqlUnitOfWorkFactory(other), sinks=SINKS, lineage=LineageBuilder("ns"))]

        async def drain(store: OutboxStore) -> int:
            relayed = 0
            while n := (await store.relay(limit=3))[0]:
                relayed += n
                await asyncio.sleep(0)
            return relayed

        counts = await asyncio.gather(*(drain(s) for s in stores for _ in range(2)))
    finally:
        await other.dispose()
    assert sum(counts) == events
    assert all(counts), "every relay got some of the work"
    per_event = Counter(d["outbox_id"] for d in await deliveries(container))
    registrations = await count(container, lineage_t)
    assert registrations == 15
    # Two subscriptions each; two sinks more for each registration.
    assert sorted(per_event.values()) == [2] * 15 + [4] * 15


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_later_event_is_not_sent_while_an_earlier_one_is_still_being_relayed(
    container: Container,
) -> None:
    """Two relays: one holds seq 1 (locked, still building its deliveries) while the other,
    skipping it, relays and commits seq 2. Seq 2 must not go out before seq 1's delivery exists."""
    store = store_of(container, Clock())
    sub = await subscribe(container)
    name = await new_model(container)
    await register(container, name)
    [first, _] = await outbox_rows(container, await chain_of(container, name))

    async with container.engine.connect() as slow_relay:
        await slow_relay.execute(select(outbox_t.c.id).where(outbox_t.c.id == first["id"])
                                 .with_for_update())
        assert (await store.relay())[0] == 1  # seq 2 only: seq 1 is locked
        premature = await claim(store)
        await slow_relay.rollback()
    assert keys(premature) == set(), f"sent {keys(premature)} before seq 1 was even relayed"
    assert (await store.relay())[0] == 1
    assert keys(await claim(store)) == {(f"webhook:{sub}", name, 1)}
