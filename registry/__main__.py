"""Command line: serve, worker, migrate, export, restore, token, audit, openapi, import, and more.

``serve``, ``worker``, ``migrate``, ``token create --bootstrap``, ``import mlflow``, ``export`` and
``restore`` work on the database directly (an operator on the server host); every other command
is an HTTP client of a running service (``registry.cli``, with ``REGISTRY_URL`` and
``REGISTRY_TOKEN``), the pipeline commands included (``registry.pipeline``: register, checks,
gate, promote, rollback, requests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from registry import artifact_cli, backup, cli, mlflow_import, pipeline
from registry.config import ConfigError, Settings

DEFAULT_OPENAPI = Path("openapi/openapi.json")
T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        from registry.log import invalid_configuration

        invalid_configuration(str(exc))


def _ensure_schema(settings: Settings) -> None:
    from registry.bootstrap import SchemaNotCurrentError, ensure_schema
    from registry.log import fail

    try:
        ensure_schema(settings)
    except SchemaNotCurrentError as exc:
        fail(str(exc))


def _when_database_answers(settings: Settings, step: Callable[[], T], what: str) -> T:
    """Run a start-up step that needs the database, waiting while the database cannot serve it
    (down, starting, every connection slot taken): a process started beside its database, or
    while others hold all of ``max_connections``, waits and says so instead of exiting.

    The embedded database has no server to wait for: only another process's write lock passes;
    a file that cannot be opened (a folder, a folder not writable) ends the command at once."""
    import time

    import structlog

    from registry.adapters.db.unit_of_work import database_busy
    from registry.bootstrap import database_unavailable
    from registry.log import fail

    log = structlog.get_logger("registry.start")
    pause = 0.5
    while True:
        try:
            return step()
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            if settings.is_sqlite and not database_busy(exc):
                fail(f"cannot open the SQLite database {settings.sqlite_path}: "
                     f"{getattr(exc, 'orig', exc)} (is it a folder, or in a folder this user "
                     f"cannot write? set REGISTRY_DATABASE_URL or REGISTRY_DATA_DIR)")
            log.warning("database_unavailable_at_start", step=what,
                        error=f"{type(exc).__name__}: {exc}"[:300], retry_in=pause)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)


async def _with_container(settings: Settings, fn):  # type: ignore[no-untyped-def]
    from registry.bootstrap import build

    container = build(settings)
    try:
        return await fn(container)
    finally:
        await container.close()


def _local_artifacts(settings: Settings) -> None:
    """Make a local artifact folder (readiness checks that it stays there). On PostgreSQL the
    service may run as several replicas: each must see the same folder, so say so."""
    import structlog

    if settings.artifact_store.is_s3:
        return
    try:
        Path(settings.artifact_store.url).mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # /readyz reports it until someone fixes it
        structlog.get_logger("registry.start").error("artifact_folder_unusable", error=str(exc))
    if not settings.is_sqlite:
        structlog.get_logger("registry.start").warning(
            "local_artifact_store_with_postgresql", folder=settings.artifact_store.url,
            detail="every serve and worker process must share this folder (or use "
                   "REGISTRY_ARTIFACTS_URL=s3://...); a replica with another folder answers 404")


def _shared_metrics_folder() -> None:
    """Under ``--workers N`` each server process counts into files of one folder, and a scrape
    answered by any of them adds all up (prometheus_client's multiprocess mode). The processes
    inherit the variable; an operator's folder loses its old ``*.db`` files first, since they
    would add old counts."""
    import atexit
    import os
    import shutil
    import tempfile

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for old in Path(folder).glob("*.db"):
            old.unlink(missing_ok=True)
    else:
        made = tempfile.mkdtemp(prefix="registry-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        atexit.register(shutil.rmtree, made, True)  # after uvicorn.run: every process has ended


def cmd_serve(args: argparse.Namespace) -> int:
    import math

    import uvicorn

    from registry.log import configure, fatal
    from registry.services.tokens import ensure_bootstrap_token
    from registry.serving import exit_cleanly_on_sigterm

    settings = _settings()
    configure(settings.log_format)
    if settings.is_sqlite and args.workers > 1:
        fatal("refusing --workers > 1 on SQLite: the embedded database has one writer; "
              "use PostgreSQL (REGISTRY_DATABASE_URL) to scale out")
        return 2
    # before the server starts, outside its event loop
    _when_database_answers(settings, lambda: _ensure_schema(settings), "schema check")
    _local_artifacts(settings)

    async def prepare(c):  # type: ignore[no-untyped-def]
        c.cipher.box()  # the webhook-secret key exists before any server process needs it
        return await ensure_bootstrap_token(c.uow, settings.bootstrap_token)

    token = _when_database_answers(settings, lambda: asyncio.run(_with_container(settings, prepare)),
                                   "bootstrap token")
    if token is not None:
        shown = "(from REGISTRY_BOOTSTRAP_TOKEN)" if settings.bootstrap_token else token
        print(f"Admin token, shown once: {shown}", flush=True)
    if args.workers > 1:  # after this process has used the database: it serves nothing
        _shared_metrics_folder()
    print(f"Serving the model registry on http://{args.host}:{args.port} "
          f"({'SQLite' if settings.is_sqlite else 'PostgreSQL'}, {args.workers} worker(s))", flush=True)

    exit_cleanly_on_sigterm(args.workers)
    uvicorn.run("registry.serving:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False,
                log_config=None, log_level=None,  # uvicorn's loggers go through registry.log
                loop="uvloop" if sys.platform != "win32" else "auto", http="httptools",
                lifespan="on", timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
                # Outlast clients' and load balancers' idle timeouts (httpx: 5 s, ALB: 60 s), so
                # the client closes an idle connection first and never reuses one being closed.
                timeout_keep_alive=75)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """The relay, dispatcher and pruner without the HTTP API, until SIGINT or SIGTERM."""
    import signal

    from registry.bootstrap import WorkersAlreadyRunning
    from registry.log import configure, fatal
    from registry.workers.runner import Workers

    settings = _settings()
    configure(settings.log_format)
    _when_database_answers(settings, lambda: _ensure_schema(settings), "schema check")
    _local_artifacts(settings)

    async def run(container):  # type: ignore[no-untyped-def]
        container.cipher.box()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        workers = Workers(container)
        try:
            await workers.start()
        except WorkersAlreadyRunning as exc:
            fatal(str(exc))
            return 2
        metrics_server = None
        if args.metrics_port is not None:
            from registry.api.metrics import serve_metrics

            try:
                metrics_server = await serve_metrics(container, args.metrics_host, args.metrics_port,
                                                       workers.problem)
            except OSError as exc:
                fatal(f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}")
                await workers.stop(0)
                return 2
        print(f"Worker {workers.name} running ({'SQLite' if settings.is_sqlite else 'PostgreSQL'})",
              flush=True)
        await stop.wait()
        if metrics_server is not None:
            metrics_server.close()
        await workers.stop(settings.shutdown_grace)
        return 0

    return asyncio.run(_with_container(settings, run))


def cmd_migrate(args: argparse.Namespace) -> int:
    from registry.adapters.db.migrate import GrantError, grant_app_role
    from registry.bootstrap import migrate
    from registry.log import configure, fatal

    settings = _settings()
    configure(settings.log_format)  # alembic's lines too
    if args.grant_to is not None and settings.is_sqlite:
        fatal("--grant-to needs PostgreSQL: SQLite has no roles (protect the embedded "
              "database with its file's permissions)")
        return 2
    migrate(settings)
    print("database is at the latest revision")
    if args.grant_to is not None:
        try:
            granted = grant_app_role(settings.database_url, args.grant_to)
        except GrantError as exc:
            fatal(str(exc))
            return 2
        for table, privileges in granted.items():
            print(f"granted {args.grant_to}: {', '.join(privileges)} on {table}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    if not args.bootstrap:
        return cli.token_create(args)
    return cmd_token_bootstrap(args)


def cmd_token_bootstrap(args: argparse.Namespace) -> int:
    """Create a token in the database directly: the first one, on the server host."""
    from datetime import datetime

    from registry.domain.errors import RegistryError
    from registry.services.ports import Actor
    from registry.services.tokens import CreateToken, create_token

    cmd = CreateToken(args.name or "admin", args.role or "admin", args.principal, args.models,
                      datetime.fromisoformat(args.expires_at) if args.expires_at else None)
    settings = _settings()
    _ensure_schema(settings)
    try:
        _, secret = asyncio.run(_with_container(
            settings, lambda c: create_token(cmd, c.uow(Actor("cli", "cli")))))
    except RegistryError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(secret)
    return 0


def cmd_import_mlflow(args: argparse.Namespace) -> int:
    """Copy an MLflow registry into the database directly (registry.mlflow_import)."""
    import logging

    from registry.log import configure

    settings = _settings()
    configure(settings.log_format, logging.WARNING)  # stdout is the report's
    _ensure_schema(settings)
    return asyncio.run(_with_container(settings, lambda c: mlflow_import.import_mlflow(args, c)))


def openapi_document() -> dict:
    from registry.api.app import create_app
    from registry.api.openapi import document
    from registry.bootstrap import build

    settings = Settings.from_env({"REGISTRY_DATABASE_URL": "sqlite+aiosqlite:///:memory:"})
    return document(create_app(build(settings)))


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_openapi())
    print(f"wrote {args.output}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m registry", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="apply migrations, then run the HTTP API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="HTTP worker processes (1 on SQLite)")
    s.set_defaults(fn=cmd_serve)

    w = sub.add_parser("worker", help="run the outbox relay and webhook/lineage dispatcher alone")
    w.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics at /metrics on this port (default: none)")
    w.add_argument("--metrics-host", default="127.0.0.1",
                   help="the address for --metrics-port (0.0.0.0 in a container)")
    w.set_defaults(fn=cmd_worker)

    m = sub.add_parser("migrate", help="apply pending database migrations")
    m.add_argument("--grant-to", metavar="ROLE",
                   help="then give this existing, separate role what serve and worker need, and no "
                        "more (PostgreSQL; run as the tables' owner; again after each upgrade)")
    m.set_defaults(fn=cmd_migrate)

    t = sub.add_parser("token", help="API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser("create", help="create a token and print its secret once")
    tc.add_argument("--bootstrap", action="store_true",
                    help="write to the database directly, on the server host (default name and role: admin)")
    tc.add_argument("--name")
    tc.add_argument("--role", help="viewer, editor, stager, releaser or admin")
    tc.add_argument("--principal", default=None, help="the person or service (default: the name)")
    tc.add_argument("--model", dest="models", action="extend", nargs="+", metavar="PATTERN",
                    help="model-name globs the token may see (default: all models)")
    tc.add_argument("--expires-at", type=cli.rfc3339, metavar="RFC3339")
    tc.set_defaults(fn=cmd_token_create)
    tsub.add_parser("list", help="list tokens, one JSON object per line (no secrets)").set_defaults(
        fn=cli.token_list)
    tr = tsub.add_parser("revoke", help="revoke a token")
    tr.add_argument("id", type=int)
    tr.set_defaults(fn=cli.token_revoke)

    a = sub.add_parser("audit", help="export, anchor and verify the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True)
    ae = asub.add_parser("export", help="write the audit entries as JSON lines")
    ae.add_argument("--model")
    ae.add_argument("--output", type=Path, help="a file (default: stdout)")
    ae.set_defaults(fn=cli.audit_export)
    aa = asub.add_parser("anchor", help="save each chain's head (seq and hash) to check later")
    aa.add_argument("--model")
    aa.add_argument("--output", type=Path, required=True)
    aa.set_defaults(fn=cli.audit_anchor)
    av = asub.add_parser("verify", help="recompute the chains here; exit 1 on any break")
    av.add_argument("--model")
    av.add_argument("--anchor", type=Path, help="a file from `audit anchor`")
    av.set_defaults(fn=cli.audit_verify)

    i = sub.add_parser("import", help="copy another registry into this one (on the server host)")
    isub = i.add_subparsers(dest="import_command", required=True)
    mlflow_import.add_parser(isub).set_defaults(fn=cmd_import_mlflow)

    o = sub.add_parser("openapi", help="write the OpenAPI document")
    o.add_argument("--output", type=Path, default=DEFAULT_OPENAPI)
    o.set_defaults(fn=cmd_openapi)

    pipeline.add_commands(sub)
    artifact_cli.add_commands(sub)
    backup.add_commands(sub)
    return p


# The exit status of a process killed by SIGPIPE (128 + 13), as the shell reports `yes | head`.
BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code = args.fn(args)
        sys.stdout.flush()  # a reader gone early shows here, not in the interpreter's last flush
    except BrokenPipeError:
        # The reader of stdout closed it (`--json | head`): stop quietly with SIGPIPE's status,
        # and point stdout at devnull so the interpreter's own flush at exit cannot fail again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
