"""What the services need from the outside world. The database adapter implements these; unit
tests of the services implement them in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from registry.domain.artifacts import Artifact
from registry.domain.events import Change, SystemChange
from registry.domain.gates import Policy
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.permissions import Role
from registry.domain.stages import Stage


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting (``name`` is what the audit log records), with what role and over which
    models (``models``: name globs; None for all). Operators on the server host act as admin."""

    name: str
    request_id: str
    role: Role = Role.ADMIN
    models: tuple[str, ...] | None = None
    principal: str | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    principal: str
    role: str
    expires_at: datetime | None
    revoked_at: datetime | None
    models: list[str] | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A web page sign-in: the token it was opened with, its CSRF secret and when it ends."""

    id: int
    token: TokenRecord
    csrf: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    id: int
    url: str
    description: str
    event_types: list[str]
    models: list[str] | None
    status: str  # active, paused, disabled
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_until: datetime | None
    created_at: datetime
    updated_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    number: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    target: str
    event_id: str
    event_type: str
    model: str | None
    sequence: int
    state: str  # pending, delivered, failed
    attempts: int
    next_attempt_at: datetime | None
    in_flight: bool
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptRecord]


@dataclass(frozen=True, slots=True)
class AliasRecord:
    version: int
    protected: bool


@dataclass(frozen=True, slots=True)
class CheckRecord:
    id: int
    name: str
    status: str  # pending, success, failure
    details_url: str | None
    summary: str | None
    reported_by: str
    reported_at: datetime


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    stage: str
    rules: dict[str, Any]
    updated_at: datetime
    updated_by: str


@dataclass(slots=True)
class RequestRecord:
    """A transition request. ``approvals``: ``[{principal, actor, comment, at, voided_at}]``."""

    id: int
    model_id: int
    model: str
    version: int
    to_stage: str
    state: str  # pending, approved, applied, rejected, cancelled
    requested_by: str
    requester_principal: str
    comment: str | None
    approvals: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    decided_by: str | None = None
    decision_comment: str | None = None
    # What the current policy of ``to_stage`` asks for; filled in by the services that answer.
    required_approvals: int | None = field(default=None, compare=False)

    @property
    def valid_approvals(self) -> list[dict[str, Any]]:
        return [a for a in self.approvals if a.get("voided_at") is None]

    @property
    def is_open(self) -> bool:
        return self.state in ("pending", "approved")

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "to_stage": self.to_stage, "state": self.state,
                "requested_by": self.requested_by, "requester_principal": self.requester_principal,
                "approved_by": [a["principal"] for a in self.valid_approvals]}


@dataclass(frozen=True, slots=True)
class CommentRecord:
    """A comment on a version (``request_id`` None) or on one of its transition requests.
    ``author`` is the writer's principal; ``updated_at`` is set once it was edited."""

    id: int
    model: str
    version: int
    request_id: int | None
    author: str
    body: str
    created_at: datetime
    updated_at: datetime | None = None
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RequestQuery:
    patterns: tuple[str, ...] | None  # the caller's model globs (None: all)
    model: str | None = None
    state: str | None = None
    requester: str | None = None  # a principal


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit entries a caller asks for, and which chains it may see at all."""

    chain: str | None = None  # one model's chain; None for every visible chain
    patterns: tuple[str, ...] | None = None  # the caller's model globs (None: all models)
    include_system: bool = False  # the system chain is for admins only
    version: int | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """A presigned upload: the client PUTs to ``key``; sealing checks it against size and sha256."""

    id: int
    path: str
    size: int
    sha256: str
    key: str
    created_by: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Written:
    """What a store wrote: the bytes counted and hashed on the way."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Staged:
    """Bytes a store holds for ``key`` where no reader sees them yet (a temporary file, an
    incomplete multipart upload); ``publish`` puts them in place, ``discard`` drops them."""

    key: str
    written: Written
    token: Any  # the store's own handle


class ArtifactStore(Protocol):
    """Where artifact bytes live. Keys are ``/``-separated and relative to the store's root; the
    blocking work (disk, the S3 client) runs in the store's own bounded thread pool."""

    location: str  # the root, for people: s3://bucket/prefix or file:///path

    async def stage(self, key: str, body: AsyncIterator[bytes], length: int | None) -> Staged:
        """Receive ``body`` for ``key``, hashing on the way, without showing it there yet. A
        failure leaves nothing behind."""
        ...
    async def publish(self, staged: Staged) -> None:
        """Put staged bytes at their key, whole (never a partial object)."""
        ...
    async def discard(self, staged: Staged) -> None: ...
    async def copy(self, source: str, target: str) -> bool:
        """Copy an object (a presigned upload) to ``target``; False when there is none."""
        ...
    async def delete(self, key: str) -> None:
        """Remove the object if it exists."""
        ...
    async def digest(self, key: str) -> Written | None:
        """Re-read and hash the object; None when it does not exist."""
        ...
    def read(self, key: str) -> AsyncIterator[bytes]: ...
    def download_url(self, key: str, filename: str) -> str | None:
        """A short-lived URL the client may fetch directly, or None: stream it through us."""
        ...
    def upload_url(self, key: str, ttl: float) -> str | None:
        """A presigned PUT URL, or None when the store cannot hand one out."""
        ...
    async def problem(self) -> str | None:
        """Why the store cannot serve now (for readiness), or None."""
        ...
    async def close(self) -> None: ...


class Repository(Protocol):
    async def get_model(self, name: str, *, aliases: bool = False) -> RegisteredModel | None:
        """The model; with ``aliases``, their names too (in the same query)."""
        ...
    async def lock_model(self, name: str) -> RegisteredModel: ...
    async def lock_chain(self, chain: str) -> Any:
        """Lock a chain's head row (the system chain's, for token writes) for this transaction."""
        ...
    async def add_model(self, name: str, description: str, tags: dict[str, str], actor: str,
                        now: datetime) -> RegisteredModel: ...
    async def update_model(self, model: RegisteredModel) -> None: ...
    async def delete_model(self, model: RegisteredModel) -> None: ...
    async def list_models(self, name_prefix: str | None, after: str | None, limit: int,
                          patterns: Sequence[str] | None = None) -> list[RegisteredModel]: ...

    async def allocate_version(self, model: RegisteredModel) -> int: ...
    async def add_version(self, version: ModelVersion) -> None: ...
    async def get_version(self, model: RegisteredModel, number: int) -> ModelVersion | None: ...
    async def get_version_and_production(
        self, model: RegisteredModel, number: int
    ) -> tuple[ModelVersion | None, ModelVersion | None]: ...
    async def save_version(self, version: ModelVersion) -> None: ...
    async def list_versions(self, model: RegisteredModel, stage: Stage | None, run_id: str | None,
                            tags: Sequence[tuple[str, str]], after: int, limit: int) -> list[ModelVersion]: ...
    async def versions_in_stage(self, model: RegisteredModel, stage: Stage) -> list[ModelVersion]: ...
    async def versions_in_stage_by_name(self, name: str, stage: Stage) -> list[ModelVersion] | None:
        """None when the model does not exist."""
        ...
    async def rollback_candidate(self, model: RegisteredModel) -> int | None: ...

    async def get_alias(self, model: RegisteredModel, alias: str) -> AliasRecord | None: ...
    async def alias_by_name(self, name: str, alias: str) -> tuple[AliasRecord, ModelVersion] | tuple[None, None] | None:
        """The alias and its version; (None, None) when the model has no such alias; None when
        there is no such model (one query: what serving asks)."""
        ...
    async def set_alias(self, model: RegisteredModel, alias: str, version: int, protected: bool) -> None: ...
    async def delete_alias(self, model: RegisteredModel, alias: str) -> None: ...
    async def list_aliases(self, model: RegisteredModel, after: str | None,
                           limit: int | None) -> list[tuple[str, AliasRecord]]:
        """The model's aliases ordered by name (code point order), after ``after``."""
        ...

    async def stage_history(self, model: RegisteredModel, version: int) -> list[dict[str, Any]]: ...
    async def chain_for_model_name(self, name: str) -> str | None: ...
    async def audit_entries(self, query: AuditQuery, after: tuple[str, int] | None,
                            limit: int) -> list[dict[str, Any]]: ...
    async def audit_heads(self, query: AuditQuery) -> list[dict[str, Any]]: ...
    async def audit_log_chains(self, query: AuditQuery) -> dict[str, int]:
        """The chains the audit entries name, with each one's first seq (heads or not)."""
        ...
    async def audit_chain_rows(self, chain: str, after_seq: int,
                               limit: int) -> list[dict[str, Any]]: ...
    async def events(self, chain: str, after: int, limit: int) -> list[dict[str, Any]]: ...

    async def any_token(self) -> bool: ...
    async def add_token(self, name: str, principal: str, role: str, secret_hash: str, prefix: str,
                        now: datetime, models: list[str] | None = None,
                        expires_at: datetime | None = None) -> int: ...
    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None: ...
    async def get_token(self, token_id: int) -> TokenRecord | None: ...
    async def list_tokens(self, after: int, limit: int) -> list[TokenRecord]: ...
    async def revoke_token(self, token_id: int, now: datetime) -> None: ...
    async def touch_token(self, token_id: int, now: datetime) -> None: ...
    async def add_session(self, secret_hash: str, token_id: int, csrf: str, now: datetime,
                          expires_at: datetime) -> None: ...
    async def session_by_hash(self, secret_hash: str) -> SessionRecord | None: ...
    async def delete_session(self, secret_hash: str) -> None: ...
    async def delete_expired_sessions(self, now: datetime) -> None: ...
    async def last_changes(self, chains: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each chain's latest audit entry: action, actor, at, version."""
        ...

    async def add_subscription(self, url: str, description: str, event_types: list[str],
                               models: list[str] | None, secret: str, actor: str,
                               now: datetime) -> int: ...
    async def get_subscription(self, sub_id: int) -> SubscriptionRecord | None: ...
    async def list_subscriptions(self, after: int, limit: int) -> list[SubscriptionRecord]: ...
    async def update_subscription(self, sub_id: int, values: dict[str, Any]) -> None:
        """Set columns (url, description, event_types, models, status, disabled_reason,
        failing_since, secret, previous_secret, previous_secret_until, updated_at)."""
        ...
    async def subscription_secrets(self, sub_id: int) -> tuple[str, str | None]: ...
    async def delete_subscription(self, sub_id: int) -> None:
        """The subscription, its deliveries and their attempts."""
        ...
    async def list_deliveries(self, target: str, state: str | None, before: int | None,
                              limit: int) -> list[DeliveryRecord]: ...
    async def get_delivery(self, target: str, delivery_id: int) -> DeliveryRecord | None: ...
    async def requeue_deliveries(self, target: str, now: datetime, *, delivery_id: int | None = None,
                                 failed_since: datetime | None = None) -> int:
        """Make deliveries due now, outside the per-model order, with a fresh retry schedule:
        one (unless it is being sent), or every failed one created since a time."""
        ...
    async def lineage_events(self, chain: str, version: int) -> list[dict[str, Any]]: ...

    async def add_check(self, model: RegisteredModel, version: int, name: str, status: str,
                        details_url: str | None, summary: str | None, actor: str,
                        now: datetime) -> int: ...
    async def latest_checks(self, model: RegisteredModel, version: int) -> dict[str, str]:
        """The latest status of each check name reported on the version."""
        ...
    async def check_history(self, model: RegisteredModel, version: int) -> list[CheckRecord]:
        """Every report on the version, by name, newest first within a name."""
        ...
    async def get_policy(self, model: RegisteredModel, stage: Stage) -> PolicyRecord | None: ...
    async def policy_rules(self, model: RegisteredModel, stage: Stage) -> dict[str, Any] | None: ...
    async def put_policy(self, model: RegisteredModel, stage: Stage, rules: dict[str, Any],
                         actor: str, now: datetime) -> None: ...
    async def delete_policy(self, model: RegisteredModel, stage: Stage) -> None: ...
    async def add_request(self, model: RegisteredModel, version: int, to_stage: str, actor: Actor,
                          comment: str | None, now: datetime) -> RequestRecord: ...
    async def get_request(self, request_id: int) -> RequestRecord | None: ...
    async def open_requests(self, model: RegisteredModel, version: int,
                            to_stage: str | None = None) -> list[RequestRecord]: ...
    async def save_request(self, request: RequestRecord) -> None: ...
    async def list_requests(self, query: RequestQuery, before: int | None,
                            limit: int) -> list[RequestRecord]:
        """Newest first."""
        ...

    async def add_comment(self, model: RegisteredModel, version: int, request_id: int | None,
                          author: str, body: str, now: datetime) -> CommentRecord: ...
    async def get_comment(self, comment_id: int) -> CommentRecord | None:
        """A live comment (None when there is none, or it was deleted)."""
        ...
    async def update_comment(self, comment_id: int, body: str, now: datetime) -> None: ...
    async def delete_comment(self, comment_id: int, now: datetime) -> None:
        """Delete softly: the row stays (deleted_at set) and every read leaves it out."""
        ...
    async def version_comments(self, model: RegisteredModel, version: int, after: int | None,
                               limit: int) -> list[CommentRecord]:
        """The version's live comments, those on its transition requests too, oldest first."""
        ...
    async def request_comments(self, request_id: int, after: int | None,
                               limit: int) -> list[CommentRecord]:
        """The request's live comments, oldest first."""
        ...

    async def list_artifacts(self, version_id: int, after: str | None,
                             limit: int | None) -> list[Artifact]:
        """Ordered by path (code points); every one when ``limit`` is None."""
        ...
    async def get_artifact(self, version_id: int, path: str) -> Artifact | None: ...
    async def put_artifact(self, version_id: int, artifact: Artifact) -> None:
        """Insert or replace the file's row."""
        ...
    async def delete_artifact(self, version_id: int, path: str) -> None: ...
    async def count_artifacts(self, version_id: int) -> int: ...
    async def add_upload(self, version_id: int, path: str, size: int, sha256: str, key: str,
                         actor: str, now: datetime, expires_at: datetime) -> UploadRecord:
        """Record a presigned upload, replacing an earlier one for the same path."""
        ...
    async def uploads(self, version_id: int) -> list[UploadRecord]:
        """The version's presigned uploads not yet checked, by path."""
        ...
    async def delete_upload(self, upload_id: int) -> None: ...


class UnitOfWork(Protocol):
    """One transaction. ``commit`` writes the recorded changes to the audit log and the outbox,
    then commits; leaving the block without ``commit`` rolls everything back."""

    repo: Repository
    actor: Actor
    # The configured policy per stage, for models without their own.
    default_policies: Mapping[Stage, Policy]

    async def __aenter__(self) -> UnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def record(self, model: RegisteredModel | int, change: Change) -> None: ...
    def record_system(self, change: SystemChange) -> None: ...
    def now(self) -> datetime: ...
    def next_sequence(self, model: RegisteredModel) -> int:
        """The event sequence the next change recorded for ``model`` will get."""
        ...
    def after_commit(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` once the changes are durably committed, never otherwise (cleanups of
        bytes the committed rows no longer name)."""
        ...
    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, actor: Actor, *, write: bool = True, idempotency: Any = None) -> UnitOfWork:
        """``idempotency``: the request's Idempotency-Key call, which the first writer joins."""
        ...
