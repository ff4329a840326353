"""``python -m registry export`` and ``restore`` as an operator runs them (issue 16): a laptop's
embedded registry graduates to PostgreSQL (export on SQLite, restore into a blank PostgreSQL
database), the served result passes ``audit verify`` against an anchor of the source's chain heads,
a second restore is refused with exit status 1, and the PostgreSQL registry exports and restores
back into SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from registry.backup.export import head_revision
from tests.e2e.test_cli_http import cli
from tests.integration.test_backup import KEY, SERVE_ENV, populate
from tests.support import (
    REPO,
    Server,
    create_pg_database,
    drop_pg_database,
    migrated_sqlite_url,
    run,
    run_server,
    sqlite_url,
)

REV = head_revision("sqlite+aiosqlite://")  # this release's latest schema revision


def operator(*args: str, database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """A command run on the server host, on the database directly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATABASE_URL=database_url, REGISTRY_DATA_DIR=str(data_dir),
               REGISTRY_SECRET_KEY=KEY, REGISTRY_LOG_FORMAT="json")
    return subprocess.run([sys.executable, "-m", "registry", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.postgresql
def test_sqlite_to_postgresql_and_back_with_the_same_chain_heads(tmp_path: Path) -> None:
    laptop = tmp_path / "laptop"
    source = migrated_sqlite_url(laptop)
    with run_server(source, laptop, extra_env=SERVE_ENV, migrated=True) as srv:
        filled = populate(srv)
        ok(cli(srv, "audit", "anchor", "--output", str(tmp_path / "anchor.json")))
    archive = tmp_path / "registry.jsonl.gz"
    out = ok(operator("export", str(archive), database_url=source, data_dir=laptop))
    assert f"exported the registry (SQLite, schema {REV}) to" in out, out
    assert "  audit_log " in out and "left out (installation state): deliveries" in out, out

    server = tmp_path / "server"
    server.mkdir()
    target = run(create_pg_database())
    try:
        out = ok(operator("restore", str(archive), database_url=target, data_dir=server))
        assert f"from sqlite, schema {REV}) into PostgreSQL (migrated first)" in out, out
        assert "audit ok:" in out and "token create --bootstrap" in out, out
        again = operator("restore", str(archive), database_url=target, data_dir=server)
        assert again.returncode == 1 and "the database is not empty" in again.stderr, again.stderr
        assert "nothing was restored" in again.stderr

        token = ok(operator("token", "create", "--bootstrap", database_url=target, data_dir=server)).strip()
        with run_server(target, server, extra_env=SERVE_ENV, migrated=True) as srv:
            restored = Server(srv.url, token, target, srv.process, srv.log)
            verified = cli(restored, "audit", "verify", "--anchor", str(tmp_path / "anchor.json"))
            assert verified.returncode == 0, verified.stdout + verified.stderr
            assert "audit ok:" in verified.stdout, verified.stdout
            for secret in filled.token_secrets:
                r = httpx.get(srv.api + "/models", headers={"Authorization": f"Bearer {secret}"})
                assert r.status_code == 401

        back = tmp_path / "back.jsonl.gz"
        out = ok(operator("export", str(back), database_url=target, data_dir=server))
        assert f"exported the registry (PostgreSQL, schema {REV})" in out, out
        laptop2 = tmp_path / "laptop2"
        out = ok(operator("restore", str(back), database_url=sqlite_url(laptop2), data_dir=laptop2))
        assert f"from postgresql, schema {REV}) into SQLite (migrated first)" in out and "audit ok:" in out
    finally:
        run(drop_pg_database(target))


def test_a_damaged_archive_exits_1_and_says_why(tmp_path: Path) -> None:
    damaged = tmp_path / "cut.jsonl.gz"
    damaged.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    done = operator("restore", str(damaged), database_url=sqlite_url(tmp_path), data_dir=tmp_path)
    assert done.returncode == 1 and "is damaged or truncated" in done.stderr, done.stderr
    missing = operator("export", str(tmp_path / "x.gz"), database_url=sqlite_url(tmp_path / "none"),
                       data_dir=tmp_path / "none")
    assert missing.returncode == 1 and "there is no database" in missing.stderr, missing.stderr
