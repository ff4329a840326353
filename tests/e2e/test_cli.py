"""The operator commands, run as processes: serve's refusals and first start, token create."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import REPO, free_port, sqlite_url


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATA_DIR=str(tmp), REGISTRY_LOG_FORMAT="json", **extra)
    return env


def _registry(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    result = _registry("serve", "--workers", "2", "--port", str(free_port()), env=_env(tmp_path))
    assert result.returncode == 2
    assert "SQLite" in result.stderr
    assert not (tmp_path / "registry.db").exists(), "nothing may be created when refusing"


def test_first_start_prints_an_admin_token_once_and_it_works(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry", "serve", "--port", str(port)], cwd=REPO,
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Admin token, shown once: mrt_"), line
        token = line.rsplit(" ", 1)[1].strip()
        proc.stdout.readline()  # "Serving ..."
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            import time

            time.sleep(0.1)
        ok = httpx.get(base + "/api/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        bad = httpx.get(base + "/api/v1/models", headers={"Authorization": f"Bearer {token}x"})
        assert bad.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # The token is stored only as a hash.
    import sqlite3

    with sqlite3.connect(tmp_path / "registry.db") as db:
        stored = [r[0] for r in db.execute("SELECT secret_hash FROM api_tokens")]
    assert len(stored) == 1 and token not in stored[0]

    # A second start finds the token and prints none.
    second = subprocess.Popen(
        [sys.executable, "-m", "registry", "serve", "--port", str(free_port())], cwd=REPO,
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert second.stdout is not None
        assert second.stdout.readline().startswith("Serving the model registry")
    finally:
        second.terminate()
        second.wait(timeout=15)


def test_token_create_prints_a_working_token(tmp_path: Path) -> None:
    env = _env(tmp_path, REGISTRY_DATABASE_URL=sqlite_url(tmp_path))
    created = _registry("token", "create", "--bootstrap", "--name", "ci-pipeline", "--role", "admin", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("mrt_") and len(token) > 40
    refused = _registry("token", "create", "--bootstrap", "--role", "superuser", env=env)
    assert refused.returncode != 0 and "role must be one of" in refused.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "registry.db") as db:
        rows = list(db.execute("SELECT name, role FROM api_tokens"))
        audit = [r[0] for r in db.execute("SELECT canonical FROM audit_log WHERE chain = 'system'")]
    assert rows == [("ci-pipeline", "admin")]
    assert len(audit) == 1 and '"token.created"' in audit[0] and token not in audit[0]
