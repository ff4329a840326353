"""Backup and restore (issue 16): a registry filled through the real API is exported, restored
into a new database of either backend, and must come back row for row (tokens without their
secrets), with the same audit chain heads, a verifying audit log, id counters that never reuse an
id, and webhook secrets that open under the same key. Damaged, truncated, newer and mismatched
archives, and non-empty targets, are refused with nothing written."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Column, Integer, Table, func, select

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import metadata, models_t, tokens_t
from registry.adapters.secrets import SecretKeyError, load_box
from registry.backup import archive, scope
from registry.backup.archive import ArchiveError
from registry.backup.export import ExportError, export_archive
from registry.backup.restore import FILLERS, RestoreError, restore_archive
from registry.bootstrap import build
from registry.config import Settings
from registry.services.audit import audit_heads, verify_audit
from registry.services.ports import Actor
from registry.services.tokens import CreateToken, create_token, hash_token
from tests.api.helpers import api_client, create_model, model_id, move, register, seg
from tests.conftest import BACKENDS
from tests.support import (
    Server,
    create_pg_database,
    drop_pg_database,
    migrated_pg_database,
    migrated_sqlite_url,
    run,
    run_server,
    sqlite_url,
)

KEY = "backup-test-key-0123456789-abcdefghijklmnop"
SERVE_ENV = {"REGISTRY_SECRET_KEY": KEY, "REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true"}


# -- a registry with something of everything ------------------------------------------------------


@dataclass
class Filled:
    """What populating a registry made, to check after a restore."""

    models: list[str]
    deleted_model_id: int
    token_secrets: list[str]
    webhook_secret: str


def _post(c: httpx.Client, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    r = c.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json() if r.content else {}


def populate(srv: Server) -> Filled:
    """Models, versions, tags, an alias, a policy, a check, a transition request approved by a
    releaser, comments, tokens (one revoked), a webhook, a rollback, a deleted model, and the
    audit entries and events of all of it."""
    with api_client(srv) as c:
        return _populate(c, srv)


def _populate(c: httpx.Client, srv: Server) -> Filled:
    base = srv.api
    a = create_model(c, "bk", description="Modèle ☃ \u2028 \"quoted\"", tags={"team": "ünï"})
    register(c, a, 3, metrics={"auc": 0.91, "big": 1e21, "tiny": 5e-324}, tags={"k": "✓"},
             run_id="run-1", inputs=[{"namespace": "s3://data", "name": "train"}])
    assert c.put(f"/models/{seg(a)}/aliases/champion", json={"version": 2, "protected": True}).status_code in (200, 201)
    assert c.put(f"/models/{seg(a)}/policies/production",
                 json={"required_approvals": 1, "required_checks": ["ci/unit"]}).status_code == 200
    _post(c, f"/models/{seg(a)}/versions/1/checks", {"name": "ci/unit", "status": "success",
                                                      "summary": "ok", "details_url": "https://ci/1"})
    move(c, a, 1, "staging")
    editor = _post(c, "/tokens", {"name": "editor", "role": "editor", "principal": "eve"})
    releaser = _post(c, "/tokens", {"name": "rel", "role": "releaser", "principal": "rita"})
    old = _post(c, "/tokens", {"name": "old", "role": "viewer", "expires_at": "2099-01-01T00:00:00Z"})
    assert c.delete(f"/tokens/{old['id']}").status_code == 204
    as_editor = {"Authorization": f"Bearer {editor['token']}"}
    as_releaser = {"Authorization": f"Bearer {releaser['token']}"}
    with httpx.Client(base_url=base, headers=as_editor, timeout=30) as e, \
            httpx.Client(base_url=base, headers=as_releaser, timeout=30) as rel:
        asked = _post(e, f"/models/{seg(a)}/versions/1/transition-requests",
                      {"to_stage": "production", "comment": "ship"})
        _post(e, f"/transition-requests/{asked['id']}/comments", {"body": "please"})
        _post(e, f"/models/{seg(a)}/versions/1/comments", {"body": "looks good"})
        _post(rel, f"/transition-requests/{asked['id']}/approve", {"comment": "ok"}, status=200)
    hook = _post(c, "/webhooks", {"url": "http://127.0.0.1:9/hook", "event_types": ["model_version.*"]})
    b = create_model(c, "bkroll")
    register(c, b, 2)
    for version in (1, 2):
        move(c, b, version, "staging")
        move(c, b, version, "production")
    _post(c, f"/models/{seg(b)}/rollback", {"comment": "v2 is bad"}, status=200)
    gone = create_model(c, "bkgone")
    gone_id = model_id(srv, gone)
    assert c.delete(f"/models/{seg(gone)}").status_code == 204
    return Filled([a, b], gone_id, [editor["token"], releaser["token"], old["token"]], hook["secret"])


# -- reading databases ----------------------------------------------------------------------------


async def table_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every exported table's rows (every column), in primary-key order."""
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return {t.name: [dict(r._mapping) for r in await conn.execute(
                select(t).order_by(*t.primary_key.columns))] for t in scope.exported_tables()}
    finally:
        await engine.dispose()


async def heads_and_verdict(url: str, data_dir: Path) -> tuple[list[tuple[str, int, str]], Any]:
    """The services behind GET /audit/head and GET /audit/verify, as an admin."""
    c = build(Settings.from_env({"REGISTRY_DATABASE_URL": url, "REGISTRY_DATA_DIR": str(data_dir),
                                 "REGISTRY_LOG_FORMAT": "json", "REGISTRY_DB_POOL_SIZE": "2"}))
    try:
        heads = await audit_heads(None, c.uow(Actor("t", "t")))
        verdict = await verify_audit(None, c.uow(Actor("t", "t")))
        return sorted((h["chain"], h["seq"], h["hash"]) for h in heads), verdict
    finally:
        await c.close()


async def new_admin_token(url: str, data_dir: Path) -> str:
    c = build(Settings.from_env({"REGISTRY_DATABASE_URL": url, "REGISTRY_DATA_DIR": str(data_dir),
                                 "REGISTRY_LOG_FORMAT": "json", "REGISTRY_DB_POOL_SIZE": "2"}))
    try:
        _, secret = await create_token(CreateToken("restorer", "admin"), c.uow(Actor("cli", "cli")))
        return secret
    finally:
        await c.close()


def blank_database(backend: str, directory: Path) -> str:
    """A database with no tables at all (restore migrates it)."""
    directory.mkdir(parents=True, exist_ok=True)
    return sqlite_url(directory) if backend == "sqlite" else run(create_pg_database())


def migrated_database(backend: str, directory: Path) -> str:
    return migrated_sqlite_url(directory) if backend == "sqlite" else run(migrated_pg_database())


def drop(url: str) -> None:
    if not url.startswith("sqlite"):
        run(drop_pg_database(url))


# -- the source: filled through a real server, stopped, exported ----------------------------------


@dataclass
class Source:
    backend: str
    url: str
    archive: Path
    filled: Filled
    rows: dict[str, list[dict[str, Any]]]
    heads: list[tuple[str, int, str]]


@pytest.fixture(scope="module")
def source(server_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    folder = tmp_path_factory.mktemp(f"backup-src-{server_backend}")
    url = migrated_database(server_backend, folder)
    try:
        with run_server(url, folder, extra_env=SERVE_ENV, migrated=True) as srv:
            filled = populate(srv)
            r = httpx.get(srv.api + "/audit/verify", headers=srv.headers)
            assert r.status_code == 200 and r.json()["ok"] is True, r.text
        path = folder / "registry.jsonl.gz"
        summary = run(export_archive(url, path))
        rows = run(table_rows(url))
        heads, verdict = run(heads_and_verdict(url, folder))
        assert verdict.ok and verdict.checked > 30, verdict
        assert summary.rows == {name: len(r) for name, r in rows.items()}
        assert all(summary.rows[t] > 0 for t in scope.EXPORTED if t not in ("artifacts", "lineage_events"))
        yield Source(server_backend, url, path, filled, rows, heads)
    finally:
        drop(url)


@pytest.mark.parametrize("target", BACKENDS)
def test_round_trip_gives_the_same_rows_heads_and_a_verifying_audit_log(
        source: Source, target: str, tmp_path: Path) -> None:
    url = blank_database(target, tmp_path)
    try:
        summary = restore_archive(url, source.archive)
        assert summary.migrated and summary.rows == {n: len(r) for n, r in source.rows.items()}
        restored = run(table_rows(url))
        _assert_same_rows(source.rows, restored)
        heads, verdict = run(heads_and_verdict(url, tmp_path))
        assert heads == source.heads
        assert verdict.ok and verdict.checked == sum(seq for _, seq, _ in heads), verdict
        _assert_webhook_secret_opens_only_under_its_key(restored, source.filled.webhook_secret, tmp_path)
        _serve_restored(url, tmp_path, source.filled)
    finally:
        drop(url)


def _assert_same_rows(before: dict[str, list[dict[str, Any]]],
                      after: dict[str, list[dict[str, Any]]]) -> None:
    assert before.keys() == after.keys() == set(scope.EXPORTED)
    for name in scope.EXPORTED:
        omitted = scope.OMITTED.get(name, frozenset())
        strip = [{k: v for k, v in row.items() if k not in omitted} for row in after[name]]
        assert strip == [{k: v for k, v in row.items() if k not in omitted} for row in before[name]], name
    old = {t["secret_hash"] for t in before["api_tokens"]}
    new = [t["secret_hash"] for t in after["api_tokens"]]
    assert old.isdisjoint(new) and all(len(h) == 64 for h in new)


def _assert_webhook_secret_opens_only_under_its_key(rows: dict[str, list[dict[str, Any]]], secret: str,
                                                    folder: Path) -> None:
    (hook,) = rows["webhook_subscriptions"]
    assert hook["secret"] != secret, "stored encrypted"
    assert load_box(KEY, folder).decrypt(hook["secret"]) == secret
    with pytest.raises(SecretKeyError):
        load_box("another-key-0123456789-abcdefghijklmnopq", folder).decrypt(hook["secret"])


def _serve_restored(url: str, folder: Path, filled: Filled) -> None:
    """The restored database serves: old tokens are refused, a new one works, ids and version
    numbers continue where the source's left off, and the audit log still verifies."""
    token = run(new_admin_token(url, folder))
    with run_server(url, folder, extra_env=SERVE_ENV, migrated=True) as srv:
        for secret in filled.token_secrets:
            assert httpx.get(srv.api + "/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
        with httpx.Client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            a, b = filled.models
            assert c.get(f"/models/{seg(b)}/stages/production").status_code == 200
            assert [v["version"] for v in register(c, a)] == [4]
            fresh = create_model(c, "bkafter")
            assert model_id(srv, fresh) > filled.deleted_model_id
            r = c.get("/audit/verify")
            assert r.status_code == 200 and r.json()["ok"] is True, r.text


# -- refusals: nothing written --------------------------------------------------------------------


async def count_rows(url: str) -> int:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return sum([(await conn.execute(select(func.count()).select_from(t))).scalar_one()
                        for t in metadata.sorted_tables])
    finally:
        await engine.dispose()


@pytest.fixture
def small_archive(backend: str, tmp_path: Path) -> Iterator[Path]:
    """An archive of a database with one token, one model and its audit entries."""
    url = migrated_database(backend, tmp_path / "small")
    try:
        run(new_admin_token(url, tmp_path / "small"))

        async def model() -> None:
            c = build(Settings.from_env({"REGISTRY_DATABASE_URL": url, "REGISTRY_LOG_FORMAT": "json",
                                         "REGISTRY_DATA_DIR": str(tmp_path / "small")}))
            from registry.services import models
            from registry.services.commands import CreateModel
            try:
                await models.create_model(CreateModel(name="small"), c.uow(Actor("t", "t")))
            finally:
                await c.close()

        run(model())
        path = tmp_path / "small.jsonl.gz"
        run(export_archive(url, path))
        yield path
    finally:
        drop(url)


@pytest.fixture
def empty_target(backend: str, tmp_path: Path) -> Iterator[str]:
    url = migrated_database(backend, tmp_path / "target")
    yield url
    drop(url)


def _rewrite(path: Path, edit: Any) -> Path:
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    out = path.with_name("edited.jsonl.gz")
    out.write_bytes(gzip.compress(b"".join(edit(lines))))
    return out


def test_a_non_empty_database_is_refused_and_left_alone(small_archive: Path, empty_target: str,
                                                        tmp_path: Path) -> None:
    run(new_admin_token(empty_target, tmp_path))
    before = run(count_rows(empty_target))
    with pytest.raises(RestoreError, match=r"not empty \(rows in audit_chains, audit_log, principals, api_tokens\)"):
        restore_archive(empty_target, small_archive)
    assert run(count_rows(empty_target)) == before


def test_a_restored_database_refuses_a_second_restore(small_archive: Path, empty_target: str) -> None:
    restore_archive(empty_target, small_archive)
    with pytest.raises(RestoreError, match="not empty"):
        restore_archive(empty_target, small_archive)


@pytest.mark.parametrize("damage", ["truncated", "edited", "no trailer", "bad gzip"])
def test_a_damaged_archive_is_refused_with_nothing_written(small_archive: Path, empty_target: str,
                                                           damage: str) -> None:
    data = small_archive.read_bytes()
    if damage == "truncated":
        path = small_archive.with_name("cut.jsonl.gz")
        path.write_bytes(data[: len(data) * 2 // 3])
        expected = "truncated"
    elif damage == "edited":  # a model renamed, the trailer left as it was
        path = _rewrite(small_archive, lambda lines: [ln.replace(b'"small"', b'"smell"') for ln in lines])
        expected = "SHA-256"
    elif damage == "no trailer":
        path = _rewrite(small_archive, lambda lines: lines[:-1])
        expected = "ends early"
    else:
        path = small_archive.with_name("bad.jsonl.gz")
        path.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:])
        expected = "damaged|truncated"
    with pytest.raises(ArchiveError, match=expected):
        restore_archive(empty_target, path)
    assert run(count_rows(empty_target)) == 1  # the migration's genesis system chain only


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("version", archive.VERSION + 1, "format version 2; this release reads version 1"),
    ("format", "something-else", "not a model registry archive"),
    ("schema_revision", "0008", "written at schema revision 0008"),
])
def test_an_archive_from_another_release_is_refused(small_archive: Path, empty_target: str,
                                                    field: str, value: Any, expected: str) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        head = json.loads(lines[0])
        return [json.dumps({**head, field: value}).encode() + b"\n", *lines[1:]]

    with pytest.raises((ArchiveError, RestoreError), match=expected):
        restore_archive(empty_target, _rewrite(small_archive, edit))
    assert run(count_rows(empty_target)) == 1


def test_export_never_replaces_a_file_unless_forced(small_archive: Path, empty_target: str) -> None:
    before = small_archive.read_bytes()
    with pytest.raises(ExportError, match="exists"):
        run(export_archive(empty_target, small_archive))
    assert small_archive.read_bytes() == before
    run(export_archive(empty_target, small_archive, force=True))
    assert small_archive.read_bytes() != before
    assert not list(small_archive.parent.glob(".*partial*"))


def test_the_archive_holds_no_token_secret_or_hash(backend: str, small_archive: Path,
                                                   tmp_path: Path) -> None:
    text = gzip.decompress(small_archive.read_bytes()).decode()
    tokens = [json.loads(line) for line in text.splitlines() if '"admin"' in line or '"restorer"' in line]
    assert tokens, text
    url = migrated_database(backend, tmp_path / "again")
    try:
        secret = run(new_admin_token(url, tmp_path / "again"))
        path = tmp_path / "again.jsonl.gz"
        run(export_archive(url, path))
        content = gzip.decompress(path.read_bytes()).decode()
        assert secret not in content and hash_token(secret) not in content
        assert secret[:8] in content  # the prefix, which token lists show, is metadata
    finally:
        drop(url)


# -- the classification of tables -----------------------------------------------------------------


def test_every_table_is_exported_or_excluded_with_a_reason() -> None:
    assert scope.unclassified() == set()
    assert not set(scope.EXPORTED) & set(scope.EXCLUDED)
    assert all(reason.strip() for reason in scope.EXCLUDED.values())
    for table in scope.exported_tables():
        for column in table.columns:
            archive.codec(column)  # every exported column has an encoding
    assert {t: set(cols) for t, cols in scope.OMITTED.items()} == {t: set(f) for t, f in FILLERS.items()}


def test_a_new_table_fails_the_export_until_it_is_classified() -> None:
    table = Table("backup_test_new_table", metadata, Column("id", Integer, primary_key=True))
    try:
        assert scope.unclassified() == {"backup_test_new_table"}
        with pytest.raises(scope.UnclassifiedTableError, match="backup_test_new_table"):
            scope.exported_tables()
    finally:
        metadata.remove(table)


def test_values_round_trip_through_the_encoding() -> None:
    from datetime import UTC, datetime

    columns = [models_t.c.id, models_t.c.tags, models_t.c.created_at, tokens_t.c.revoked_at]
    row = [2**40, {"a": [1, 2.5, None, "✓"]}, datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=UTC), None]
    encoded = json.loads(json.dumps(archive.encoder(columns)(row)))
    assert list(archive.decoder(columns)(encoded).values()) == row
    with pytest.raises(ArchiveError, match="fit"):
        archive.decoder(columns)([True, {}, "2026-01-01T00:00:00+00:00", None])
    with pytest.raises(ArchiveError, match="fit"):
        archive.decoder(columns)([1, {}, "2026-01-01T00:00:00", None])  # no offset
