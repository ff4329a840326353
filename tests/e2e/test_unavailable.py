"""When the database goes away under a running server, every answer is a 503 problem, never a 500."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support import create_pg_database, drop_pg_database, run, run_server


@pytest.mark.postgresql
def test_a_vanished_database_gives_503_unavailable_not_500(tmp_path: Path) -> None:
    url = run(create_pg_database())
    try:
        with run_server(url, tmp_path) as server:
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c:
                assert c.get("/api/v1/models").status_code == 200
                run(drop_pg_database(url))  # terminates the server's connections too
                time.sleep(1.2)  # past the token cache, so authentication needs the database
                answers = [c.get("/readyz"), c.get("/api/v1/models"), c.get("/api/v1/models/x"),
                           c.post("/api/v1/models", json={"name": "x"})]
            for r in answers:
                assert r.status_code == 503, (r.request.url, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["code"] == "unavailable"
            assert '"status": 500' not in server.log.read_text()
    finally:
        run(drop_pg_database(url))


@pytest.mark.postgresql
def test_serve_refuses_an_unmigrated_postgresql_database(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.support import REPO, free_port

    url = run(create_pg_database())
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(REGISTRY_DATABASE_URL=url, REGISTRY_DATA_DIR=str(tmp_path))
        result = subprocess.run([sys.executable, "-m", "registry", "serve", "--port", str(free_port())],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "python -m registry migrate" in result.stderr
    finally:
        run(drop_pg_database(url))
