"""Apply Alembic revisions. Runs outside any event loop (env.py starts its own)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def revision(url: str, message: str) -> None:
    command.revision(alembic_config(url), message=message, autogenerate=True)


def is_current(url: str) -> bool:
    """Whether the database is at the latest revision (checked without changing it)."""
    import asyncio

    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from registry.adapters.db.engine import create_engine

    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())

    async def current() -> set[str]:
        engine = create_engine(url, null_pool=True)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads()))
        finally:
            await engine.dispose()

    return asyncio.run(current()) == heads


# -- a separate application role (PostgreSQL) -------------------------------------------------------

# What `serve` and `worker` do to each table, beyond SELECT, INSERT, UPDATE and DELETE (the rest):
# the audit log is only appended to, so its owner's triggers cannot be disabled by the service;
# chain heads are created and advanced by writers, never deleted; the revision is only read.
RESTRICTED = {
    "audit_log": ("SELECT", "INSERT"),
    "audit_chains": ("SELECT", "INSERT", "UPDATE"),
    "alembic_version": ("SELECT",),
}
DML = ("SELECT", "INSERT", "UPDATE", "DELETE")


class GrantError(RuntimeError):
    """The role cannot be given the application's privileges safely."""


def app_privileges(tables: list[str]) -> dict[str, tuple[str, ...]]:
    """Each table's privileges for the application role."""
    return {t: RESTRICTED.get(t, DML) for t in tables}


def grant_app_role(url: str, role: str) -> dict[str, tuple[str, ...]]:
    """Give ``role`` exactly what ``serve`` and ``worker`` need on the registry's tables (and
    nothing else it may have held on them before): CONNECT, USAGE on the schema, the privileges of
    :func:`app_privileges` and USAGE on the tables' sequences. Run by the owner, after migrating.
    Refused for the owner itself, a superuser, or a member of the owner's role (each could
    disable the audit log's triggers). Returns what was granted, by table."""
    import asyncio

    from sqlalchemy import text

    from registry.adapters.db.engine import create_engine, is_sqlite
    from registry.adapters.db.tables import metadata

    if is_sqlite(url):
        raise GrantError("--grant-to is for PostgreSQL: SQLite has no roles (the embedded database "
                         "is protected by its file's permissions)")

    async def grant() -> dict[str, tuple[str, ...]]:
        engine = create_engine(url, null_pool=True)
        try:
            async with engine.begin() as conn:
                q = conn.dialect.identifier_preparer.quote_identifier
                found = (await conn.execute(text(
                    "SELECT r.rolsuper, r.rolname = current_user, pg_has_role(r.oid, current_user, 'MEMBER'), "
                    "current_database(), current_schema() FROM pg_roles r WHERE r.rolname = :role"),
                    {"role": role})).first()
                if found is None:
                    raise GrantError(f"role {role!r} does not exist: create it first "
                                     "(CREATE ROLE ... LOGIN PASSWORD ...)")
                superuser, is_owner, member, database, schema = found
                if is_owner or member:
                    raise GrantError(f"role {role!r} is (or is a member of) the migrating role: the "
                                     "application role must be a different role, not the tables' owner")
                if superuser:
                    raise GrantError(f"role {role!r} is a superuser: privileges cannot restrict it")
                existing = set((await conn.execute(text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))).scalars())
                tables = sorted(existing & ({*metadata.tables, "alembic_version"}))
                sequences = list((await conn.execute(text(
                    "SELECT DISTINCT s.relname FROM pg_class s "
                    "JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid "
                    "AND d.deptype IN ('a', 'i') "
                    "JOIN pg_class t ON t.oid = d.refobjid "
                    "WHERE s.relkind = 'S' AND t.relnamespace = s.relnamespace "
                    "AND s.relnamespace = to_regnamespace(current_schema()) "
                    "AND t.relname = ANY(:tables) ORDER BY 1"), {"tables": tables})).scalars())
                who = q(role)
                granted = app_privileges(tables)
                statements = [f"GRANT CONNECT ON DATABASE {q(database)} TO {who}",
                              f"GRANT USAGE ON SCHEMA {q(schema)} TO {who}"]
                for table, privileges in granted.items():
                    statements += [f"REVOKE ALL ON TABLE {q(table)} FROM {who}",
                                   f"GRANT {', '.join(privileges)} ON TABLE {q(table)} TO {who}"]
                for sequence in sequences:
                    statements += [f"REVOKE ALL ON SEQUENCE {q(sequence)} FROM {who}",
                                   f"GRANT USAGE ON SEQUENCE {q(sequence)} TO {who}"]
                for statement in statements:
                    await conn.exec_driver_sql(statement)
                return granted
        finally:
            await engine.dispose()

    return asyncio.run(grant())
