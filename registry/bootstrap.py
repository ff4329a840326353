"""Composition root: builds the engine, the unit-of-work factory, the authenticator, and what
the workers deliver with (outbox store, webhook and lineage senders)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from registry.adapters.artifacts.local import LocalStore
from registry.adapters.artifacts.s3 import S3Location, S3Store
from registry.adapters.db.engine import Timeouts, create_engine
from registry.adapters.db.idempotency import IdempotentCall
from registry.adapters.db.outbox import OutboxStore
from registry.adapters.db.probe import ReadinessProbe
from registry.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from registry.adapters.lineage import FileSink, LineageBuilder, lineage_endpoint
from registry.adapters.secrets import LazySecretBox
from registry.adapters.webhooks import (
    HttpPoster,
    Outcome,
    UrlGuard,
    plain_poster,
    webhook_headers,
    webhook_poster,
)
from registry.config import ArtifactSettings, Settings
from registry.services.ports import ArtifactStore
from registry.services.sessions import SessionAuthenticator
from registry.services.tokens import Authenticator
from registry.services.webhooks import WebhookTools

LINEAGE_HTTP, LINEAGE_FILE = "lineage:http", "lineage:file"


@dataclass
class Senders:
    """Made on first use, inside the event loop that sends."""

    settings: Settings
    _webhooks: HttpPoster | None = None
    _lineage: HttpPoster | None = None
    file: FileSink | None = None

    def webhooks(self) -> HttpPoster:
        if self._webhooks is None:
            guard = UrlGuard(self.settings.webhooks.allow_private)
            self._webhooks = webhook_poster(guard, self.settings.webhooks.timeout)
        return self._webhooks

    def lineage(self) -> HttpPoster:
        if self._lineage is None:
            key = self.settings.lineage_api_key
            self._lineage = plain_poster(self.settings.webhooks.timeout,
                                         {"authorization": f"Bearer {key}"} if key else None)
        return self._lineage

    async def webhook(self, url: str, event_id: str, secrets: list[str], body: bytes) -> Outcome:
        """POST a Standard Webhooks request signed with every given secret."""
        return await self.webhooks().post(url, webhook_headers(event_id, secrets, body), body)

    @staticmethod
    def failure(error: str) -> Outcome:
        return Outcome(None, 0.0, error[:500])

    async def close(self) -> None:
        for poster in (self._webhooks, self._lineage):
            if poster is not None:
                await poster.aclose()
        self._webhooks = self._lineage = None


class WorkersAlreadyRunning(RuntimeError):
    """Another process already runs the workers on this SQLite database."""


class WorkerLock:
    """An advisory lock (flock) on ``<database>.workers.lock``, held while workers run; the OS
    drops it if the process dies."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, database_url: str) -> WorkerLock:
        import fcntl
        import os

        from sqlalchemy.engine import make_url

        database = make_url(database_url).database
        if not database or database == ":memory:":
            return cls(None)
        fd = os.open(f"{database}.workers.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkersAlreadyRunning(
                f"another process runs the workers on {database}; on SQLite only one may "
                "(serve runs them unless REGISTRY_RUN_WORKERS=false)") from None
        return cls(fd)

    def release(self) -> None:
        import os

        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    uow: SqlUnitOfWorkFactory
    authenticator: Authenticator
    cipher: LazySecretBox
    webhook_tools: WebhookTools
    outbox: OutboxStore
    senders: Senders
    artifacts: ArtifactStore
    probe: ReadinessProbe
    lineage_url: str | None = None
    sessions: SessionAuthenticator = field(init=False)  # the web pages' sign-ins

    def __post_init__(self) -> None:
        self.sessions = SessionAuthenticator(self.uow)

    async def not_ready(self) -> str | None:
        """Why the service cannot serve now (the database does not answer within 1.5 s, or the
        artifact store is unusable), or None."""
        if not await self.probe.ready():
            return "the database is unreachable"
        return await self.artifacts.problem()

    def idempotent_call(self, key_hash: str, fingerprint: str) -> IdempotentCall:
        """A POST carrying an Idempotency-Key, for its first writer to join."""
        return IdempotentCall(key_hash, fingerprint, timedelta(seconds=self.settings.idempotency_ttl),
                              self.cipher)

    def worker_lock(self) -> WorkerLock:
        """SQLite: the one process that may run the workers holds this (raises otherwise)."""
        return WorkerLock.acquire(self.settings.database_url)

    async def close(self) -> None:
        await self.senders.close()
        await self.artifacts.close()
        await self.probe.close()
        if self.uow.bell is not None:
            await self.uow.bell.close()
        await self.engine.dispose()


def migrate(settings: Settings) -> None:
    """Apply pending migrations (outside any event loop)."""
    from registry.adapters.db.migrate import upgrade

    if settings.is_sqlite:
        settings.ensure_data_dir()
    upgrade(settings.database_url)


def ensure_schema(settings: Settings) -> None:
    """The embedded default migrates itself; PostgreSQL is migrated by `python -m registry migrate`
    (once, by the schema's owner), so replicas never race and the service can run as a non-owner."""
    from registry.adapters.db.migrate import is_current

    if settings.is_sqlite:
        migrate(settings)
    elif not is_current(settings.database_url):
        raise SchemaNotCurrentError(
            "the database is not at the latest schema revision: run `python -m registry migrate`")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot serve now (down, stalled, out of connection
    slots) rather than that something is wrong with what was asked."""
    from registry.adapters.db.unit_of_work import translate_db_error
    from registry.domain.errors import UnavailableError

    return isinstance(exc, UnavailableError) or isinstance(translate_db_error(exc), UnavailableError)


class SchemaNotCurrentError(RuntimeError):
    """The PostgreSQL schema needs `python -m registry migrate` first."""


def artifact_store(settings: ArtifactSettings) -> ArtifactStore:
    if not settings.is_s3:
        return LocalStore(Path(settings.url), settings.threads)
    bucket, _, prefix = settings.url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    return S3Store(S3Location(
        endpoint=settings.s3_endpoint, bucket=bucket, prefix=f"{prefix}/" if prefix else "",
        access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
        region=settings.s3_region, public_endpoint=settings.s3_public_endpoint,
    ), settings.threads)


def build(settings: Settings) -> Container:
    if settings.is_sqlite:
        settings.ensure_data_dir()
    t = settings.db_timeouts
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size,
                           timeouts=Timeouts(t.connect, t.pool, t.command, t.statement))
    uow = SqlUnitOfWorkFactory(engine, default_policies=settings.default_policies)
    cipher = LazySecretBox(settings.secret_key, settings.data_dir)
    guard = UrlGuard(settings.webhooks.allow_private)
    tools = WebhookTools(guard.check, cipher, settings.webhooks.secret_overlap)
    sinks = [LINEAGE_HTTP] if settings.lineage_url else []
    senders = Senders(settings)
    if settings.lineage_file is not None:
        sinks.append(LINEAGE_FILE)
        senders.file = FileSink(settings.lineage_file)
    outbox = OutboxStore(uow, sinks=sinks, lineage=LineageBuilder(settings.lineage_namespace),
                         first_delay=settings.webhooks.retry_schedule[0])
    return Container(settings, engine, uow, Authenticator(uow), cipher, tools, outbox, senders,
                     artifact_store(settings.artifact_store), ReadinessProbe(engine),
                     lineage_endpoint(settings.lineage_url) if settings.lineage_url else None)
