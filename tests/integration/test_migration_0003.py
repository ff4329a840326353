"""Revision 0003 (webhooks, deliveries, lineage) on a database that already holds events: the
events written before it are kept and count as relayed, so the relay sends no history; it
downgrades to 0002 with webhook data present and upgrades again to the declared schema."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Connection

from registry.adapters.db import migrate
from registry.adapters.db.tables import deliveries_t, lineage_t, outbox_t
from registry.bootstrap import Container, build
from registry.config import Settings
from registry.services import webhooks
from registry.services.webhooks import CreateWebhook, WebhookTools
from tests.integration.helpers import ALICE, new_model, reader, register
from tests.integration.migration_helpers import drift as _drift
from tests.integration.migration_helpers import on_connection as _run
from tests.integration.migration_helpers import tables as _tables

NEW_TABLES = {"webhook_subscriptions", "deliveries", "delivery_attempts", "lineage_events"}
LONG_AGO = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
# The columns outbox_events had at 0002 (``target`` came with 0003).
V2_COLUMNS = ("event_id", "chain", "sequence", "type", "model", "version", "actor", "request_id",
              "at", "data", "relayed_at")


def _outbox_columns(conn: Connection) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns("outbox_events")}


async def _events(url: str) -> list[dict[str, Any]]:
    """The outbox as 0002 knew it (every column but ``target``), by id."""
    async def read(conn: Any) -> list[dict[str, Any]]:
        cols = [outbox_t.c[name] for name in ("id", *V2_COLUMNS)]
        return [r._asdict() for r in await conn.execute(select(*cols).order_by(outbox_t.c.id))]
    return await _run(url, read)


async def _schema(url: str) -> tuple[set[str], set[str], list[Any], str | None]:
    async def read(conn: Any) -> tuple[set[str], set[str], list[Any], str | None]:
        tables = await conn.run_sync(_tables)
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        return tables, await conn.run_sync(_outbox_columns), await conn.run_sync(_drift), revision
    return await _run(url, read)


async def _insert_v2_events(url: str) -> None:
    """Events as a 0002 service wrote them: nothing relayed them (one, oddly, says it was)."""
    def event(chain: str, seq: int, type_: str, version: int | None,
              relayed_at: datetime | None = None) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "chain": chain, "sequence": seq, "type": type_,
                "model": f"legacy-{chain[-1]}", "version": version, "actor": "alice",
                "request_id": f"req-{seq}", "at": datetime(2021, 6, 1, 12, seq, tzinfo=UTC),
                "data": {"seq": seq}, "relayed_at": relayed_at}

    rows = [event("model:9001", 1, "model.created", None),
            event("model:9001", 2, "model_version.created", 1),
            event("model:9001", 3, "model_version.stage_changed", 1),
            event("model:9002", 1, "model.created", None, relayed_at=LONG_AGO)]

    async def write(conn: Any) -> None:
        await conn.execute(insert(outbox_t), rows)
        await conn.commit()
    await _run(url, write)


def _container(url: str, tmp_path: Path) -> Container:
    return build(Settings.from_env({"REGISTRY_DATABASE_URL": url, "REGISTRY_DATA_DIR": str(tmp_path),
                                    "REGISTRY_LOG_FORMAT": "json"}))


async def _any_url(url: str) -> None:
    """URL safety is not under test here."""


async def _subscribe(c: Container) -> int:
    made = await webhooks.create_webhook(
        CreateWebhook(url="https://hooks.example/in", event_types=["*"]),
        WebhookTools(check_url=_any_url, cipher=c.cipher), c.uow(ALICE))
    return made.record.id


async def _deliveries(c: Container) -> list[tuple[str, str]]:
    async with reader(c.engine).connect() as conn:
        rows = await conn.execute(select(outbox_t.c.type, deliveries_t.c.target)
                                  .join(outbox_t, outbox_t.c.id == deliveries_t.c.outbox_id))
        return sorted((r.type, r.target) for r in rows)


async def test_upgrading_marks_existing_events_relayed_and_the_relay_sends_no_history(
    url: str, tmp_path: Path,
) -> None:
    await asyncio.to_thread(migrate.upgrade, url, "0002")
    await _insert_v2_events(url)
    before = await _events(url)
    assert [e["relayed_at"] for e in before] == [None, None, None, LONG_AGO]

    await asyncio.to_thread(migrate.upgrade, url)

    after = await _events(url)
    assert [{k: v for k, v in e.items() if k != "relayed_at"} for e in after] == [
        {k: v for k, v in e.items() if k != "relayed_at"} for e in before]
    assert all(e["relayed_at"] is not None for e in after)
    assert after[-1]["relayed_at"] == LONG_AGO, "an event already relayed keeps its time"
    tables, columns, drift, _ = await _schema(url)
    assert NEW_TABLES <= tables and "target" in columns
    assert drift == [], f"tables.py and the migrations disagree: {drift}"

    c = _container(url, tmp_path)
    try:
        sub = await _subscribe(c)
        assert (await c.outbox.relay())[0] == 0
        assert await _deliveries(c) == []
        await new_model(c)  # the first event after the upgrade is the first one sent
        assert (await c.outbox.relay())[0] == 1
        assert await _deliveries(c) == [("model.created", f"webhook:{sub}")]
    finally:
        await c.close()
    assert len(await _events(url)) == len(before) + 1


async def test_downgrade_to_0002_with_webhook_data_and_upgrade_again(url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate.upgrade, url)
    head = (await _schema(url))[3]
    c = _container(url, tmp_path)
    try:
        sub = await _subscribe(c)
        name = await new_model(c)
        await register(c, name)
        await webhooks.ping_webhook(sub, c.uow(ALICE))  # an event with no model
        assert (await c.outbox.relay())[0] == 3
        [job] = await c.outbox.claim(1, 60, 600)
        await c.outbox.finish(job, ok=True, status=200, latency_ms=1.0, error=None, retry_after=None,
                              schedule=(0,), disable_after=None)
        async with reader(c.engine).connect() as conn:
            assert len(list(await conn.execute(select(lineage_t.c.id)))) == 1
    finally:
        await c.close()
    model_events = [e for e in await _events(url) if e["model"] is not None]
    assert [e["type"] for e in model_events] == ["model.created", "model_version.created"]

    await asyncio.to_thread(migrate.downgrade, url, "0002")
    tables, columns, _, revision = await _schema(url)
    assert revision == "0002"
    assert not tables & NEW_TABLES, f"downgrade left {tables & NEW_TABLES}"
    assert "target" not in columns
    assert [e["event_id"] for e in await _events(url)] == [e["event_id"] for e in model_events]

    await asyncio.to_thread(migrate.upgrade, url)
    tables, columns, drift, revision = await _schema(url)
    assert revision == head and NEW_TABLES <= tables and "target" in columns
    assert drift == [], f"tables.py and the migrations disagree after a round trip: {drift}"
    kept = await _events(url)
    assert [e["event_id"] for e in kept] == [e["event_id"] for e in model_events]
    assert all(e["relayed_at"] is not None for e in kept)

    c = _container(url, tmp_path)
    try:
        await register(c, name)
        await webhooks.ping_webhook(await _subscribe(c), c.uow(ALICE))
        assert (await c.outbox.relay())[0] == 2
        assert [t for t, _ in await _deliveries(c)] == ["model_version.created", "webhook.ping"]
    finally:
        await c.close()
