"""Bodies of the gates API: checks, policies, gate reports, transition requests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from registry.api.schemas import (
    NO_NUL,
    GateResultBody,
    Key,
    ModelVersionResponse,
    Request,
    StageName,
    Text,
    VersionNumber,
)
from registry.domain.gates import MAX_APPROVALS, MAX_RULES, MAX_STAGING_SECONDS, GateResult
from registry.services.ports import CheckRecord, RequestRecord

# Printable characters, no space at either end (domain.gates.check_name).
_EDGE, _INNER = r"[^\s\x00-\x1f\x7f-\x9f]", r"[^\x00-\x1f\x7f-\x9f]"
CheckName = Annotated[str, Meta(min_length=1, max_length=200,
                                pattern=rf"^{_EDGE}(?:{_INNER}*{_EDGE})?(?![\s\S])",
                                description="1-200 printable characters, e.g. ci/unit-tests")]
DetailsUrl = Annotated[str, Meta(max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f-\x9f]+(?![\s\S])",
                                 description="http(s) link to the check's details")]
Bound = Annotated[float, Meta(description="a finite number")]


class CheckReportRequest(Request):
    name: CheckName
    status: Annotated[str, Meta(pattern="^(pending|success|failure)$")]
    details_url: DetailsUrl | None = None
    summary: Text | None = None


class CheckReportBody(Struct):
    status: str
    details_url: str | None
    summary: str | None
    reported_by: str
    reported_at: datetime


class CheckResponse(Struct):
    id: int
    name: str
    status: str
    details_url: str | None
    summary: str | None
    reported_by: str
    reported_at: datetime

    @classmethod
    def of(cls, c: CheckRecord) -> CheckResponse:
        return cls(c.id, c.name, c.status, c.details_url, c.summary, c.reported_by, c.reported_at)


class CheckSummaryResponse(Struct):
    """A check name's latest report, and every report newest first."""

    name: str
    status: str
    details_url: str | None
    summary: str | None
    reported_by: str
    reported_at: datetime
    history: list[CheckReportBody]


class CheckList(Struct):
    items: list[CheckSummaryResponse]


class MetricBounds(Request):
    min: Bound | None = None
    max: Bound | None = None
    min_delta_vs_production: Bound | None = None
    max_delta_vs_production: Bound | None = None


class PolicyRequest(Request):
    """Every key optional; `{}` means no rules."""

    metrics: Annotated[dict[Key, MetricBounds], Meta(max_length=MAX_RULES)] | UnsetType = UNSET
    required_checks: Annotated[list[CheckName], Meta(max_length=MAX_RULES)] | UnsetType = UNSET
    required_approvals: Annotated[int, Meta(ge=0, le=MAX_APPROVALS)] | UnsetType = UNSET
    auto_apply: bool | UnsetType = UNSET
    min_staging_seconds: Annotated[int, Meta(ge=0, le=MAX_STAGING_SECONDS)] | UnsetType = UNSET
    required_fields: Annotated[list[Annotated[str, Meta(pattern="^(description|run_id|artifact)$")]],
                               Meta(max_length=3)] | UnsetType = UNSET


class PolicyRules(Struct):
    metrics: dict[str, dict[str, float]]
    required_checks: list[str]
    required_approvals: int
    auto_apply: bool
    min_staging_seconds: int
    required_fields: list[str]


class PolicyResponse(Struct):
    model: str
    stage: str
    rules: PolicyRules
    source: str  # model, default or none
    updated_at: datetime | None
    updated_by: str | None


class GateTransition(Struct):
    from_stage: str
    to_stage: str
    trigger: str | None  # None: no edge of the stage table


class GateReport(Struct):
    allowed: bool
    transition: GateTransition
    results: list[GateResultBody]


def gate_results(results: list[GateResult]) -> list[GateResultBody]:
    return [GateResultBody(r.gate, r.passed, r.detail) for r in results]


class CreateTransitionRequest(Request):
    to_stage: StageName
    comment: Text | None = None


class DecisionRequest(Request):
    comment: Text | None = None


class RollbackRequest(Request):
    comment: Annotated[str, Meta(max_length=5000, pattern=NO_NUL)] | None = None
    expected_production_version: VersionNumber | None | UnsetType = UNSET


class ApprovalBody(Struct):
    principal: str
    actor: str
    comment: str | None
    at: str
    voided_at: str | None


class TransitionRequestResponse(Struct):
    id: int
    model: str
    version: int
    to_stage: str
    state: str
    requested_by: str
    requester_principal: str
    comment: str | None
    required_approvals: int | None
    approvals: list[ApprovalBody]
    created_at: datetime
    updated_at: datetime
    decided_by: str | None
    decision_comment: str | None

    @classmethod
    def of(cls, r: RequestRecord) -> TransitionRequestResponse:
        approvals = [ApprovalBody(a["principal"], a["actor"], a.get("comment"), a["at"],
                                  a.get("voided_at")) for a in r.approvals]
        return cls(r.id, r.model, r.version, r.to_stage, r.state, r.requested_by,
                   r.requester_principal, r.comment, r.required_approvals, approvals, r.created_at,
                   r.updated_at, r.decided_by, r.decision_comment)


class TransitionRequestList(Struct):
    items: list[TransitionRequestResponse]
    next_cursor: str | None


class DecisionResponse(Struct):
    request: TransitionRequestResponse
    applied: bool
    results: list[GateResultBody]
    version: ModelVersionResponse | None
