"""Request and response bodies (msgspec Structs): validated at the edge, documented in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from registry.domain.model import ModelVersion, RegisteredModel

# MLflow's rule, as a pattern: not '.' or '..', no '/', ':' or control characters, no white space
# at either end. The domain checks the same rule for every caller.
# `(?![\s\S])` ends the match at the very end: Python's `$` also matches before a final newline,
# and `\Z` is not in the ECMA dialect OpenAPI documents use.
MODEL_NAME_PATTERN = r"^(?!\.\.?(?![\s\S]))[^/:\x00-\x1f\x7f-\x9f\s](?:[^/:\x00-\x1f\x7f-\x9f]*[^/:\x00-\x1f\x7f-\x9f\s])?(?![\s\S])"  # noqa: E501
ModelName = Annotated[str, Meta(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN,
                                description="1-256 characters; not '.' or '..'; no '/', ':' or control "
                                            "characters; no white space at either end")]
NO_NUL = r"^[^\x00]*$"
# RFC 3339 with its offset; Litestar alone would also take Unix numbers for a datetime.
RFC3339 = (r"^(?!0000)\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
           r"(\.\d{1,6})?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$")
Timestamp = Annotated[str, Meta(pattern=RFC3339, max_length=40, extra_json_schema={"format": "date-time"})]
# The domain's alias rule: letters, digits, '_' and '-'; 'latest' and 'v<digits>' reserved, any case.
ALIAS_PATTERN = r"^(?![Ll][Aa][Tt][Ee][Ss][Tt](?![\s\S]))(?![Vv][0-9]+(?![\s\S]))[A-Za-z0-9_-]{1,255}(?![\s\S])"
TAG_FILTER = r"^[^:\x00]+:[^\x00]*$"   # a `tag` query value: key:value, the key not empty
Text = Annotated[str, Meta(max_length=5000, pattern=NO_NUL)]
Key = Annotated[str, Meta(min_length=1, max_length=250, pattern=NO_NUL)]
TagValue = Annotated[str, Meta(max_length=5000, pattern=NO_NUL)]
TagMap = Annotated[dict[Key, TagValue],
                   Meta(description="string keys to string values")]
MetricMap = Annotated[dict[Key, float],
                      Meta(description="metric names to finite numbers")]
StageName = Annotated[str, Meta(pattern="^(none|staging|production|archived)$",
                                description="none, staging, production or archived")]
VersionNumber = Annotated[int, Meta(ge=1, le=2**31 - 1)]


class Request(Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class CreateModelRequest(Request):
    name: ModelName
    description: Text = ""
    tags: TagMap = {}


class RenameModelRequest(Request):
    new_name: ModelName


class UpdateModelRequest(Request):
    """JSON merge patch: absent fields stay, a null tag value removes that tag."""

    description: Text | None | UnsetType = UNSET
    tags: dict[Key, TagValue | None] | None | UnsetType = UNSET


class DatasetBody(Struct, forbid_unknown_fields=True, omit_defaults=True):
    namespace: Annotated[str, Meta(min_length=1, max_length=1024, pattern=NO_NUL)]
    name: Annotated[str, Meta(min_length=1, max_length=1024, pattern=NO_NUL)]
    version: Annotated[str, Meta(max_length=256, pattern=NO_NUL)] | None = None


class RegisterVersionRequest(Request):
    source: Annotated[str, Meta(min_length=1, max_length=5000, pattern=NO_NUL,
                                description="where the artifacts are")]
    run_id: Annotated[str, Meta(min_length=1, max_length=256, pattern=NO_NUL)] | None = None
    description: Text = ""
    tags: TagMap = {}
    metrics: MetricMap = {}
    inputs: Annotated[list[DatasetBody], Meta(max_length=1000)] = []


class UpdateVersionRequest(Request):
    """JSON merge patch of description, tags and (only while the stage is `none`) metrics."""

    description: Text | None | UnsetType = UNSET
    tags: dict[Key, TagValue | None] | None | UnsetType = UNSET
    metrics: dict[Key, float | None] | None | UnsetType = UNSET


class TransitionRequest(Request):
    to_stage: StageName
    comment: Text | None = None
    expected_stage: StageName | None = None
    expected_production_version: VersionNumber | None | UnsetType = UNSET


class SetAliasRequest(Request):
    version: VersionNumber
    protected: bool | None = None  # omit to keep; only admins set it or move a protected alias


MODEL_PATTERN = r"^[^\[\]/:\x00-\x1f\x7f-\x9f]+(?![\s\S])"  # a model-name glob, as the domain allows
ModelPattern = Annotated[str, Meta(min_length=1, max_length=256, pattern=MODEL_PATTERN,
                                   description="model-name glob: '*' and '?' as wildcards")]
RoleName = Annotated[str, Meta(pattern="^(viewer|editor|stager|releaser|admin)$")]


class CreateTokenRequest(Request):
    name: Annotated[str, Meta(min_length=1, max_length=128, pattern=NO_NUL)]
    role: RoleName
    principal: Annotated[str, Meta(min_length=1, max_length=256, pattern=NO_NUL)] | None = None
    models: Annotated[list[ModelPattern], Meta(min_length=1, max_length=100)] | None = None
    expires_at: Timestamp | None = None


class TokenResponse(Struct):
    id: int
    name: str
    principal: str
    role: str
    models: list[str] | None
    created_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, t: Any) -> TokenResponse:
        return cls(t.id, t.name, t.principal, t.role, t.models, t.created_at, t.expires_at,
                   t.last_used_at, t.revoked_at)


class CreatedTokenResponse(TokenResponse):
    """The token's record and, this once, its secret."""

    token: str


class TokenList(Struct):
    items: list[TokenResponse]
    next_cursor: str | None


class ChainHead(Struct):
    chain: str
    model: str | None
    seq: int
    hash: str


class ChainHeads(Struct):
    items: list[ChainHead]


class StageHolder(Struct):
    version: int


class HistoryStages(Struct):
    production: StageHolder | None
    staging: list[StageHolder]


class ModelHistoryResponse(Struct):
    at: datetime
    stages: HistoryStages
    aliases: dict[str, int]


class ModelResponse(Struct):
    name: str
    description: str
    tags: dict[str, str]
    latest_version: Annotated[int | None, Meta(
        description="the highest version number handed out so far (a deleted version's included: "
                    "numbers are never reused), or null before the first")]
    created_at: datetime
    updated_at: datetime
    created_by: str
    aliases: Annotated[list[str], Meta(description="names of the model's aliases, sorted")]

    @classmethod
    def of(cls, m: RegisteredModel) -> ModelResponse:
        return cls(m.name, m.description, m.tags, m.last_version or None, m.created_at,
                   m.updated_at, m.created_by, list(m.aliases))


class ModelVersionResponse(Struct):
    model: str
    version: int
    stage: str
    source: str
    run_id: str | None
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    inputs: list[DatasetBody]
    created_at: datetime
    updated_at: datetime
    created_by: str
    etag: str
    stage_since: datetime | None  # when the version entered its current stage
    sealed_at: datetime | None  # when its artifacts were frozen (its first move out of none)
    manifest_digest: str | None  # sha256 of the sealed manifest's canonical JSON
    aliases: Annotated[list[str], Meta(description="names of the aliases pointing at this version, "
                                                   "sorted")]

    @classmethod
    def of(cls, v: ModelVersion) -> ModelVersionResponse:
        return cls(v.model, v.version, v.stage.value, v.source, v.run_id, v.description, v.tags,
                   v.metrics, [DatasetBody(i.namespace, i.name, i.version) for i in v.inputs],
                   v.created_at, v.updated_at, v.created_by, v.etag, v.stage_since, v.sealed_at,
                   v.manifest_digest, list(v.aliases))


class ModelList(Struct):
    items: list[ModelResponse]
    next_cursor: str | None


class ModelVersionList(Struct):
    items: list[ModelVersionResponse]
    next_cursor: str | None


class StageMembers(Struct):
    items: list[ModelVersionResponse]


class GateResultBody(Struct):
    gate: str
    passed: bool
    detail: str


class TransitionBody(Struct):
    from_stage: str
    to_stage: str
    trigger: str
    actor: str
    at: datetime
    comment: str | None
    archived: list[int]
    gates: list[GateResultBody]
    request: int | None = None  # the transition request this move applied


class TransitionResponse(Struct):
    version: ModelVersionResponse
    transition: TransitionBody

    @classmethod
    def of(cls, result: Any) -> TransitionResponse:
        t = result.transition
        return cls(ModelVersionResponse.of(result.version), TransitionBody(
            t.from_stage.value, t.to_stage.value, t.trigger.value, t.actor, t.at, t.comment,
            t.archived, [GateResultBody(r.gate, r.passed, r.detail) for r in t.gates], t.request))


class StageChangeRecord(Struct):
    from_stage: str
    to_stage: str
    trigger: str
    comment: str | None
    actor: str
    at: datetime
    request_id: str
    audit_seq: int


class StageHistory(Struct):
    items: list[StageChangeRecord]


class AliasResponse(Struct):
    model: str
    alias: str
    version: int
    protected: bool
    model_version: ModelVersionResponse


class AliasItem(Struct):
    """One alias of a model, in the list of them (`GET /models/{name}/aliases`)."""

    alias: str
    version: int
    protected: bool


class AliasList(Struct):
    items: list[AliasItem]
    next_cursor: str | None


class AuditEntry(Struct):
    id: int
    seq: int
    chain: str
    at: Annotated[str, Meta(description="RFC 3339 UTC, verbatim as it was hashed")]
    actor: str
    request_id: str
    action: str
    model: str | None
    version: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str


class AuditList(Struct):
    items: list[AuditEntry]
    next_cursor: str | None


class AuditVerification(Struct):
    ok: bool
    checked: int
    first_bad_seq: int | None
    first_bad_chain: str | None


class Event(Struct):
    id: str
    type: str
    model: str
    sequence: int
    version: int | None
    actor: str
    request_id: str
    at: str  # date-time, as the audit log and the webhooks write it: UTC, microseconds, "Z"
    data: dict[str, Any]


class EventList(Struct):
    items: list[Event]
    next_cursor: str | None = msgspec.field(name="next_cursor")


class Health(Struct):
    status: str


class Problem(Struct, omit_defaults=True):
    """RFC 9457 problem details; extension members (allowed, results, failed, errors, ...) at top
    level."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    allowed: list[str] | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    results: list[dict[str, Any]] | None = None
    failed: list[str] | None = None
    errors: list[dict[str, Any]] | None = None
    request_id: int | None = None
    sealed_at: str | None = None  # the version's artifacts are sealed
    uploads: list[dict[str, Any]] | None = None  # presigned uploads that stop a seal
    expected_sha256: str | None = None  # an upload's declared digest ...
    actual_sha256: str | None = None  # ... and what its bytes hash to


# -- webhooks and lineage --------------------------------------------------------------------

WebhookUrl = Annotated[str, Meta(min_length=8, max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f]+$",
                                 description="https:// (plain http only to private addresses, "
                                             "when REGISTRY_WEBHOOK_ALLOW_PRIVATE is on)")]
EventTypePattern = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[a-z_.*?]+$",
                                       description="an event type or a glob, e.g. model_version.*")]
EventTypes = Annotated[list[EventTypePattern], Meta(min_length=1, max_length=64)]
WebhookModels = Annotated[list[ModelPattern], Meta(min_length=1, max_length=100)]
Description = Annotated[str, Meta(max_length=1000, pattern=NO_NUL)]


class CreateWebhookRequest(Request):
    url: WebhookUrl
    event_types: EventTypes
    models: WebhookModels | None = None
    description: Description = ""


class UpdateWebhookRequest(Request):
    """Absent fields stay; ``models: null`` means every model; ``status`` pauses or resumes
    (resuming also re-enables a disabled subscription)."""

    url: WebhookUrl | UnsetType = UNSET
    event_types: EventTypes | UnsetType = UNSET
    models: WebhookModels | None | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    status: Annotated[str, Meta(pattern="^(active|paused)$")] | UnsetType = UNSET


class RotateSecretRequest(Request):
    overlap_seconds: Annotated[int, Meta(ge=0, le=604800, description=(
        "how long the previous secret keeps signing (default REGISTRY_WEBHOOK_SECRET_OVERLAP)"))] | None = None


class RecoverRequest(Request):
    since: Timestamp


class WebhookResponse(Struct):
    id: int
    url: str
    description: str
    event_types: list[str]
    models: list[str] | None
    status: str
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    created_by: str

    @classmethod
    def of(cls, s: Any) -> WebhookResponse:
        return cls(s.id, s.url, s.description, s.event_types, s.models, s.status, s.disabled_reason,
                   s.failing_since, s.previous_secret_until, s.created_at, s.updated_at, s.created_by)


class CreatedWebhookResponse(WebhookResponse):
    """The subscription and, this once, its signing secret."""

    secret: str


class WebhookList(Struct):
    items: list[WebhookResponse]
    next_cursor: str | None


class Accepted(Struct):
    status: str
    request_id: str | None = None
    count: int | None = None


class AttemptResponse(Struct):
    number: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    outcome: str


class DeliveryResponse(Struct):
    id: int
    target: str
    event_id: str
    event_type: str
    model: str | None
    sequence: int
    state: str
    in_flight: bool
    attempts: list[AttemptResponse]
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, d: Any) -> DeliveryResponse:
        return cls(d.id, d.target, d.event_id, d.event_type, d.model, d.sequence, d.state, d.in_flight,
                   [AttemptResponse(a.number, a.at, a.status_code, a.latency_ms, a.error, a.outcome)
                    for a in d.attempt_log],
                   d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.finished_at)


class DeliveryList(Struct):
    items: list[DeliveryResponse]
    next_cursor: str | None


class LineageRun(Struct):
    id: str
    run_uuid: str


class LineageResponse(Struct):
    """Upstream datasets, the training run, the stage history and the OpenLineage RunEvents
    emitted for the version (oldest first)."""

    inputs: list[DatasetBody]
    run: LineageRun | None
    stages: list[StageChangeRecord]
    events: list[dict[str, Any]]
