"""Revision 0004 (checks, stage policies, transition requests, idempotency keys, ``stage_since``)
on a database that already holds versions: each version's ``stage_since`` is backfilled from its
``updated_at`` (never longer than the truth, so a time-in-staging gate errs on the safe side);
it downgrades to 0003 with gate data present and upgrades again to the declared schema. The
partial unique index allows one open (pending or approved) request per move, any number of
closed ones, on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from registry.adapters.db import migrate
from registry.adapters.db.tables import (
    chains_t,
    checks_t,
    idempotency_t,
    models_t,
    policies_t,
    requests_t,
    versions_t,
)
from registry.bootstrap import Container, build
from registry.config import Settings
from registry.services import approvals, checks, gates, policies
from registry.services.commands import ReportCheck, RequestTransition, SetPolicy
from tests.integration.helpers import ALICE, BOB, model_id, move, new_model, register, stages
from tests.integration.migration_helpers import drift as _drift
from tests.integration.migration_helpers import on_connection as _run
from tests.integration.migration_helpers import tables as _tables
from tests.integration.migration_helpers import version_columns

NEW_TABLES = {"version_checks", "stage_policies", "transition_requests", "idempotency_keys"}
GENESIS = "0" * 64
HEAD = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()


def legacy_versions(now: datetime) -> list[tuple[int, str, datetime]]:
    """(version, stage, updated_at) as a 0003 service left them, as of ``now``."""
    return [
        (1, "staging", now - timedelta(hours=2)),     # long in staging
        (2, "staging", now - timedelta(seconds=30)),  # just arrived (or just edited)
        (3, "production", datetime(2021, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)),
        (4, "none", datetime(2022, 1, 1, tzinfo=UTC)),
        (5, "archived", datetime(2021, 1, 1, tzinfo=UTC)),
    ]


def _open_request_index(conn: Connection) -> dict[str, Any] | None:
    found = [ix for ix in inspect(conn).get_indexes("transition_requests")
             if ix["name"] == "uq_transition_requests_open"]
    return found[0] if found else None


async def _schema(url: str) -> tuple[set[str], set[str], list[Any], str | None]:
    """Tables, model_versions' columns, drift against tables.py, and the revision."""
    async def read(conn: Any) -> tuple[set[str], set[str], list[Any], str | None]:
        tables = await conn.run_sync(_tables)
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        columns = await conn.run_sync(version_columns)
        drift = await conn.run_sync(_drift) if revision == HEAD else []
        return tables, columns, drift, revision
    return await _run(url, read)


async def _versions(url: str, *, with_stage_since: bool = True) -> dict[int, dict[str, Any]]:
    """{version: row} for every version of every model, read straight from the table."""
    cols = [versions_t.c.version, versions_t.c.stage, versions_t.c.updated_at]
    if with_stage_since:
        cols.append(versions_t.c.stage_since)

    async def read(conn: Any) -> dict[int, dict[str, Any]]:
        rows = await conn.execute(select(*cols).order_by(versions_t.c.version))
        return {r.version: r._asdict() for r in rows}
    return await _run(url, read)


async def _insert_v3_model(url: str, name: str, legacy: list[tuple[int, str, datetime]]) -> None:
    """A model as a 0003 service wrote it: its row, its audit chain head, and versions in every
    stage, each last changed at its own time (model_versions had no ``stage_since`` then)."""
    async def write(conn: Any) -> None:
        created = datetime(2020, 5, 5, tzinfo=UTC)
        mid = (await conn.execute(insert(models_t).values(
            name=name, description="", tags={}, last_version=len(legacy),
            created_at=created, updated_at=created, created_by="alice",
        ).returning(models_t.c.id))).scalar_one()
        await conn.execute(insert(chains_t).values(
            id=f"model:{mid}", model_id=mid, model_name=name, audit_seq=0, audit_hash=GENESIS,
            event_seq=0, created_at=created))
        await conn.execute(insert(versions_t), [
            {"model_id": mid, "version": v, "stage": stage, "source": f"s3://b/{name}/{v}",
             "run_id": None, "description": "", "tags": {}, "metrics": {}, "inputs": [],
             "revision": 2, "left_production_seq": None, "created_at": created,
             "updated_at": updated, "created_by": "alice"}
            for v, stage, updated in legacy])
        await conn.commit()
    await _run(url, write)


def _container(url: str, tmp_path: Path, **env: str) -> Container:
    return build(Settings.from_env({"REGISTRY_DATABASE_URL": url, "REGISTRY_DATA_DIR": str(tmp_path),
                                    "REGISTRY_LOG_FORMAT": "json", **env}))


def _result(assessment: Any, gate: str) -> Any:
    [found] = [r for r in assessment.results if r.gate == gate]
    return found


async def test_upgrading_backfills_stage_since_from_updated_at(url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate.upgrade, url, "0003")
    tables, columns, _, revision = await _schema(url)
    assert revision == "0003" and not tables & NEW_TABLES and "stage_since" not in columns
    legacy = legacy_versions(datetime.now(UTC))
    await _insert_v3_model(url, "legacy", legacy)
    before = await _versions(url, with_stage_since=False)

    await asyncio.to_thread(migrate.upgrade, url)

    tables, columns, drift, revision = await _schema(url)
    assert revision == HEAD
    assert NEW_TABLES <= tables and "stage_since" in columns
    assert drift == [], f"tables.py and the migrations disagree: {drift}"
    after = await _versions(url)
    assert {v: (r["stage"], r["updated_at"]) for v, r in after.items()} == {
        v: (r["stage"], r["updated_at"]) for v, r in before.items()}, "the upgrade changed versions"
    assert {v: r["stage_since"] for v, r in after.items()} == {
        v: updated for v, _, updated in legacy}
    assert after[3]["stage_since"] == datetime(2021, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


async def test_the_backfilled_stage_since_drives_the_time_in_staging_gate(
    url: str, tmp_path: Path,
) -> None:
    """The service reads what the upgrade wrote: two hours in staging pass a one-hour rule,
    thirty seconds do not; a promotion afterwards restarts the clock of the version it moves."""
    started = datetime.now(UTC)
    legacy = legacy_versions(started)
    await asyncio.to_thread(migrate.upgrade, url, "0003")
    await _insert_v3_model(url, "legacy", legacy)
    await asyncio.to_thread(migrate.upgrade, url)

    c = _container(url, tmp_path,
                   REGISTRY_DEFAULT_POLICIES='{"production": {"min_staging_seconds": 3600}}')
    try:
        long_ago = await gates.check_gates("legacy", 1, "production", None, c.uow(ALICE, write=False))
        recent = await gates.check_gates("legacy", 2, "production", None, c.uow(ALICE, write=False))
        assert long_ago.allowed and _result(long_ago, "min_staging_time").passed
        assert not recent.allowed and not _result(recent, "min_staging_time").passed
        spent = int(_result(recent, "min_staging_time").detail.split()[3])
        assert 30 <= spent < 3600, _result(recent, "min_staging_time").detail

        done = await move(c, "legacy", 1, "production")
        assert done.transition.archived == [3]
        assert await stages(c, "legacy") == {1: "production", 2: "staging", 3: "archived",
                                              4: "none", 5: "archived"}
    finally:
        await c.close()
    rows = await _versions(url)
    for v in (1, 3):
        assert rows[v]["stage_since"] == rows[v]["updated_at"] > started, rows[v]
    assert rows[2]["stage_since"] == legacy[1][2], "an untouched version keeps its time"


async def _delete_newest_version(url: str) -> int:
    async def write(conn: Any) -> int:
        newest = (await conn.execute(select(versions_t.c.id).order_by(versions_t.c.id.desc())
                                     .limit(1))).scalar_one()
        await conn.execute(versions_t.delete().where(versions_t.c.id == newest))
        await conn.commit()
        return newest
    return await _run(url, write)


async def _version_row_id(url: str, version: int) -> int:
    async def read(conn: Any) -> int:
        return (await conn.execute(select(versions_t.c.id)
                                   .where(versions_t.c.version == version))).scalar_one()
    return await _run(url, read)


async def test_downgrade_to_0003_with_gate_data_and_upgrade_again(url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(migrate.upgrade, url)
    c = _container(url, tmp_path)
    try:
        name = await new_model(c)
        await register(c, name, count=2)
        await move(c, name, 1, "staging")
        await checks.report_check(ReportCheck(name, 1, "ci", "success"), c.uow(ALICE))
        await policies.set_policy(SetPolicy(name, "production", {"required_approvals": 1}),
                                  c.uow(ALICE))
        await approvals.request_transition(RequestTransition(name, 1, "production"), c.uow(BOB))
        mid = await model_id(c, name)
        async with c.engine.begin() as conn:
            await conn.execute(insert(idempotency_t).values(
                key_hash="k" * 64, fingerprint="f" * 64, status=200, headers={}, body="{}",
                created_at=datetime.now(UTC)))
    finally:
        await c.close()
    kept = await _versions(url)
    assert {v: r["stage"] for v, r in kept.items()} == {1: "staging", 2: "none"}

    await asyncio.to_thread(migrate.downgrade, url, "0003")
    tables, columns, _, revision = await _schema(url)
    assert revision == "0003"
    assert not tables & NEW_TABLES, f"downgrade left {tables & NEW_TABLES}"
    assert "stage_since" not in columns
    assert await _versions(url, with_stage_since=False) == {
        v: {k: x for k, x in r.items() if k != "stage_since"} for v, r in kept.items()}
    # The newest version row goes (by hand), so a table that lost AUTOINCREMENT in the rebuild
    # would hand its id out again.
    last_id = await _delete_newest_version(url)

    await asyncio.to_thread(migrate.upgrade, url)
    tables, columns, drift, revision = await _schema(url)
    assert revision == HEAD and NEW_TABLES <= tables and "stage_since" in columns
    assert drift == [], f"tables.py and the migrations disagree after a round trip: {drift}"
    again = await _versions(url)
    assert all(r["stage_since"] == r["updated_at"] for r in again.values()), again

    async def count(conn: Any) -> list[int]:
        return [(await conn.execute(select(text("count(*)")).select_from(t))).scalar_one()
                for t in (checks_t, policies_t, requests_t, idempotency_t)]
    assert await _run(url, count) == [0, 0, 0, 0], "a downgrade drops the gate data"

    # The service works on the round-tripped schema: a request for the same move opens again.
    c = _container(url, tmp_path)
    try:
        request = await approvals.request_transition(RequestTransition(name, 1, "production"),
                                                     c.uow(BOB))
        assert request.state == "pending" and request.model_id == mid
        [made] = await register(c, name)
    finally:
        await c.close()
    assert made.version == 3, "version numbers come from the model's counter"
    assert await _version_row_id(url, 3) > last_id, "a version row id was reused"


async def test_the_open_request_index_is_unique_and_partial_after_upgrade(url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, url)
    index = await _run(url, lambda conn: conn.run_sync(_open_request_index))
    assert index is not None and index["unique"], index
    assert index["column_names"] == ["model_id", "version", "to_stage"]
    where = {k: str(v) for k, v in index.get("dialect_options", {}).items() if k.endswith("_where")}
    assert where and all("pending" in w and "approved" in w for w in where.values()), index


# -- the partial unique index, written to directly (bypassing the service's own check) ----------


async def _add_request(c: Container, mid: int, version: int, to_stage: str, state: str) -> None:
    now = datetime.now(UTC)
    async with c.engine.begin() as conn:
        await conn.execute(insert(requests_t).values(
            model_id=mid, version=version, to_stage=to_stage, state=state, requested_by="bob",
            requester_principal="bob", comment=None, approvals=[], decided_by=None,
            decision_comment=None, created_at=now, updated_at=now))


async def _requests(c: Container, mid: int) -> list[tuple[int, str, str]]:
    async with c.engine.connect() as conn:
        rows = await conn.execute(select(requests_t.c.version, requests_t.c.to_stage,
                                         requests_t.c.state)
                                  .where(requests_t.c.model_id == mid).order_by(requests_t.c.id))
        found = [tuple(r) for r in rows]
        await conn.rollback()
        return found


@pytest.mark.parametrize("first, second", [("pending", "pending"), ("pending", "approved"),
                                           ("approved", "pending"), ("approved", "approved")])
async def test_two_open_requests_for_the_same_move_are_refused_by_the_database(
    container: Container, first: str, second: str,
) -> None:
    name = await new_model(container)
    await register(container, name)
    mid = await model_id(container, name)
    await _add_request(container, mid, 1, "staging", first)

    with pytest.raises(IntegrityError):
        await _add_request(container, mid, 1, "staging", second)

    assert await _requests(container, mid) == [(1, "staging", first)]


async def test_closed_requests_do_not_count_against_an_open_one(container: Container) -> None:
    name = await new_model(container)
    await register(container, name, count=2)
    mid = await model_id(container, name)
    for state in ("applied", "rejected", "cancelled", "applied"):
        await _add_request(container, mid, 1, "staging", state)
    await _add_request(container, mid, 1, "staging", "pending")
    # Another target, another version, another model: other moves, each open once.
    await _add_request(container, mid, 1, "archived", "pending")
    await _add_request(container, mid, 2, "staging", "approved")
    other = await new_model(container)
    await register(container, other)
    other_id = await model_id(container, other)
    await _add_request(container, other_id, 1, "staging", "pending")

    assert await _requests(container, mid) == [
        (1, "staging", "applied"), (1, "staging", "rejected"), (1, "staging", "cancelled"),
        (1, "staging", "applied"), (1, "staging", "pending"), (1, "archived", "pending"),
        (2, "staging", "approved")]
    with pytest.raises(IntegrityError):  # the one open request still holds its place
        await _add_request(container, mid, 1, "staging", "approved")


async def test_closing_the_open_request_makes_room_for_a_new_one(container: Container) -> None:
    name = await new_model(container)
    await register(container, name)
    mid = await model_id(container, name)
    await _add_request(container, mid, 1, "staging", "pending")
    async with container.engine.begin() as conn:
        await conn.execute(requests_t.update().where(requests_t.c.model_id == mid)
                           .values(state="cancelled"))
    await _add_request(container, mid, 1, "staging", "pending")
    assert await _requests(container, mid) == [(1, "staging", "cancelled"), (1, "staging", "pending")]
    async with container.engine.begin() as conn:  # reopening the closed one collides again
        with pytest.raises(IntegrityError):
            await conn.execute(requests_t.update().where(requests_t.c.model_id == mid,
                                                         requests_t.c.state == "cancelled")
                               .values(state="approved"))
