"""The two-role PostgreSQL deployment: the owner migrates, and ``python -m registry migrate
--grant-to ROLE`` gives a separate application role exactly what ``serve`` and ``worker`` need.

The service then runs fully as that role (a registration, an alias, a promotion, reads, a token,
an Idempotency-Key, a webhook delivered by a separate ``worker`` process, a model deletion), and
the role cannot change the audit log or take its guard off: no UPDATE, DELETE or TRUNCATE of
``audit_log``, no DISABLE or DROP of its triggers (only the owner may).

Creating a login role needs more than the test database's role (CREATEDB only): the tests use
``su postgres -c psql`` when they run as root (as CI does, and as ``.ci/run`` itself does), or
the test role itself when it has CREATEROLE; with neither they fail, never skip. Every role and
database a test makes is dropped at its end, failed or not.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.api.helpers import create_model, move, register, seg
from tests.e2e.receivers import Receiver, poll
from tests.support import (
    REPO,
    asyncpg_dsn,
    drop_pg_database,
    migrated_pg_database,
    postgres_url,
    run,
    run_server,
    sqlite_url,
    stop,
)

pytestmark = pytest.mark.postgresql


# -- roles ----------------------------------------------------------------------------------------


def _as_superuser(sql: str) -> None:
    """Run ``sql`` as a role allowed to create and drop roles."""
    if os.geteuid() == 0 and shutil.which("su") and shutil.which("psql"):
        done = subprocess.run(["su", "postgres", "-c", "psql -v ON_ERROR_STOP=1 -q -X"], input=sql,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return

    async def with_test_role() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(postgres_url()))
        try:
            if not await conn.fetchval("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user"):
                pytest.fail("these tests create a login role: run them as root (su postgres -c psql) "
                            "or give the test role CREATEROLE")
            await conn.execute(sql)
        finally:
            await conn.close()

    run(with_test_role())


@dataclass(frozen=True)
class Deployment:
    owner_url: str  # the role that made the database and migrates it
    app_url: str  # the granted application role's URL
    role: str


@contextmanager
def deployment() -> Iterator[Deployment]:
    """A migrated database and a fresh login role, both dropped afterwards."""
    role = f"registry_app_{secrets.token_hex(5)}"
    password = secrets.token_hex(16)
    owner_url = run(migrated_pg_database())
    created = False
    try:
        _as_superuser(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        created = True
        app_url = make_url(owner_url).set(username=role, password=password)
        yield Deployment(owner_url, app_url.render_as_string(hide_password=False), role)
    finally:
        run(drop_pg_database(owner_url))  # and the role's privileges in it, so the role can go
        if created:
            _as_superuser(f"DROP ROLE IF EXISTS {role}")


def registry(*args: str, database_url: str, data_dir: Path,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATABASE_URL=database_url, REGISTRY_DATA_DIR=str(data_dir), **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "registry", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def grant(d: Deployment, data_dir: Path) -> subprocess.CompletedProcess[str]:
    done = registry("migrate", "--grant-to", d.role, database_url=d.owner_url, data_dir=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def _refused(url: str, sql: str) -> str:
    """The error ``sql`` fails with, run as the URL's role. The transaction never commits (a refusal
    aborts it, a success raises), so no statement here can change what a later one runs against."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with conn.transaction():
            try:
                await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                return f"{type(exc).__name__}: {exc}"
            raise AssertionError(f"{sql!r} succeeded as {make_url(url).username}")
    finally:
        await conn.close()


# -- the service under the application role -------------------------------------------------------


def test_serve_and_worker_run_fully_as_the_granted_role(tmp_path: Path) -> None:
    with deployment() as d, Receiver() as receiver:
        out = grant(d, tmp_path).stdout
        assert f"granted {d.role}: SELECT, INSERT on audit_log" in out, out
        env = {"REGISTRY_RUN_WORKERS": "false", "REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true"}
        with run_server(d.app_url, tmp_path, migrated=True, extra_env=env) as server:
            worker_log = (tmp_path / "worker.log").open("wb")
            worker = subprocess.Popen(
                [sys.executable, "-m", "registry", "worker"], cwd=REPO, stdout=worker_log,
                stderr=subprocess.STDOUT,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
                     "REGISTRY_DATABASE_URL": d.app_url, "REGISTRY_DATA_DIR": str(tmp_path),
                     **env})
            try:
                with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as c:
                    hook = receiver.endpoint("all")
                    made = c.post("/webhooks", json={"url": hook.url, "event_types": ["*"]})
                    assert made.status_code == 201, made.text
                    hook.secrets = [made.json()["secret"]]

                    name = create_model(c, "app-role")
                    register(c, name, 2)
                    again = c.post(f"/models/{seg(name)}/versions", json={"source": "s3://b/3"},
                                   headers={"Idempotency-Key": "k-1"})
                    assert again.status_code == 201, again.text
                    assert c.put(f"/models/{seg(name)}/aliases/champion",
                                 json={"version": 1}).status_code == 200
                    move(c, name, 1, "staging")
                    promoted = move(c, name, 1, "production", comment="as the app role")
                    assert promoted["version"]["stage"] == "production", promoted
                    move(c, name, 2, "staging")
                    move(c, name, 2, "production")

                    assert c.get(f"/models/{seg(name)}").status_code == 200
                    assert [v["stage"] for v in c.get(f"/models/{seg(name)}/versions").json()["items"]] == [
                        "archived", "production", "none"]
                    assert c.get(f"/models/{seg(name)}/stages/production").json()["items"][0]["version"] == 2
                    assert c.get(f"/models/{seg(name)}/aliases/champion").json()["version"] == 1
                    assert c.get("/audit/verify").json()["ok"] is True
                    assert c.post("/tokens", json={"name": "ci", "role": "viewer"}).status_code == 201
                    assert c.delete(f"/models/{seg(name)}/aliases/champion").status_code == 204

                    other = create_model(c, "app-role-gone")
                    assert c.delete(f"/models/{seg(other)}").status_code == 204

                    # The worker, as the same role, relays the outbox and delivers the webhooks.
                    created = poll(lambda: [r for r in hook.received
                                            if r.body and r.body["type"] == "model.deleted"], 60,
                                   lambda: (tmp_path / "worker.log").read_text())
                    assert created[0].verified
                    assert c.get("/audit/verify").json()["ok"] is True
            finally:
                stop(worker)
                worker_log.close()
            for log in (server.log, tmp_path / "worker.log"):
                text = log.read_text()
                assert "permission denied" not in text and "InsufficientPrivilege" not in text, text
        unrelayed = run(_fetch(d.owner_url, "SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL"))
        assert unrelayed[0][0] == 0

        # The operator's backup, as the same role: the same rows as the owner's (the id counters
        # are read with USAGE on the sequences, all the role holds).
        as_app = registry("export", str(tmp_path / "app.jsonl.gz"), database_url=d.app_url,
                          data_dir=tmp_path)
        assert as_app.returncode == 0, as_app.stderr
        as_owner = registry("export", str(tmp_path / "owner.jsonl.gz"), database_url=d.owner_url,
                            data_dir=tmp_path)
        assert as_owner.returncode == 0, as_owner.stderr
        assert _exported_rows(as_app.stdout) == _exported_rows(as_owner.stdout)
        assert _exported_rows(as_app.stdout)["audit_log"] > 10


def _exported_rows(stdout: str) -> dict[str, int]:
    """The table of rows per table that ``export`` prints (two-space indented lines)."""
    return {name: int(count) for name, count in
            (line.split() for line in stdout.splitlines() if line.startswith("  "))}


def test_the_granted_role_cannot_change_the_audit_log_or_unguard_it(tmp_path: Path) -> None:
    with deployment() as d:
        grant(d, tmp_path)
        with run_server(d.app_url, tmp_path, migrated=True) as server:  # a few entries to protect
            with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as c:
                create_model(c, "guarded")
        entries = run(_fetch(d.owner_url, "SELECT count(*) FROM audit_log"))
        assert entries[0][0] >= 2
        triggers = [tuple(r) for r in run(_fetch(d.owner_url,
                    "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass "
                    "AND NOT tgisinternal ORDER BY 1"))]
        assert triggers == [("audit_log_no_truncate", "O"), ("audit_log_no_update_delete", "O")]

        for sql in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log",
                    "TRUNCATE audit_log", "DELETE FROM audit_chains",
                    "UPDATE alembic_version SET version_num = 'x'"):
            assert "InsufficientPrivilegeError: permission denied" in run(_refused(d.app_url, sql)), sql
        for sql in ("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
                    "ALTER TABLE audit_log DISABLE TRIGGER USER",
                    "DROP TRIGGER audit_log_no_truncate ON audit_log",
                    "ALTER TABLE audit_log OWNER TO CURRENT_USER", "DROP TABLE audit_log",
                    "DROP FUNCTION audit_log_append_only()"):
            assert "must be owner" in run(_refused(d.app_url, sql)), sql


def test_granting_again_takes_back_what_the_role_should_not_hold(tmp_path: Path) -> None:
    with deployment() as d:
        run(_fetch(d.owner_url, f"GRANT ALL ON audit_log, audit_chains TO {d.role}"))
        grant(d, tmp_path)
        held = run(_fetch(d.owner_url, "SELECT table_name, privilege_type FROM "
                                       "information_schema.role_table_grants WHERE grantee = "
                                       f"'{d.role}' AND table_name IN ('audit_log', 'audit_chains') "
                                       "ORDER BY 1, 2"))
        assert [tuple(r) for r in held] == [
            ("audit_chains", "INSERT"), ("audit_chains", "SELECT"), ("audit_chains", "UPDATE"),
            ("audit_log", "INSERT"), ("audit_log", "SELECT")]


def test_grant_to_refuses_the_owner_a_missing_role_and_sqlite(tmp_path: Path) -> None:
    with deployment() as d:
        owner = make_url(d.owner_url).username or ""
        mine = registry("migrate", "--grant-to", owner, database_url=d.owner_url, data_dir=tmp_path)
        assert mine.returncode == 2 and "not the tables' owner" in mine.stderr, mine.stderr
        missing = registry("migrate", "--grant-to", "no_such_role_here", database_url=d.owner_url,
                           data_dir=tmp_path)
        assert missing.returncode == 2 and "does not exist" in missing.stderr, missing.stderr

    lite = registry("migrate", "--grant-to", "app", database_url=sqlite_url(tmp_path), data_dir=tmp_path)
    assert lite.returncode == 2 and "--grant-to needs PostgreSQL" in lite.stderr, lite.stderr
    assert not (tmp_path / "registry.db").exists(), "refused before migrating"
