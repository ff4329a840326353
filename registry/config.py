"""Typed settings from ``REGISTRY_*`` environment variables, read once at start."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from registry.domain.artifacts import artifact_path
from registry.domain.errors import ValidationError
from registry.domain.gates import Policy
from registry.domain.stages import Stage

# Standard Webhooks' example schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
# 20 h, 24 h (the delay before each attempt).
DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
# Bucket names the minio client accepts (legacy names included; AWS itself is stricter).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{1,61}[A-Za-z0-9]")


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    allow_private: bool = False
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    order_hold: float = 600.0  # a failing event holds later ones back at most this long
    timeout: float = 15.0  # one attempt, connect to last byte
    lease: float = 60.0  # a claimed delivery is another worker's again after this
    disable_after: float = 5 * 86400.0  # failing this long disables the subscription
    secret_overlap: float = 86400.0  # the old secret keeps signing this long after a rotation
    concurrency: int = 32  # deliveries in flight per worker process


@dataclass(frozen=True, slots=True)
class ArtifactSettings:
    """Where artifact files live: a folder, or ``s3://bucket/prefix`` with the S3 fields."""

    url: str  # an absolute folder path, or s3://bucket/prefix
    s3_endpoint: str | None = None  # http(s)://host[:port]: TLS follows the scheme
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_public_endpoint: str | None = None  # what presigned URLs name, for clients
    max_bytes: int = 20 * 1024**3  # one PUT's body
    upload_ttl: float = 3600.0  # presigned upload URLs
    threads: int = 16  # the store's blocking calls in flight

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")


@dataclass(frozen=True, slots=True)
class DatabaseTimeouts:
    """How long the service waits on PostgreSQL, in seconds. A request waits at most ``pool``
    for a connection and ``command`` for any one answer, so a stalled database is a 503 within
    ``pool + command``; ``statement`` ends a statement on the server first, so an alive but slow
    database gives the same answer and its connection stays usable."""

    connect: float = 5.0  # opening a connection, TLS and authentication included
    pool: float = 5.0  # waiting for a pooled connection (opening it included)
    command: float = 10.0  # waiting for the answer to one statement, on the client
    statement: float = 8.0  # PostgreSQL's statement_timeout for the service's sessions


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    data_dir: Path
    bootstrap_token: str | None
    log_format: str  # "json" or "console"
    db_pool_size: int = 20
    db_timeouts: DatabaseTimeouts = field(default_factory=DatabaseTimeouts)
    body_idle_timeout: float = 30.0  # a request body silent this long is answered 408
    run_workers: bool = True
    secret_key: str | None = None  # None: generated into the data directory
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    lineage_url: str | None = None
    lineage_file: Path | None = None
    lineage_namespace: str = "registry"
    lineage_api_key: str | None = None
    retention_days: float = 30.0
    poll_interval: float = 1.0
    # On SIGTERM: requests in flight get this long to finish, then deliveries in flight get
    # as long again before their leases are released (REGISTRY_SHUTDOWN_GRACE).
    shutdown_grace: float = 10.0
    # Rules for models without a policy of their own, per stage (REGISTRY_DEFAULT_POLICIES).
    default_policies: Mapping[Stage, Policy] = field(default_factory=dict)
    idempotency_ttl: float = 86400.0  # stored answers live at least this long (>= 24 h)
    ui_session_ttl: float = 28800.0  # a web page sign-in lasts this long (8 h), then asks again
    artifacts: ArtifactSettings | None = None  # None: <data dir>/artifacts
    metrics_token: str | None = None  # None: /metrics answers any scrape

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("REGISTRY_DATA_DIR", "./registry-data")).expanduser().resolve()
        url = env.get("REGISTRY_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'registry.db'}"
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ConfigError(
                "REGISTRY_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        log_format = log_format_of(env)
        if log_format is None:
            raise ConfigError("REGISTRY_LOG_FORMAT must be json or console")
        timeout = _number(env, "REGISTRY_WEBHOOK_TIMEOUT", 15.0, low=0.1)
        lease = _number(env, "REGISTRY_WEBHOOK_LEASE", 60.0, low=1.0)
        if lease <= timeout:
            raise ConfigError("REGISTRY_WEBHOOK_LEASE must be longer than REGISTRY_WEBHOOK_TIMEOUT")
        webhooks = WebhookSettings(
            allow_private=_flag(env, "REGISTRY_WEBHOOK_ALLOW_PRIVATE", False),
            retry_schedule=_schedule(env.get("REGISTRY_WEBHOOK_RETRY_SCHEDULE")),
            order_hold=_number(env, "REGISTRY_WEBHOOK_ORDER_HOLD", 600.0),
            timeout=timeout,
            lease=lease,
            disable_after=_number(env, "REGISTRY_WEBHOOK_DISABLE_AFTER", 5 * 86400.0),
            secret_overlap=_number(env, "REGISTRY_WEBHOOK_SECRET_OVERLAP", 86400.0),
            concurrency=int(_number(env, "REGISTRY_WEBHOOK_CONCURRENCY", 32, low=1, integer=True)),
        )
        lineage_file = env.get("REGISTRY_LINEAGE_FILE") or None
        lineage_url = env.get("REGISTRY_LINEAGE_URL") or None
        if lineage_url is not None and not lineage_url.startswith(("http://", "https://")):
            raise ConfigError("REGISTRY_LINEAGE_URL must be an http:// or https:// URL")
        secret_key = env.get("REGISTRY_SECRET_KEY") or None
        if secret_key is not None and any(len(k.strip()) < 32 for k in secret_key.split(",")):
            raise ConfigError("REGISTRY_SECRET_KEY must be at least 32 characters (per key, "
                              "comma-separated, newest first)")
        return cls(
            database_url=url,
            data_dir=data_dir,
            bootstrap_token=env.get("REGISTRY_BOOTSTRAP_TOKEN") or None,
            log_format=log_format,
            db_pool_size=int(_number(env, "REGISTRY_DB_POOL_SIZE", 20, low=1, integer=True)),
            db_timeouts=_db_timeouts(env),
            body_idle_timeout=_number(env, "REGISTRY_BODY_IDLE_TIMEOUT", 30.0, low=0.1),
            run_workers=_flag(env, "REGISTRY_RUN_WORKERS", True),
            secret_key=secret_key,
            webhooks=webhooks,
            lineage_url=lineage_url,
            lineage_file=Path(lineage_file).expanduser().resolve() if lineage_file else None,
            lineage_namespace=env.get("REGISTRY_LINEAGE_NAMESPACE") or "registry",
            lineage_api_key=env.get("REGISTRY_LINEAGE_API_KEY") or None,
            retention_days=_number(env, "REGISTRY_RETENTION_DAYS", 30.0, low=0.0),
            poll_interval=_number(env, "REGISTRY_WORKER_POLL_INTERVAL", 1.0, low=0.01),
            shutdown_grace=_number(env, "REGISTRY_SHUTDOWN_GRACE", 10.0, low=0.0),
            default_policies=_policies(env.get("REGISTRY_DEFAULT_POLICIES")),
            idempotency_ttl=_number(env, "REGISTRY_IDEMPOTENCY_TTL", 86400.0, low=86400.0),
            ui_session_ttl=_number(env, "REGISTRY_UI_SESSION_TTL", 28800.0, low=60.0),
            artifacts=_artifacts(env, data_dir),
            metrics_token=env.get("REGISTRY_METRICS_TOKEN") or None,
        )

    @property
    def artifact_store(self) -> ArtifactSettings:
        return self.artifacts or ArtifactSettings(str(self.data_dir / "artifacts"))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> str | None:
        """The embedded database's file (``:memory:`` for none); None on PostgreSQL."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).database if self.is_sqlite else None

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets and the database


def default_log_format() -> str:
    """Console on a terminal, JSON otherwise (a log shipper reads it)."""
    return "console" if sys.stderr.isatty() else "json"


def log_format_of(env: Mapping[str, str]) -> str | None:
    """``REGISTRY_LOG_FORMAT``, or the default when it is unset; None when it names no format."""
    log_format = env.get("REGISTRY_LOG_FORMAT") or default_log_format()
    return log_format if log_format in ("json", "console") else None


def _db_timeouts(env: Mapping[str, str]) -> DatabaseTimeouts:
    default = DatabaseTimeouts()
    timeouts = DatabaseTimeouts(
        connect=_number(env, "REGISTRY_DB_CONNECT_TIMEOUT", default.connect, low=0.1),
        pool=_number(env, "REGISTRY_DB_POOL_TIMEOUT", default.pool, low=0.1),
        command=_number(env, "REGISTRY_DB_COMMAND_TIMEOUT", default.command, low=0.1),
        statement=_number(env, "REGISTRY_DB_STATEMENT_TIMEOUT", default.statement, low=0.1),
    )
    if timeouts.statement >= timeouts.command:
        raise ConfigError("REGISTRY_DB_STATEMENT_TIMEOUT must be shorter than "
                          "REGISTRY_DB_COMMAND_TIMEOUT (the server ends a slow statement first)")
    return timeouts


# S3 takes at most 10,000 parts; the S3 store sends 16 MiB parts.
MAX_ARTIFACT_BYTES = 10_000 * 16 * 1024**2


def _max_artifact_bytes(env: Mapping[str, str]) -> int:
    value = int(_number(env, "REGISTRY_MAX_ARTIFACT_BYTES", 20 * 1024**3, low=1, integer=True))
    if value > MAX_ARTIFACT_BYTES:
        raise ConfigError(f"REGISTRY_MAX_ARTIFACT_BYTES is at most {MAX_ARTIFACT_BYTES} "
                          "(10,000 parts of 16 MiB)")
    return value


def _artifacts(env: Mapping[str, str], data_dir: Path) -> ArtifactSettings:
    url = env.get("REGISTRY_ARTIFACTS_URL", "").strip() or str(data_dir / "artifacts")
    common = {
        "max_bytes": _max_artifact_bytes(env),
        # SigV4 presigned URLs live at most 7 days.
        "upload_ttl": min(_number(env, "REGISTRY_ARTIFACT_UPLOAD_TTL", 3600.0, low=60.0), 604800.0),
        "threads": int(_number(env, "REGISTRY_ARTIFACT_THREADS", 16, low=1, integer=True)),
    }
    if not url.startswith("s3://"):
        if "://" in url and not url.startswith("file://"):
            raise ConfigError("REGISTRY_ARTIFACTS_URL must be a folder, file:///folder or "
                              "s3://bucket/prefix")
        if url.startswith("file://"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
                raise ConfigError("REGISTRY_ARTIFACTS_URL file:// URLs name a local folder: "
                                  "file:///folder")
            url = unquote(parts.path)
        folder = Path(url).expanduser().resolve()
        return ArtifactSettings(str(folder), **common)
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    if not bucket:
        raise ConfigError("REGISTRY_ARTIFACTS_URL s3://bucket/prefix needs a bucket")
    if (not _BUCKET.fullmatch(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket
            or re.fullmatch(r"[0-9.]+", bucket)):
        raise ConfigError(f"REGISTRY_ARTIFACTS_URL: {bucket!r} is not a valid S3 bucket name "
                          "(3-63 letters, digits, '.', '-', '_')")
    prefix = url.removeprefix("s3://").partition("/")[2].strip("/")
    if prefix:
        try:
            artifact_path(prefix)
        except ValidationError as exc:
            raise ConfigError(f"REGISTRY_ARTIFACTS_URL: the prefix {prefix!r} is refused: "
                              f"{exc.detail}") from None
    endpoint = env.get("REGISTRY_S3_ENDPOINT", "").strip().rstrip("/")
    public = env.get("REGISTRY_S3_PUBLIC_ENDPOINT", "").strip().rstrip("/") or None
    for name, value in (("REGISTRY_S3_ENDPOINT", endpoint), ("REGISTRY_S3_PUBLIC_ENDPOINT", public)):
        if value is not None and not re.fullmatch(r"https?://[^/?#\s]+", value):
            raise ConfigError(f"{name} must be http(s)://host[:port] (TLS follows the scheme)")
    access, secret = env.get("REGISTRY_S3_ACCESS_KEY", ""), env.get("REGISTRY_S3_SECRET_KEY", "")
    if not access or not secret:
        raise ConfigError("an s3:// REGISTRY_ARTIFACTS_URL needs REGISTRY_S3_ACCESS_KEY and "
                          "REGISTRY_S3_SECRET_KEY")
    return ArtifactSettings(url, s3_endpoint=endpoint, s3_access_key=access, s3_secret_key=secret,
                            s3_region=env.get("REGISTRY_S3_REGION", "").strip() or "us-east-1",
                            s3_public_endpoint=public, **common)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _number(env: Mapping[str, str], name: str, default: float, *, low: float = 0.0,
            integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {'whole ' if integer else ''}number") from None
    if not value >= low or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number of at least {low:g}")
    return value


def _schedule(raw: str | None) -> tuple[float, ...]:
    if raw is None or not raw.strip():
        return DEFAULT_RETRY_SCHEDULE
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError("REGISTRY_WEBHOOK_RETRY_SCHEDULE must be comma-separated seconds") from None
    if not values or any(not 0 <= v < float("inf") for v in values):
        raise ConfigError("REGISTRY_WEBHOOK_RETRY_SCHEDULE must be non-negative seconds")
    return values


def _policies(raw: str | None) -> dict[Stage, Policy]:
    """``{"staging": {...}, "production": {...}}``, each a policy body as the API takes it."""
    if raw is None or not raw.strip():
        return {}
    name = "REGISTRY_DEFAULT_POLICIES"
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{name} must be a JSON object of stage names to policies")
    policies = {}
    for stage_name, rules in parsed.items():
        try:
            stage = Stage.parse(stage_name)
            if not isinstance(rules, dict):
                raise ValidationError("a policy is a JSON object")
            policies[stage] = Policy.parse(rules, stage)
        except ValidationError as exc:
            raise ConfigError(f"{name}: {stage_name}: {exc.detail}") from None
    return policies
