"""What the registry's API answers, as typed dictionaries (openapi/openapi.json has each field's
exact type)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Stage = Literal["none", "staging", "production", "archived"]
CheckStatus = Literal["pending", "success", "failure"]
RequestState = Literal["pending", "approved", "applied", "rejected", "cancelled"]


class Dataset(TypedDict):
    namespace: str
    name: str
    version: NotRequired[str | None]


class Model(TypedDict):
    name: str
    description: str
    tags: dict[str, str]
    latest_version: int | None
    created_at: str
    updated_at: str
    created_by: str


class ModelVersion(TypedDict):
    model: str
    version: int
    stage: Stage
    source: str
    run_id: str | None
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    inputs: list[Dataset]
    etag: str
    created_at: str
    updated_at: str
    created_by: str
    stage_since: str | None
    sealed_at: str | None
    manifest_digest: str | None


class ArtifactFile(TypedDict):
    path: str
    size: int
    sha256: str
    uploaded_at: str
    uploaded_by: str


class Resolved(TypedDict):
    model: str
    version: int
    stage: Stage
    artifacts_url: str
    manifest_digest: str | None
    sealed_at: str | None


class Transition(TypedDict):
    from_stage: Stage
    to_stage: Stage
    trigger: str
    actor: str
    at: str
    comment: str | None
    archived: list[int]


class TransitionResult(TypedDict):
    """A transition's or a rollback's answer."""
    version: ModelVersion
    transition: Transition


class GateResult(TypedDict):
    gate: str
    passed: bool
    detail: str


class GateReport(TypedDict):
    allowed: bool
    transition: dict[str, str | None]  # from_stage, to_stage, trigger (None off the stage table)
    results: list[GateResult]


class CheckReport(TypedDict):
    status: CheckStatus
    details_url: str | None
    summary: str | None
    reported_by: str
    reported_at: str


class ReportedCheck(CheckReport):
    id: int
    name: str


class Check(CheckReport):
    """The latest report of one check name, and every report of it."""
    name: str
    history: list[CheckReport]


class Policy(TypedDict):
    model: str
    stage: Stage
    rules: dict[str, Any]  # every rule key, see PUT /models/{name}/policies/{stage}
    source: Literal["model", "default", "none"]
    updated_at: str | None
    updated_by: str | None


class Approval(TypedDict):
    principal: str
    actor: str
    comment: str | None
    at: str
    voided_at: NotRequired[str | None]  # set when a change to the version's checks voided it


class TransitionRequest(TypedDict):
    id: int
    model: str
    version: int
    to_stage: Stage
    state: RequestState
    requested_by: str
    requester_principal: str
    comment: str | None
    required_approvals: int
    approvals: list[Approval]
    created_at: str
    updated_at: str
    decided_by: str | None
    decision_comment: str | None


class Decision(TypedDict):
    """The answer to approve, reject or cancel; ``version`` is set when the call applied the move."""
    request: TransitionRequest
    applied: bool
    results: list[GateResult]
    version: ModelVersion | None


class Token(TypedDict):
    id: int
    name: str
    role: str
    principal: str
    models: list[str] | None
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class CreatedToken(Token):
    token: str  # the secret, shown this once


class AuditEntry(TypedDict):
    id: int
    seq: int
    chain: str
    at: str
    actor: str
    request_id: str
    action: str
    model: str | None
    version: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str
