"""Revision 0005 (artifact files, presigned uploads, ``sealed_at`` and ``manifest_digest``) on a
database that already holds versions: every version that ever left ``none`` (past it now, or
withdrawn back: a ``model_version.stage_changed`` entry in its model's chain) is sealed as holding no
files (``sealed_at`` = its ``updated_at``, the empty manifest's digest), one that never moved stays open;
the new tables refuse a second row for a (version, path) and go with their version; a file's row
names its storage key (NOT NULL); the downgrade
to 0004 drops them (SQLite keeps AUTOINCREMENT on the rebuilt model_versions) and upgrading again
gives the declared schema. Then the repository's artifact and upload queries, on both backends:
paths order by code point (COLLATE "C" on PostgreSQL), pages, replacement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import delete, insert, inspect, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from registry.adapters.db import migrate
from registry.adapters.db.tables import (
    artifacts_t,
    audit_t,
    chains_t,
    models_t,
    uploads_t,
    versions_t,
)
from registry.bootstrap import Container
from registry.domain.artifacts import Artifact, Manifest
from registry.services.audit import canonical, chain_hash, rfc3339
from registry.services.ports import UploadRecord
from tests.integration.helpers import ALICE, model_id, new_model, register
from tests.integration.migration_helpers import drift as _drift
from tests.integration.migration_helpers import on_connection as _run
from tests.integration.migration_helpers import tables as _tables
from tests.integration.migration_helpers import version_columns

# Later revisions leave these tables alone; the schema is compared with tables.py at the head.
HEAD = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
NEW_TABLES = {"artifacts", "artifact_uploads"}
NEW_COLUMNS = {"sealed_at", "manifest_digest"}
EMPTY_MANIFEST = "sha256:602e35a92eec4bc0a2ec6ae113f07bfc6933322fb69fe8dee416e5a67217e2a2"
GENESIS = "0" * 64
SHA_A, SHA_B = "a" * 64, "b" * 64
LEGACY = [  # (version, stage, updated_at) as a 0004 service left them
    (1, "none", datetime(2022, 1, 1, 1, 2, 3, 456789, tzinfo=UTC)),
    (2, "staging", datetime(2023, 2, 2, tzinfo=UTC)),
    (3, "production", datetime(2021, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)),
    (4, "archived", datetime(2021, 1, 1, tzinfo=UTC)),
]


def _uniques(conn: Connection) -> dict[str, list[list[str]]]:
    return {t: [u["column_names"] for u in inspect(conn).get_unique_constraints(t)] for t in NEW_TABLES}


def _path_collations(conn: Connection) -> dict[str, str | None]:
    return {t: getattr(c["type"], "collation", None)
            for t in NEW_TABLES for c in inspect(conn).get_columns(t) if c["name"] == "path"}


def _cascades(conn: Connection) -> dict[str, list[tuple[str, list[str], str | None]]]:
    return {t: [(fk["referred_table"], fk["constrained_columns"], fk["options"].get("ondelete"))
                for fk in inspect(conn).get_foreign_keys(t)] for t in NEW_TABLES}


async def _schema(url: str) -> tuple[set[str], set[str], list[Any], str | None]:
    """Tables, model_versions' columns, drift against tables.py (at the head), and the revision."""
    async def read(conn: Any) -> tuple[set[str], set[str], list[Any], str | None]:
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        return (await conn.run_sync(_tables), await conn.run_sync(version_columns),
                await conn.run_sync(_drift) if revision == HEAD else [], revision)
    return await _run(url, read)


async def _upgrade(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate.upgrade, url, revision)


async def _insert_v4_model(url: str, name: str) -> int:
    """A model as a 0004 service wrote it, with a version in every stage; returns its id."""
    async def write(conn: Any) -> int:
        created = datetime(2020, 5, 5, tzinfo=UTC)
        mid = (await conn.execute(insert(models_t).values(
            name=name, description="", tags={}, last_version=len(LEGACY),
            created_at=created, updated_at=created, created_by="alice",
        ).returning(models_t.c.id))).scalar_one()
        await conn.execute(insert(chains_t).values(
            id=f"model:{mid}", model_id=mid, model_name=name, audit_seq=0, audit_hash=GENESIS,
            event_seq=0, created_at=created))
        await conn.execute(insert(versions_t), [
            {"model_id": mid, "version": v, "stage": stage, "source": f"s3://b/{name}/{v}",
             "run_id": None, "description": "", "tags": {}, "metrics": {}, "inputs": [],
             "revision": 2, "left_production_seq": None, "stage_since": updated,
             "created_at": created, "updated_at": updated, "created_by": "alice"}
            for v, stage, updated in LEGACY])
        await conn.commit()
        return mid
    return await _run(url, write)


async def _versions(url: str, *, sealed: bool = True) -> dict[int, dict[str, Any]]:
    cols = [versions_t.c.id, versions_t.c.version, versions_t.c.stage, versions_t.c.updated_at]
    if sealed:
        cols += [versions_t.c.sealed_at, versions_t.c.manifest_digest]

    async def read(conn: Any) -> dict[int, dict[str, Any]]:
        rows = await conn.execute(select(*cols).order_by(versions_t.c.version))
        return {r.version: r._asdict() for r in rows}
    return await _run(url, read)


def _file_row(version_id: int, path: str, sha: str = SHA_A) -> dict[str, Any]:
    return {"version_id": version_id, "path": path, "size": 3, "sha256": sha,
            "key": f"1/{version_id}/{sha[:32]}/{path}",
            "uploaded_at": datetime(2026, 1, 1, tzinfo=UTC), "uploaded_by": "alice"}


def _upload_row(version_id: int, path: str, sha: str = SHA_A) -> dict[str, Any]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return {"version_id": version_id, "path": path, "size": 3, "sha256": sha,
            "key": f".uploads/{sha[:32]}", "created_at": at, "created_by": "alice",
            "expires_at": at + timedelta(hours=1)}


async def _insert(url: str, table: Any, *rows: dict[str, Any]) -> None:
    async def write(conn: Any) -> None:
        await conn.execute(insert(table), list(rows))
        await conn.commit()
    await _run(url, write)


async def _count(url: str, table: Any) -> int:
    async def read(conn: Any) -> int:
        return (await conn.execute(select(text("count(*)")).select_from(table))).scalar_one()
    return await _run(url, read)


# -- the migration ----------------------------------------------------------------------------


async def test_upgrading_seals_the_versions_past_none_as_empty(url: str) -> None:
    assert Manifest.of([]).digest == EMPTY_MANIFEST, "the migration's constant is the domain's"
    await _upgrade(url, "0004")
    tables, columns, _, revision = await _schema(url)
    assert revision == "0004" and not tables & NEW_TABLES and not columns & NEW_COLUMNS
    await _insert_v4_model(url, "legacy")
    before = await _versions(url, sealed=False)

    await _upgrade(url)

    tables, columns, drift, revision = await _schema(url)
    assert revision == HEAD and NEW_TABLES <= tables and NEW_COLUMNS <= columns
    assert drift == [], f"tables.py and the migrations disagree: {drift}"
    after = await _versions(url)
    assert {v: {k: x for k, x in r.items() if k not in NEW_COLUMNS} for v, r in after.items()} \
        == before, "the upgrade changed versions"
    assert {v: (r["sealed_at"], r["manifest_digest"]) for v, r in after.items()} == {
        1: (None, None),
        2: (datetime(2023, 2, 2, tzinfo=UTC), EMPTY_MANIFEST),
        3: (datetime(2021, 3, 4, 5, 6, 7, 890123, tzinfo=UTC), EMPTY_MANIFEST),
        4: (datetime(2021, 1, 1, tzinfo=UTC), EMPTY_MANIFEST),
    }
    assert await _count(url, artifacts_t) == 0 and await _count(url, uploads_t) == 0


async def test_the_new_tables_hold_one_row_per_path_and_go_with_their_version(
    url: str, backend: str,
) -> None:
    await _upgrade(url, "0004")
    mid = await _insert_v4_model(url, "legacy")
    await _upgrade(url)
    ids = {v: r["id"] for v, r in (await _versions(url)).items()}
    assert await _run(url, lambda conn: conn.run_sync(_uniques)) == {
        "artifacts": [["version_id", "path"]], "artifact_uploads": [["version_id", "path"]]}
    assert await _run(url, lambda conn: conn.run_sync(_cascades)) == {
        "artifacts": [("model_versions", ["version_id"], "CASCADE")],
        "artifact_uploads": [("model_versions", ["version_id"], "CASCADE")]}

    # Paths order bytewise (code point order) whatever the database's default collation is (the
    # test server's may well be C already, so the column itself is checked).
    assert await _run(url, lambda conn: conn.run_sync(_path_collations)) == dict.fromkeys(
        NEW_TABLES, "C" if backend == "postgresql" else None)

    for table, row in ((artifacts_t, _file_row), (uploads_t, _upload_row)):
        # The same path in another version, and paths differing only in case, are other rows.
        await _insert(url, table, row(ids[1], "model.onnx"), row(ids[1], "Model.onnx"),
                      row(ids[2], "model.onnx"), row(ids[3], "x"))
        with pytest.raises(IntegrityError):
            await _insert(url, table, row(ids[1], "model.onnx", SHA_B))
        assert await _count(url, table) == 4

    async def delete_version(conn: Any) -> None:
        await conn.execute(delete(versions_t).where(versions_t.c.id == ids[1]))
        await conn.commit()
    await _run(url, delete_version)
    for table in (artifacts_t, uploads_t):
        async def left(conn: Any, table: Any = table) -> list[tuple[int, str]]:
            rows = await conn.execute(select(table.c.version_id, table.c.path)
                                      .order_by(table.c.version_id))
            return [tuple(r) for r in rows]
        assert await _run(url, left) == [(ids[2], "model.onnx"), (ids[3], "x")], table.name

    async def delete_model(conn: Any) -> None:  # model -> versions -> files, uploads
        await conn.execute(delete(models_t).where(models_t.c.id == mid))
        await conn.commit()
    await _run(url, delete_model)
    assert await _count(url, artifacts_t) == 0 and await _count(url, uploads_t) == 0


def _key_column(conn: Connection) -> tuple[bool, int | None]:
    [col] = [c for c in inspect(conn).get_columns("artifacts") if c["name"] == "key"]
    return col["nullable"], getattr(col["type"], "length", None)


async def test_a_file_row_must_name_its_storage_key(url: str) -> None:
    """Every write of a file has a key of its own, which the row names: ``key`` is NOT NULL."""
    await _upgrade(url, "0004")
    await _insert_v4_model(url, "legacy")
    await _upgrade(url)
    ids = {v: r["id"] for v, r in (await _versions(url)).items()}
    assert await _run(url, lambda conn: conn.run_sync(_key_column)) == (False, 1200)

    without_key = {k: v for k, v in _file_row(ids[1], "a.bin").items() if k != "key"}
    with pytest.raises(IntegrityError):
        await _insert(url, artifacts_t, without_key)
    with pytest.raises(IntegrityError):
        await _insert(url, artifacts_t, {**without_key, "key": None})
    longest = "1/1/" + "k" * 32 + "/" + "p" * 1163  # 1200 characters
    await _insert(url, artifacts_t, {**without_key, "key": longest})

    async def keys(conn: Any) -> list[str]:
        return list((await conn.execute(select(artifacts_t.c.key))).scalars())
    assert await _run(url, keys) == [longest]


def _sqlite_autoincrement(conn: Connection) -> bool:
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'model_versions'").scalar()
    return "AUTOINCREMENT" in (sql or "")


async def test_downgrade_to_0004_with_files_present_and_upgrade_again(
    url: str, backend: str, tmp_path: Path,
) -> None:
    await _upgrade(url, "0004")
    await _insert_v4_model(url, "legacy")
    await _upgrade(url)
    ids = {v: r["id"] for v, r in (await _versions(url)).items()}
    await _insert(url, artifacts_t, _file_row(ids[1], "a.bin"), _file_row(ids[2], "b.bin"))
    await _insert(url, uploads_t, _upload_row(ids[1], "c.bin"))
    kept = await _versions(url, sealed=False)

    await asyncio.to_thread(migrate.downgrade, url, "0004")

    tables, columns, _, revision = await _schema(url)
    assert revision == "0004"
    assert not tables & NEW_TABLES, f"downgrade left {tables & NEW_TABLES}"
    assert not columns & NEW_COLUMNS
    assert await _versions(url, sealed=False) == kept, "the downgrade changed versions"
    if backend == "sqlite":
        assert await _run(url, lambda conn: conn.run_sync(_sqlite_autoincrement)), \
            "the rebuilt model_versions lost AUTOINCREMENT"

    # The newest version row goes, so a table without AUTOINCREMENT would hand its id out again.
    async def drop_newest(conn: Any) -> None:
        await conn.execute(delete(versions_t).where(versions_t.c.id == ids[4]))
        await conn.commit()
    await _run(url, drop_newest)

    await _upgrade(url)
    tables, columns, drift, revision = await _schema(url)
    assert revision == HEAD and NEW_TABLES <= tables and NEW_COLUMNS <= columns
    assert drift == [], f"tables.py and the migrations disagree after a round trip: {drift}"
    again = await _versions(url)
    assert {v: (r["sealed_at"] is not None, r["manifest_digest"]) for v, r in again.items()} == {
        1: (False, None), 2: (True, EMPTY_MANIFEST), 3: (True, EMPTY_MANIFEST)}
    assert await _count(url, artifacts_t) == 0 and await _count(url, uploads_t) == 0

    async def add_version(conn: Any) -> int:
        mid = (await conn.execute(select(models_t.c.id))).scalar_one()
        now = datetime.now(UTC)
        new_id = (await conn.execute(insert(versions_t).values(
            model_id=mid, version=5, stage="none", source="s3://b/5", description="", tags={},
            metrics={}, inputs=[], revision=1, stage_since=now, created_at=now, updated_at=now,
            created_by="alice").returning(versions_t.c.id))).scalar_one()
        await conn.execute(insert(artifacts_t).values(**_file_row(new_id, "a.bin")))
        await conn.commit()
        return new_id
    assert await _run(url, add_version) > ids[4], "a version row id was reused"


# -- the repository's queries -----------------------------------------------------------------


async def _version_ids(c: Container, name: str, count: int = 2) -> list[int]:
    await register(c, name, count=count)
    mid = await model_id(c, name)
    async with c.engine.connect() as conn:
        rows = await conn.execute(select(versions_t.c.id).where(versions_t.c.model_id == mid)
                                  .order_by(versions_t.c.version))
        found = [r.id for r in rows]
        await conn.rollback()
    return found


def _artifact(path: str, sha: str = SHA_A, size: int = 3, by: str = "alice",
              key: str | None = None) -> Artifact:
    return Artifact(path, size, sha, datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=UTC), by,
                    key or f"9/1/{sha[:32]}/{path}")


async def test_put_artifact_inserts_then_replaces(container: Container) -> None:
    """Replacing a file replaces its row's key too: the new write's own key (the bytes of the
    old one are removed by the service after the commit)."""
    v1, v2 = await _version_ids(container, await new_model(container))
    first = _artifact("m.bin", key="5/1/" + "1" * 32 + "/m.bin")
    second = _artifact("m.bin", SHA_B, 99, "bob", key="5/1/" + "2" * 32 + "/m.bin")
    async with container.uow(ALICE) as uow:
        await uow.repo.put_artifact(v1, first)
        await uow.repo.put_artifact(v2, _artifact("m.bin"))
        assert await uow.repo.get_artifact(v1, "m.bin") == first
        await uow.repo.put_artifact(v1, second)
        await uow.commit()

    async with container.uow(ALICE, write=False) as uow:
        assert await uow.repo.get_artifact(v1, "m.bin") == second
        assert (await uow.repo.get_artifact(v1, "m.bin")).key == "5/1/" + "2" * 32 + "/m.bin"
        assert await uow.repo.list_artifacts(v1, None, None) == [second]
        assert [a.key for a in await uow.repo.list_artifacts(v1, None, None)] == [second.key]
        assert await uow.repo.get_artifact(v2, "m.bin") == _artifact("m.bin"), "other version kept"
        assert await uow.repo.get_artifact(v1, "M.bin") is None
        assert (await uow.repo.count_artifacts(v1), await uow.repo.count_artifacts(v2)) == (1, 1)

    async with container.uow(ALICE) as uow:
        await uow.repo.delete_artifact(v1, "m.bin")
        await uow.repo.delete_artifact(v1, "never-was")
        await uow.commit()
    async with container.uow(ALICE, write=False) as uow:
        assert await uow.repo.count_artifacts(v1) == 0 and await uow.repo.count_artifacts(v2) == 1


# Code point order (UTF-8 byte order); a locale collation would put 'a' before 'B', ignore '_'
# or '-', or order 'é' next to 'e'.
PATHS = ["a", "B", "é", "中", "_x", "ax", "a_b", "a-b", "a/b", "a.b", "Z", "e", "f",
         "\uff5e", "😀", "0", "a b"]


async def test_artifacts_list_in_code_point_order_and_page(container: Container) -> None:
    v1, v2 = await _version_ids(container, await new_model(container))
    async with container.uow(ALICE) as uow:
        for i, path in enumerate(PATHS):
            await uow.repo.put_artifact(v1, _artifact(path, size=i, key=f"k{i}/{path}"))
        await uow.repo.put_artifact(v2, _artifact("a0"))  # another version's file
        await uow.commit()
    expected = sorted(PATHS)
    assert expected[:4] == ["0", "B", "Z", "_x"] and expected[-4:] == ["é", "中", "\uff5e", "😀"]

    async with container.uow(ALICE, write=False) as uow:
        everything = await uow.repo.list_artifacts(v1, None, None)
        assert [a.path for a in everything] == expected
        assert {a.path: a.size for a in everything} == {p: i for i, p in enumerate(PATHS)}
        assert {a.path: a.key for a in everything} == {p: f"k{i}/{p}" for i, p in enumerate(PATHS)}

        paged, after = [], None
        while page := await uow.repo.list_artifacts(v1, after, 5):
            assert len(page) <= 5
            paged += [a.path for a in page]
            after = page[-1].path
        assert paged == expected
        assert [a.path for a in await uow.repo.list_artifacts(v1, "a", 3)] == ["a b", "a-b", "a.b"]
        # A cursor need not be a stored path: it is a position in the order.
        assert [a.path for a in await uow.repo.list_artifacts(v1, "a0", 2)] == ["a_b", "ax"]
        assert [a.path for a in await uow.repo.list_artifacts(v1, "e\uffff", None)] == \
            [p for p in expected if p > "e\uffff"]
        assert await uow.repo.list_artifacts(v1, "😀", 5) == []
        assert await uow.repo.count_artifacts(v1) == len(PATHS)


async def test_uploads_replace_by_path_list_by_path_and_delete(container: Container) -> None:
    v1, v2 = await _version_ids(container, await new_model(container))
    now = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    later = now + timedelta(hours=1)
    async with container.uow(ALICE) as uow:
        first = await uow.repo.add_upload(v1, "w/b.bin", 10, SHA_A, ".uploads/1", "alice", now, later)
        other = await uow.repo.add_upload(v1, "a.bin", 0, SHA_B, ".uploads/2", "bob", now, later)
        theirs = await uow.repo.add_upload(v2, "w/b.bin", 1, SHA_A, ".uploads/3", "alice", now, later)
        await uow.commit()
    assert first == UploadRecord(first.id, "w/b.bin", 10, SHA_A, ".uploads/1", "alice", now, later)
    assert len({first.id, other.id, theirs.id}) == 3

    async with container.uow(ALICE) as uow:  # a new upload for the same path replaces the first
        again = await uow.repo.add_upload(v1, "w/b.bin", 20, SHA_B, ".uploads/4", "bob",
                                          later, later + timedelta(hours=1))
        await uow.commit()
    assert again.id != first.id
    async with container.uow(ALICE, write=False) as uow:
        assert await uow.repo.uploads(v1) == [other, again]
        assert await uow.repo.uploads(v2) == [theirs]

    async with container.uow(ALICE) as uow:
        await uow.repo.delete_upload(other.id)
        await uow.repo.delete_upload(first.id)  # already replaced: nothing to delete
        await uow.commit()
    async with container.uow(ALICE, write=False) as uow:
        assert await uow.repo.uploads(v1) == [again]
        assert await uow.repo.uploads(v2) == [theirs]


# -- versions withdrawn back to none ------------------------------------------------------------

WITHDRAWN_AT = datetime(2024, 6, 7, 8, 9, 10, 111213, tzinfo=UTC)


async def _insert_v4_history(url: str, mid: int, name: str,
                             entries: list[tuple[int, str, dict[str, Any] | None]]) -> None:
    """Audit entries as a 0004 service wrote them into the model's chain (hash-chained, the chain
    row's head advanced): ``entries`` are (version, action, after)."""
    chain = f"model:{mid}"

    async def write(conn: Any) -> None:
        head = (await conn.execute(select(chains_t.c.audit_seq, chains_t.c.audit_hash)
                                   .where(chains_t.c.id == chain))).one()
        seq, prev = head.audit_seq, head.audit_hash
        for version, action, after in entries:
            seq += 1
            at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=seq)
            entry = {"seq": seq, "chain": chain, "at": rfc3339(at), "actor": "alice",
                     "request_id": f"req-{seq}", "action": action, "model": name,
                     "version": version, "before": None, "after": after, "prev_hash": prev}
            text_ = canonical(entry)
            digest = chain_hash(prev, text_)
            await conn.execute(insert(audit_t).values(
                chain=chain, seq=seq, at=at, actor="alice", request_id=f"req-{seq}",
                action=action, model=name, version=version, canonical=text_, prev_hash=prev,
                hash=digest))
            prev = digest
        await conn.execute(update(chains_t).where(chains_t.c.id == chain)
                           .values(audit_seq=seq, audit_hash=prev))
        await conn.commit()
    await _run(url, write)


async def _insert_v4_version(url: str, mid: int, version: int, stage: str, updated: datetime) -> None:
    created = datetime(2020, 5, 5, tzinfo=UTC)
    await _insert(url, versions_t, {
        "model_id": mid, "version": version, "stage": stage, "source": f"s3://b/{version}",
        "run_id": None, "description": "", "tags": {}, "metrics": {}, "inputs": [], "revision": 3,
        "left_production_seq": None, "stage_since": updated, "created_at": created,
        "updated_at": updated, "created_by": "alice"})


def _moved(stage_from: str, stage_to: str, trigger: str) -> dict[str, Any]:
    return {"stage": stage_to, "trigger": trigger, "comment": None, "from": stage_from}


async def test_upgrading_seals_a_version_withdrawn_back_to_none_but_not_one_never_moved(
    url: str,
) -> None:
    """Version 5 went to staging and was withdrawn (0004 let a version come back to none): it is
    in ``none`` but left it once, so it is sealed as holding no files (sealed_at = updated_at).
    Version 1 never moved (its chain holds only other entries for it) and stays open; so does
    another model's version 5, whose own chain never moved it though the first model's chain
    names a version 5 too."""
    await _upgrade(url, "0004")
    mid = await _insert_v4_model(url, "legacy")
    await _insert_v4_version(url, mid, 5, "none", WITHDRAWN_AT)
    await _insert_v4_history(url, mid, "legacy", [
        (1, "model_version.created", {"stage": "none"}),
        (5, "model_version.created", {"stage": "none"}),
        (2, "model_version.stage_changed", _moved("none", "staging", "submit")),
        (5, "model_version.stage_changed", _moved("none", "staging", "submit")),
        (5, "model_version.stage_changed", _moved("staging", "none", "withdraw")),
        (1, "model_version.updated", {"description": "still in none"}),
    ])
    other = await _insert_v4_model(url, "other")
    await _insert_v4_version(url, other, 5, "none", WITHDRAWN_AT)
    await _insert_v4_history(url, other, "other", [(5, "model_version.created", {"stage": "none"})])

    await _upgrade(url)

    async def sealing(conn: Any) -> dict[tuple[str, int], tuple[str, Any, Any]]:
        rows = await conn.execute(
            select(models_t.c.name, versions_t.c.version, versions_t.c.stage,
                   versions_t.c.sealed_at, versions_t.c.manifest_digest)
            .join(models_t, models_t.c.id == versions_t.c.model_id))
        return {(r.name, r.version): (r.stage, r.sealed_at, r.manifest_digest) for r in rows}
    found = await _run(url, sealing)

    assert found[("legacy", 5)] == ("none", WITHDRAWN_AT, EMPTY_MANIFEST), "withdrawn version left open"
    assert found[("legacy", 1)] == ("none", None, None), "a version that never moved was sealed"
    assert found[("other", 5)] == ("none", None, None), "another model's chain sealed this version"
    assert found[("other", 1)] == ("none", None, None)
    assert {k: v[2] for k, v in found.items() if v[0] != "none"} == dict.fromkeys(
        [(n, v) for n in ("legacy", "other") for v in (2, 3, 4)], EMPTY_MANIFEST)
