"""The schema, declared with SQLModel; Alembic reads ``metadata`` from here.

Queries never go through an ORM session: the repository uses Core statements on these tables
(``Row.__table__``), which costs a fraction of the CPU of session flushes on the hot paths.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata
metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Model names order and match bytewise on both backends (SQLite's BINARY; "C" on PostgreSQL,
# where a prefix LIKE can then use the unique index).
Name = String(256).with_variant(String(256, collation="C"), "postgresql")
# Artifact paths order bytewise too (UTF-8 byte order is code point order).
ArtifactPathType = String(1024).with_variant(String(1024, collation="C"), "postgresql")

# 64-bit keys on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored and returned as UTC on both backends (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _id() -> Any:
    return Field(default=None, sa_column=Column(Id, primary_key=True, autoincrement=True))


def _ts(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime, nullable=nullable))


# SQLite reuses the largest rowid after a delete unless AUTOINCREMENT is declared; ids here are
# never reused (a model's id names its audit chain, which outlives it).
AUTOINCREMENT = {"sqlite_autoincrement": True}


class ModelRow(SQLModel, table=True):
    __tablename__ = "registered_models"
    __table_args__ = AUTOINCREMENT

    id: int | None = _id()
    name: str = Field(sa_column=Column(Name, nullable=False, unique=True))
    description: str = Field(sa_column=Column(Text, nullable=False, server_default=""))
    tags: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    # Counter from which version numbers are allocated: never reused, even after a failure.
    last_version: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    created_by: str = Field(sa_column=Column(String(256), nullable=False))


class ChainRow(SQLModel, table=True):
    """Head of one audit chain ("model:<id>" or "system") and its event sequence counter.

    Writers lock this row, so concurrent writers never fork a chain. It outlives its model (and
    keeps its model_id, which is never reused), so a deleted model keeps its audit and events, and
    a re-created name starts a new chain.
    """

    __tablename__ = "audit_chains"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    model_id: int | None = Field(default=None, sa_column=Column(Id, nullable=True, unique=True))
    model_name: str | None = Field(default=None, sa_column=Column(String(256), nullable=True, index=True))
    audit_seq: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    audit_hash: str = Field(sa_column=Column(String(64), nullable=False))
    event_seq: int = Field(sa_column=Column(BigInteger, nullable=False, server_default="0"))
    created_at: datetime = _ts()


class VersionRow(SQLModel, table=True):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        Index("ix_model_versions_model_id_stage", "model_id", "stage"),
        # At most one production version per model, enforced by the database on both backends.
        Index(
            "uq_model_versions_one_production",
            "model_id",
            unique=True,
            postgresql_where=text("stage = 'production'"),
            sqlite_where=text("stage = 'production'"),
        ),
        Index("ix_model_versions_model_id_run_id", "model_id", "run_id"),
        AUTOINCREMENT,
    )

    id: int | None = _id()
    model_id: int = Field(
        sa_column=Column(Id, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False)
    )
    version: int = Field(sa_column=Column(Integer, nullable=False))
    stage: str = Field(sa_column=Column(String(16), nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))
    run_id: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    description: str = Field(sa_column=Column(Text, nullable=False, server_default=""))
    tags: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    metrics: dict[str, float] = Field(sa_column=Column(JSON, nullable=False))
    inputs: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    revision: int = Field(sa_column=Column(Integer, nullable=False, server_default="1"))
    left_production_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Whether it last left production because a rollback replaced it: never a rollback target then.
    # No Python-side default: an INSERT that leaves it out gets the server's false.
    left_by_rollback: bool = Field(default=False, sa_column=Column(Boolean, nullable=False,
                                                                    server_default=false()))
    # When the version entered its current stage (the minimum-time-in-staging gate reads it).
    stage_since: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    created_by: str = Field(sa_column=Column(String(256), nullable=False))
    # Set once, when the version's artifacts were frozen; the digest of their manifest.
    sealed_at: datetime | None = _ts(nullable=True)
    manifest_digest: str | None = Field(default=None, sa_column=Column(String(71), nullable=True))
    # Set when the version was deleted (softly: every read, list and search leaves it out).
    deleted_at: datetime | None = _ts(nullable=True)


class AliasRow(SQLModel, table=True):
    __tablename__ = "model_aliases"

    model_id: int = Field(
        sa_column=Column(Id, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    )
    alias: str = Field(sa_column=Column(String(255), primary_key=True))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    # Only admins move, delete or (un)protect a protected alias.
    protected: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


class AuditRow(SQLModel, table=True):
    """One audit entry. ``canonical`` is the exact RFC 8785 text that was hashed; the other
    columns repeat parts of it for filtering and are checked against it by verify. Append-only:
    triggers installed by migration 0002 refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("chain", "seq", name="uq_audit_log_chain_seq"),
        Index("ix_audit_log_chain_version", "chain", "version"),
        AUTOINCREMENT,
    )

    id: int | None = _id()
    chain: str = Field(sa_column=Column(String(64), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    at: datetime = _ts()
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    request_id: str = Field(sa_column=Column(String(128), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    model: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    version: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    canonical: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))


class OutboxRow(SQLModel, table=True):
    """An event, written in the transaction of the change it announces; ``id`` is its global
    position for the relay, ``sequence`` its gap-free position within its chain (a model's, or
    the system chain for ``webhook.*`` events, which have no model). ``relayed_at`` is set once
    the relay has made its deliveries; ``target`` sends it to one subscription only (a ping);
    ``traceparent`` is the trace its deliveries join."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        UniqueConstraint("chain", "sequence", name="uq_outbox_events_chain_sequence"),
        Index("ix_outbox_events_unrelayed", "id", postgresql_where=text("relayed_at IS NULL"),
              sqlite_where=text("relayed_at IS NULL")),
        Index("ix_outbox_events_unrelayed_chain", "chain", "sequence",
              postgresql_where=text("relayed_at IS NULL"), sqlite_where=text("relayed_at IS NULL")),
        AUTOINCREMENT,
    )

    id: int | None = _id()
    event_id: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    chain: str = Field(sa_column=Column(String(64), nullable=False))
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
    type: str = Field(sa_column=Column(String(64), nullable=False))
    model: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    version: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    request_id: str = Field(sa_column=Column(String(128), nullable=False))
    at: datetime = _ts()
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    relayed_at: datetime | None = _ts(nullable=True)
    target: int | None = Field(default=None, sa_column=Column(Id, nullable=True))
    # W3C traceparent of the span that wrote the event (not part of the event document): its
    # webhook and lineage deliveries continue that trace.
    traceparent: str | None = Field(default=None, sa_column=Column(String(55), nullable=True))


class PrincipalRow(SQLModel, table=True):
    """A person or service that holds tokens; approvals compare principals, not tokens."""

    __tablename__ = "principals"
    __table_args__ = AUTOINCREMENT

    id: int | None = _id()
    name: str = Field(sa_column=Column(String(256), nullable=False, unique=True))
    created_at: datetime = _ts()


class TokenRow(SQLModel, table=True):
    __tablename__ = "api_tokens"
    __table_args__ = AUTOINCREMENT

    id: int | None = _id()
    principal_id: int = Field(sa_column=Column(Id, ForeignKey("principals.id"), nullable=False))
    name: str = Field(sa_column=Column(String(128), nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False))
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    # Model-name patterns the token may see (issue 3); NULL means all models.
    models: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _ts()
    expires_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)
    last_used_at: datetime | None = _ts(nullable=True)


class SubscriptionRow(SQLModel, table=True):
    """A webhook subscription. Secrets are stored encrypted (Fernet under REGISTRY_SECRET_KEY);
    after a rotation the previous one keeps signing until ``previous_secret_until``."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = AUTOINCREMENT

    id: int | None = _id()
    url: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(sa_column=Column(Text, nullable=False, server_default=""))
    event_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    models: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))  # active, paused, disabled
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    secret: str = Field(sa_column=Column(Text, nullable=False))
    previous_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_secret_until: datetime | None = _ts(nullable=True)
    failing_since: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    created_by: str = Field(sa_column=Column(String(256), nullable=False))


class DeliveryRow(SQLModel, table=True):
    """One event for one target: ``webhook:<id>``, ``lineage:http`` or ``lineage:file``.

    pending → delivered | failed (retries exhausted; ``recover`` and ``redeliver`` make it pending
    again). A worker sending it holds a lease (``lease_token`` until ``lease_until``), never a row
    lock across the HTTP call. ``ordered`` deliveries of one target and chain go out in sequence
    order; a redelivery is unordered.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("outbox_id", "target", name="uq_deliveries_outbox_id_target"),
        Index("ix_deliveries_due", "next_attempt_at", postgresql_where=text("state = 'pending'"),
              sqlite_where=text("state = 'pending'")),
        Index("ix_deliveries_order", "target", "chain", "sequence",
              postgresql_where=text("state = 'pending'"), sqlite_where=text("state = 'pending'")),
        Index("ix_deliveries_subscription_id", "subscription_id", "id"),
        Index("ix_deliveries_target", "target", "id"),
        Index("ix_deliveries_finished", "finished_at"),
        Index("ix_deliveries_failed", "id", postgresql_where=text("state = 'failed'"),
              sqlite_where=text("state = 'failed'")),  # counted at each metrics scrape
        AUTOINCREMENT,
    )

    id: int | None = _id()
    outbox_id: int = Field(sa_column=Column(Id, ForeignKey("outbox_events.id"), nullable=False))
    target: str = Field(sa_column=Column(String(64), nullable=False))
    subscription_id: int | None = Field(
        default=None, sa_column=Column(Id, ForeignKey("webhook_subscriptions.id"), nullable=True))
    chain: str = Field(sa_column=Column(String(64), nullable=False))
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
    ordered: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    # Attempts since the delivery was last (re)queued: the position in the retry schedule.
    round_attempts: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime = _ts()
    lease_until: datetime | None = _ts(nullable=True)
    lease_token: str | None = Field(default=None, sa_column=Column(String(36), nullable=True))
    first_failed_at: datetime | None = _ts(nullable=True)
    last_status: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class AttemptRow(SQLModel, table=True):
    """One try at sending a delivery, kept for the delivery log."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery_id", "delivery_id", "number"),
                      AUTOINCREMENT)

    id: int | None = _id()
    delivery_id: int = Field(sa_column=Column(Id, ForeignKey("deliveries.id"), nullable=False))
    number: int = Field(sa_column=Column(Integer, nullable=False))
    at: datetime = _ts()
    status_code: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    latency_ms: float = Field(sa_column=Column(Float, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    outcome: str = Field(sa_column=Column(String(16), nullable=False))


class LineageRow(SQLModel, table=True):
    """An OpenLineage event the relay built from an outbox event (its id is the run id). Kept
    when the outbox is pruned: it answers a version's lineage."""

    __tablename__ = "lineage_events"
    __table_args__ = (Index("ix_lineage_events_chain_version", "chain", "version", "id"),
                      AUTOINCREMENT)

    id: int | None = _id()
    event_id: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    chain: str = Field(sa_column=Column(String(64), nullable=False))
    model: str = Field(sa_column=Column(String(256), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    at: datetime = _ts()
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


def _model_fk() -> Any:
    return Field(sa_column=Column(Id, ForeignKey("registered_models.id", ondelete="CASCADE"),
                                  nullable=False))


class CheckRow(SQLModel, table=True):
    """One report of a CI check on a version (like a commit status); the latest per name counts."""

    __tablename__ = "version_checks"
    __table_args__ = (Index("ix_version_checks_version_name", "model_id", "version", "name", "id"),
                      AUTOINCREMENT)

    id: int | None = _id()
    model_id: int = _model_fk()
    version: int = Field(sa_column=Column(Integer, nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    details_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    summary: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reported_by: str = Field(sa_column=Column(String(256), nullable=False))
    reported_at: datetime = _ts()


class PolicyRow(SQLModel, table=True):
    """A model's rules for entering ``staging`` or ``production`` (see domain.gates.Policy)."""

    __tablename__ = "stage_policies"

    model_id: int = Field(sa_column=Column(Id, ForeignKey("registered_models.id", ondelete="CASCADE"),
                                           primary_key=True))
    stage: str = Field(sa_column=Column(String(16), primary_key=True))
    rules: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = _ts()
    updated_by: str = Field(sa_column=Column(String(256), nullable=False))


OPEN_REQUEST = text("state IN ('pending', 'approved')")


class RequestRow(SQLModel, table=True):
    """A request to move a version, approved by releasers. At most one is open (pending or
    approved) per version and target stage, enforced by a partial unique index."""

    __tablename__ = "transition_requests"
    __table_args__ = (
        Index("uq_transition_requests_open", "model_id", "version", "to_stage", unique=True,
              postgresql_where=OPEN_REQUEST, sqlite_where=OPEN_REQUEST),
        Index("ix_transition_requests_model_id", "model_id", "id"),
        AUTOINCREMENT,
    )

    id: int | None = _id()
    model_id: int = _model_fk()
    version: int = Field(sa_column=Column(Integer, nullable=False))
    to_stage: str = Field(sa_column=Column(String(16), nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    requested_by: str = Field(sa_column=Column(String(256), nullable=False))
    requester_principal: str = Field(sa_column=Column(String(256), nullable=False))
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # [{principal, actor, comment, at, voided_at}], oldest first.
    approvals: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    decided_by: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    decision_comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class CommentRow(SQLModel, table=True):
    """A comment on a version, or on one of its transition requests (``request_id``); ``author``
    is the writer's principal. Edited in place (``updated_at``) and deleted softly (``deleted_at``):
    every read leaves a deleted one out, and its audit entries stay."""

    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_model_id_version", "model_id", "version", "id"),
                      Index("ix_comments_request_id", "request_id", "id"),
                      AUTOINCREMENT)

    id: int | None = _id()
    model_id: int = _model_fk()
    version: int = Field(sa_column=Column(Integer, nullable=False))
    request_id: int | None = Field(default=None, sa_column=Column(
        Id, ForeignKey("transition_requests.id", ondelete="CASCADE"), nullable=True))
    author: str = Field(sa_column=Column(String(256), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _ts()
    updated_at: datetime | None = _ts(nullable=True)
    deleted_at: datetime | None = _ts(nullable=True)


class SessionRow(SQLModel, table=True):
    """A signed-in session of the web UI, acting with one API token (gone with it). Only the
    hash of its secret is kept; ``csrf_token`` guards the session's form posts."""

    __tablename__ = "ui_sessions"
    __table_args__ = AUTOINCREMENT

    id: int | None = _id()
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    token_id: int = Field(sa_column=Column(Id, ForeignKey("api_tokens.id", ondelete="CASCADE"),
                                           nullable=False))
    csrf_token: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = _ts()
    expires_at: datetime = Field(default=None, sa_column=Column(UTCDateTime, nullable=False, index=True))


class IdempotencyRow(SQLModel, table=True):
    """The stored response of a POST made with an ``Idempotency-Key``, written in the same
    transaction as its effect. ``key_hash`` covers (token, method, path, key)."""

    __tablename__ = "idempotency_keys"

    key_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    status: int = Field(sa_column=Column(Integer, nullable=False))
    headers: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default=None, sa_column=Column(UTCDateTime, nullable=False, index=True))


def _version_fk() -> Any:
    return Field(sa_column=Column(Id, ForeignKey("model_versions.id", ondelete="CASCADE"),
                                  nullable=False))


class ArtifactRow(SQLModel, table=True):
    """One file of a version. Its bytes live in the artifact store at ``key``, which is new for
    every write (``<model id>/<version>/<write id>/<path>``): an object nobody's row names yet
    can be written without a lock, and a replaced or deleted file's bytes are removed only
    after the commit that stopped naming them."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("version_id", "path", name="uq_artifacts_version_id_path"),
                      AUTOINCREMENT)

    id: int | None = _id()
    version_id: int = _version_fk()
    path: str = Field(sa_column=Column(ArtifactPathType, nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    key: str = Field(sa_column=Column(String(1200), nullable=False))
    uploaded_at: datetime = _ts()
    uploaded_by: str = Field(sa_column=Column(String(256), nullable=False))


class UploadRow(SQLModel, table=True):
    """A presigned upload handed to a client, not yet checked: sealing hashes the object at
    ``key`` and moves it into place when it matches ``size`` and ``sha256``."""

    __tablename__ = "artifact_uploads"
    __table_args__ = (UniqueConstraint("version_id", "path", name="uq_artifact_uploads_version_id_path"),
                      AUTOINCREMENT)

    id: int | None = _id()
    version_id: int = _version_fk()
    path: str = Field(sa_column=Column(ArtifactPathType, nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    key: str = Field(sa_column=Column(String(256), nullable=False))
    created_at: datetime = _ts()
    created_by: str = Field(sa_column=Column(String(256), nullable=False))
    expires_at: datetime = _ts()


models_t = ModelRow.__table__
chains_t = ChainRow.__table__
versions_t = VersionRow.__table__
aliases_t = AliasRow.__table__
audit_t = AuditRow.__table__
outbox_t = OutboxRow.__table__
principals_t = PrincipalRow.__table__
tokens_t = TokenRow.__table__
subscriptions_t = SubscriptionRow.__table__
deliveries_t = DeliveryRow.__table__
attempts_t = AttemptRow.__table__
lineage_t = LineageRow.__table__
checks_t = CheckRow.__table__
policies_t = PolicyRow.__table__
requests_t = RequestRow.__table__
idempotency_t = IdempotencyRow.__table__
artifacts_t = ArtifactRow.__table__
uploads_t = UploadRow.__table__
comments_t = CommentRow.__table__
sessions_t = SessionRow.__table__
