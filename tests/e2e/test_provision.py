"""The README's test command on a machine where nobody exported a database URL: the run makes a
throwaway PostgreSQL database itself and drops it at the end, or stops at once with the commands
that fix it when no PostgreSQL can be reached."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PG_ENV, REPO

ONE_PG_TEST = "tests/e2e/test_unavailable.py::test_serve_refuses_an_unmigrated_postgresql_database"


def _pytest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def _databases(prefix: str) -> list[str]:
    listed = subprocess.run(["su", "postgres", "-c", "psql -Atc 'SELECT datname FROM pg_database'"],
                            capture_output=True, text=True, check=True)
    return [n for n in listed.stdout.split() if n.startswith(prefix)]


@pytest.mark.postgresql
@pytest.mark.skipif(os.geteuid() != 0, reason="provisioning asks the cluster's superuser through su")
def test_a_run_without_a_database_url_makes_its_own_and_drops_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != PG_ENV}
    result = _pytest(env, ONE_PG_TEST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "backend postgresql: 1 passed, 0 failed" in result.stdout
    made = re.search(r"made the throwaway database (\S+)", result.stdout)
    assert made, result.stdout[:2000]
    assert _databases(made.group(1)) == []  # it and every copy made beside it are gone


def test_a_run_that_cannot_reach_postgresql_says_how_to_fix_it(tmp_path: Path) -> None:
    # A PATH with python but without psql: nothing can make a database.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != PG_ENV}
    env["PATH"] = str(bin_dir)
    assert shutil.which("psql", path=env["PATH"]) is None
    result = _pytest(env, "tests/unit/test_stages.py")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "export REGISTRY_TEST_DATABASE_URL=postgresql+asyncpg://" in out
    assert "CREATE ROLE registry_dev LOGIN CREATEDB" in out
    assert "passed" not in out  # it stops before running anything
