"""A throwaway PostgreSQL database for a test run that was given none.

When ``REGISTRY_TEST_DATABASE_URL`` is unset, the run makes its own role (with a password) and
database on the local PostgreSQL, as ``.ci/run`` does, exports the URL for the run and its server
processes, and drops the database at the end. It asks the cluster's superuser through
``su postgres -c psql`` (as root) or ``sudo -n -u postgres psql``. When neither can reach a
PostgreSQL, the run stops at once with the commands that fix it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time

HOST, PORT = "127.0.0.1", 5432
ROLE = "registry_test"

FIX = f"""PostgreSQL tests need a database, and none could be made on {HOST}:{PORT}.
Start PostgreSQL (as root: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start),
or give the run a role that may create databases:

  su postgres -c "psql -c \\"CREATE ROLE registry_dev LOGIN CREATEDB PASSWORD 'devpass'\\""
  su postgres -c "psql -c 'CREATE DATABASE registry_dev OWNER registry_dev'"
  export REGISTRY_TEST_DATABASE_URL=postgresql+asyncpg://registry_dev:devpass@{HOST}:{PORT}/registry_dev
"""


def _superuser_psql() -> list[str] | None:
    """A command prefix that runs psql as the cluster's superuser, or None."""
    if shutil.which("psql") is None:
        return None
    if os.geteuid() == 0 and shutil.which("su"):
        return ["su", "postgres", "-c"]
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "-u", "postgres", "true"],
                                               capture_output=True).returncode == 0:
        return ["sudo", "-n", "-u", "postgres", "sh", "-c"]
    return None


def _psql(prefix: list[str], sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, "psql -v ON_ERROR_STOP=1 -q"],
                          input=sql, capture_output=True, text=True, timeout=60)


def provision() -> tuple[str, str] | str:
    """``(url, database)`` of a new database owned by a role of this run's, or why there is none."""
    prefix = _superuser_psql()
    if prefix is None:
        return "no psql, or no way to run it as the postgres user (root or passwordless sudo)"
    password = secrets.token_hex(16)
    database = f"registry_test_{int(time.time())}_{os.getpid()}"
    result = _psql(prefix, f"""
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
    ALTER ROLE {ROLE} WITH LOGIN CREATEDB PASSWORD '{password}';
  ELSE
    CREATE ROLE {ROLE} WITH LOGIN CREATEDB PASSWORD '{password}';
  END IF;
END $$;
CREATE DATABASE {database} OWNER {ROLE};
""")
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip()
    return f"postgresql+asyncpg://{ROLE}:{password}@{HOST}:{PORT}/{database}", database


def drop(database: str) -> None:
    """Drop the run's database and any it made beside it (a run cut short leaves some)."""
    prefix = _superuser_psql()
    if prefix is None:
        return
    listed = _psql(prefix, "\\pset tuples_only on\n\\pset format unaligned\n"
                           f"SELECT datname FROM pg_database WHERE datname = '{database}' "
                           f"OR datname LIKE '{database}\\_%'")
    for name in sorted(listed.stdout.split(), reverse=True):  # copies first, the run's own last
        _psql(prefix, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
