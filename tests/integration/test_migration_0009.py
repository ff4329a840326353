"""Revision 0009 (``comments``, ``ui_sessions``) on a database that already holds data: the upgrade
from 0008 keeps it, the new tables' foreign keys cascade (a deleted model takes its comments, a
deleted transition request its comments, a deleted token its sessions), and the downgrade drops the
two tables and nothing else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, text

from registry.adapters.db import migrate
from registry.adapters.db.tables import (
    comments_t,
    models_t,
    principals_t,
    requests_t,
    sessions_t,
    tokens_t,
    versions_t,
)
from tests.integration.migration_helpers import drift, on_connection, tables

AT = datetime(2026, 1, 1, tzinfo=UTC)


async def _seed_0008(conn: Any) -> None:
    """A model with one version and a transition request, and a token: what 0009 must keep."""
    model_id = (await conn.execute(insert(models_t).values(
        name="fraud", description="", tags={}, last_version=1, created_at=AT, updated_at=AT,
        created_by="alice").returning(models_t.c.id))).scalar_one()
    await conn.execute(insert(versions_t).values(
        model_id=model_id, version=1, stage="none", source="s3://m", description="", tags={}, metrics={},
        inputs=[], revision=1, created_at=AT, updated_at=AT, created_by="alice"))
    await conn.execute(insert(requests_t).values(
        model_id=model_id, version=1, to_stage="staging", state="pending", requested_by="alice",
        requester_principal="alice", approvals=[], created_at=AT, updated_at=AT))
    principal_id = (await conn.execute(insert(principals_t).values(
        name="alice", created_at=AT).returning(principals_t.c.id))).scalar_one()
    await conn.execute(insert(tokens_t).values(
        principal_id=principal_id, name="alice", prefix="mrt_abc", secret_hash="a" * 64, role="editor",
        created_at=AT))
    await conn.commit()


async def _counts(conn: Any) -> dict[str, int]:
    found = {}
    for table in (models_t, versions_t, requests_t, tokens_t):
        found[table.name] = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    return found


async def _revision(conn: Any) -> str:
    return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()


async def test_0009_adds_two_tables_whose_rows_go_with_their_parents_and_downgrades_cleanly(url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, url, "0008")
    await on_connection(url, _seed_0008)
    before = await on_connection(url, _counts)

    await asyncio.to_thread(migrate.upgrade, url, "0009")

    assert await on_connection(url, _counts) == before
    assert {"comments", "ui_sessions"} <= await on_connection(url, lambda c: c.run_sync(tables))

    async def write_and_cascade(conn: Any) -> dict[str, Any]:
        model_id = (await conn.execute(select(models_t.c.id))).scalar_one()
        request_id = (await conn.execute(select(requests_t.c.id))).scalar_one()
        token_id = (await conn.execute(select(tokens_t.c.id))).scalar_one()
        for rid in (None, request_id):
            await conn.execute(insert(comments_t).values(
                model_id=model_id, version=1, request_id=rid, author="alice", body="hi", created_at=AT))
        await conn.execute(insert(sessions_t).values(
            secret_hash="b" * 64, token_id=token_id, csrf_token="c" * 64, created_at=AT,
            expires_at=AT + timedelta(hours=8)))
        stamps = (await conn.execute(select(comments_t.c.created_at, comments_t.c.updated_at,
                                            comments_t.c.deleted_at))).first()
        await conn.execute(delete(requests_t).where(requests_t.c.id == request_id))
        after_request = (await conn.execute(select(comments_t.c.request_id))).scalars().all()
        await conn.execute(delete(tokens_t).where(tokens_t.c.id == token_id))
        sessions = (await conn.execute(select(func.count()).select_from(sessions_t))).scalar_one()
        await conn.execute(delete(models_t).where(models_t.c.id == model_id))
        left = (await conn.execute(select(func.count()).select_from(comments_t))).scalar_one()
        return {"stamps": tuple(stamps), "after_request": after_request, "sessions": sessions, "left": left}

    found = await on_connection(url, write_and_cascade)  # rolled back afterwards
    assert found["stamps"] == (AT, None, None), "timestamps come back as aware UTC"
    assert found["after_request"] == [None], "the request's comment went with it, the version's stayed"
    assert (found["sessions"], found["left"]) == (0, 0)

    await asyncio.to_thread(migrate.downgrade, url, "0008")

    assert await on_connection(url, _revision) == "0008"
    assert not {"comments", "ui_sessions"} & await on_connection(url, lambda c: c.run_sync(tables))
    assert await on_connection(url, _counts) == before

    await asyncio.to_thread(migrate.upgrade, url)
    assert await on_connection(url, lambda c: c.run_sync(drift)) == []
