"""The ``export`` and ``restore`` commands: what they did (rows per table, where, how long), or
why not, with exit status 1. Heavy modules load inside the commands, not at import."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

READ_ME = "README, Backup, restore and retention"


def add_commands(sub: Any) -> None:
    e = sub.add_parser("export", help="write the whole registry to an archive (on the server host)",
                       description="Write every model, version, alias, policy, check, request, "
                       "comment, token (without secrets), webhook (secrets encrypted) and the "
                       "complete audit log to a gzip'd JSON Lines archive, from one consistent "
                       "snapshot; the service may keep running.")
    e.add_argument("file", type=Path, help="the archive to write (e.g. registry.jsonl.gz)")
    e.add_argument("--force", action="store_true", help="replace the file if it exists")
    e.set_defaults(fn=cmd_export)
    r = sub.add_parser("restore", help="load an archive into an empty database (on the server host)",
                       description="Load an archive from `export` into a new database (migrated, "
                       "never served; one without tables is migrated first), in one transaction, "
                       "then verify the audit log. Refuses a database that holds registry data.")
    r.add_argument("file", type=Path, help="an archive written by `python -m registry export`")
    r.set_defaults(fn=cmd_restore)


def _settings() -> Any:
    import logging

    from registry.config import ConfigError, Settings
    from registry.log import configure, invalid_configuration

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        invalid_configuration(str(exc))
    configure(settings.log_format, logging.WARNING)  # stdout is the report's
    logging.getLogger("alembic").setLevel(logging.WARNING)  # not its plugin set-up on every run
    return settings


def _backend(settings: Any) -> str:
    return "SQLite" if settings.is_sqlite else "PostgreSQL"


def _table(rows: dict[str, int]) -> None:
    width = max(map(len, rows), default=0)
    for name, count in rows.items():
        print(f"  {name:<{width}}  {count:>9}")


def cmd_export(args: argparse.Namespace) -> int:
    import asyncio

    from registry.backup.export import ExportError, export_archive

    settings = _settings()
    database = settings.sqlite_path
    if settings.is_sqlite and not (database and Path(database).is_file()):
        print(f"error: there is no database at {database} (REGISTRY_DATA_DIR, "
              "REGISTRY_DATABASE_URL)", file=sys.stderr)
        return 1
    from sqlalchemy.exc import DBAPIError

    try:
        s = asyncio.run(export_archive(settings.database_url, args.file, force=args.force))
    except (ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DBAPIError as exc:  # e.g. a role without the privileges export needs
        print(f"error: the database refused the export: {exc.orig}; no archive was written",
              file=sys.stderr)
        return 1
    print(f"exported the registry ({_backend(settings)}, schema {s.schema_revision}) to {s.path} "
          f"in {s.seconds:.1f} s: {sum(s.rows.values())} rows, {s.path.stat().st_size / 1024:.1f} KiB")
    _table(s.rows)
    print("left out (installation state): "
          + ", ".join(f"{name} {count}" for name, count in s.excluded.items()))
    if s.unfinished_deliveries:
        print(f"warning: {s.unfinished_deliveries} webhook/lineage deliveries were not finished; "
              "a restored registry does not send them (let the workers finish first)")
    print(f"keep with the archive: the webhook secret key (REGISTRY_SECRET_KEY, or "
          f"{settings.data_dir / 'secret.key'}) and a copy of the artifact files "
          f"({settings.artifact_store.url}); see {READ_ME}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from registry.backup.archive import ArchiveError
    from registry.backup.restore import RestoreError, restore_archive

    settings = _settings()
    if settings.is_sqlite:
        settings.ensure_data_dir()
    if not args.file.is_file():
        print(f"error: there is no archive at {args.file}", file=sys.stderr)
        return 1
    from sqlalchemy.exc import DBAPIError

    try:
        s = restore_archive(settings.database_url, args.file)
    except (ArchiveError, RestoreError) as exc:
        print(f"error: {exc}; nothing was restored", file=sys.stderr)
        return 1
    except DBAPIError as exc:  # e.g. a role that may not create the tables or write the rows
        print(f"error: the database refused the restore: {exc.orig}; nothing was restored",
              file=sys.stderr)
        return 1
    print(f"restored {s.path} (written {s.created_at} from {s.source_backend}, schema "
          f"{s.schema_revision}) into {_backend(settings)}"
          f"{' (migrated first)' if s.migrated else ''} in {s.seconds:.1f} s: "
          f"{sum(s.rows.values())} rows")
    _table(s.rows)
    ok = _verify_audit(settings)
    print("tokens were restored without their secrets and cannot sign in: create one with "
          "`python -m registry token create --bootstrap`, then revoke the old ones; webhooks "
          "sign with their secrets only under the same REGISTRY_SECRET_KEY")
    return 0 if ok else 1


def _verify_audit(settings: Any) -> bool:
    """Recompute every audit chain of the restored database against its head, as
    ``GET /audit/verify`` does."""
    import asyncio

    from registry.bootstrap import build
    from registry.services.audit import verify_audit
    from registry.services.ports import Actor

    async def verify() -> Any:
        container = build(settings)
        try:
            return await verify_audit(None, container.uow(Actor("restore", "restore")))
        finally:
            await container.close()

    result = asyncio.run(verify())
    if result.ok:
        print(f"audit ok: {result.chains} chains, {result.checked} entries checked against "
              "their heads (as in the archive)")
    else:
        print(f"audit BROKEN: chain {result.first_bad_chain} at seq {result.first_bad_seq}: "
              f"{result.reason} (as it was in the archive)")
    return bool(result.ok)
