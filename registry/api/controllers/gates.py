"""CI/CD gates: checks reported on versions, stage policies, gate reports, transition requests
and their approvals, and rollback."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from registry.api.controllers.versions import ETAG_HEADER, with_etag
from registry.api.deps import ModelPath, VersionPath, given, reader, writer
from registry.api.errors import problem_responses
from registry.api.gate_schemas import (
    CheckList,
    CheckReportBody,
    CheckReportRequest,
    CheckResponse,
    CheckSummaryResponse,
    CreateTransitionRequest,
    DecisionRequest,
    DecisionResponse,
    GateReport,
    GateTransition,
    PolicyRequest,
    PolicyResponse,
    PolicyRules,
    RollbackRequest,
    TransitionRequestList,
    TransitionRequestResponse,
    gate_results,
)
from registry.api.schemas import NO_NUL, ModelVersionResponse, TransitionResponse
from registry.services import approvals, checks, gates, policies, transitions
from registry.services.commands import DecideRequest, ReportCheck, RequestTransition, RollbackModel, SetPolicy
from registry.services.policies import PolicyView

PolicyStage = Annotated[str, PathParameter(pattern="^(staging|production)$",
                                           description="staging or production")]
RequestId = Annotated[int, PathParameter(ge=1, le=2**53 - 1, description="transition request id")]


def _policy(view: PolicyView) -> PolicyResponse:
    return PolicyResponse(view.model, view.stage.value, PolicyRules(**view.policy.to_dict()),
                          view.source, view.updated_at, view.updated_by)


class GateController(Controller):
    path = "/models/{name:str}"
    tags = ["gates"]

    @post("/versions/{version:int}/checks", operation_id="reportCheck",
          responses=problem_responses(400, 403, 404))
    async def report_check(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
                           data: JSONBody[CheckReportRequest]) -> CheckResponse:
        """Report a CI check on the version (like a commit status); the latest report per name
        counts. A status that differs from the name's previous one voids approvals given so far."""
        cmd = ReportCheck(name, version, data.name, data.status, data.details_url, data.summary)
        return CheckResponse.of(await checks.report_check(cmd, writer(request)))

    @get("/versions/{version:int}/checks", operation_id="listChecks",
         responses=problem_responses(400, 404))
    async def list_checks(self, request: Request[Any, Any, Any], name: ModelPath,
                          version: VersionPath) -> CheckList:
        """Each check name's latest report, with every report newest first, ordered by name."""
        found = await checks.list_checks(name, version, reader(request))
        return CheckList([CheckSummaryResponse(
            s.latest.name, s.latest.status, s.latest.details_url, s.latest.summary,
            s.latest.reported_by, s.latest.reported_at,
            [CheckReportBody(h.status, h.details_url, h.summary, h.reported_by, h.reported_at)
             for h in s.history]) for s in found])

    @get("/versions/{version:int}/gates", operation_id="checkGates",
         responses=problem_responses(400, 404))
    async def check_gates(
        self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
        to_stage: Annotated[str, QueryParameter(pattern="^(none|staging|production|archived)$")],
        comment: Annotated[str | None, QueryParameter(max_length=5000, pattern=NO_NUL)] = None,
    ) -> GateReport:
        """Whether moving the version to `to_stage` would pass, with every gate's result: first
        the stage table, then every rule of the target stage's policy. No side effects; a
        transition evaluates the same gates in the same order."""
        a = await gates.check_gates(name, version, to_stage, comment, reader(request))
        return GateReport(a.allowed, GateTransition(a.from_stage.value, a.to_stage.value,
                                                    a.trigger.value if a.trigger else None),
                          gate_results(a.results))

    @post("/versions/{version:int}/transition-requests", operation_id="requestTransition",
          responses=problem_responses(400, 403, 404, 409))
    async def request_transition(self, request: Request[Any, Any, Any], name: ModelPath,
                                 version: VersionPath,
                                 data: JSONBody[CreateTransitionRequest]) -> TransitionRequestResponse:
        """Ask releasers to approve a move. 409 `invalid_transition` when the stage table has no
        such edge; 409 `conflict` (with `request_id`) when one for the same move is open."""
        cmd = RequestTransition(name, version, data.to_stage, data.comment)
        return TransitionRequestResponse.of(await approvals.request_transition(cmd, writer(request)))

    @put("/policies/{stage:str}", operation_id="setPolicy", responses=problem_responses(400, 403, 404))
    async def set_policy(self, request: Request[Any, Any, Any], name: ModelPath, stage: PolicyStage,
                         data: JSONBody[PolicyRequest]) -> PolicyResponse:
        """Set the model's rules for entering `stage` (admin); `{}` means no rules. Audited in
        the model's chain and the system chain, with before and after."""
        rules = msgspec.to_builtins(data)
        return _policy(await policies.set_policy(SetPolicy(name, stage, rules), writer(request)))

    @get("/policies/{stage:str}", operation_id="getPolicy", responses=problem_responses(400, 404))
    async def get_policy(self, request: Request[Any, Any, Any], name: ModelPath,
                         stage: PolicyStage) -> PolicyResponse:
        """The rules in force for entering `stage`: the model's own (`source` model), the
        configured default (`default`), or none."""
        return _policy(await policies.get_policy(name, stage, reader(request)))

    @delete("/policies/{stage:str}", operation_id="deletePolicy",
            responses=problem_responses(400, 403, 404))
    async def delete_policy(self, request: Request[Any, Any, Any], name: ModelPath,
                            stage: PolicyStage) -> None:
        """Remove the model's own rules for `stage` (admin); a configured default applies again."""
        await policies.delete_policy(name, stage, writer(request))

    @post("/rollback", operation_id="rollbackModel", status_code=200, response_headers=ETAG_HEADER,
          responses=problem_responses(400, 403, 404, 409, 412, 422))
    async def rollback(self, request: Request[Any, Any, Any], name: ModelPath,
                       data: JSONBody[RollbackRequest]) -> Response[TransitionResponse]:
        """One step back in the production history: the version that held production before the
        current one (archived, and not itself archived by a rollback) back into production and
        the current one archived, in one transaction (releaser; a comment is required, 422
        `gate_failed` without it or when no step back is left). `expected_production_version`,
        the version to roll back from: 412 when it is no longer in production, so a re-run
        changes nothing."""
        cmd = RollbackModel(name, data.comment, given(data.expected_production_version))
        result = await transitions.rollback_model(cmd, writer(request))
        return with_etag(TransitionResponse.of(result), result.version.etag)


class TransitionRequestController(Controller):
    path = "/transition-requests"
    tags = ["gates"]

    @get("", operation_id="listTransitionRequests", responses=problem_responses(400, 404))
    async def list(
        self, request: Request[Any, Any, Any],
        model: Annotated[str | None, QueryParameter(max_length=256, pattern=NO_NUL)] = None,
        state_: Annotated[str | None, QueryParameter(
            name="state", pattern="^(pending|approved|applied|rejected|cancelled)$")] = None,
        requester: Annotated[str | None, QueryParameter(max_length=256, pattern=NO_NUL,
                                                        description="a principal")] = None,
        limit: Annotated[int | None, QueryParameter(ge=1, le=1000)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=2048)] = None,
    ) -> TransitionRequestList:
        """Requests on visible models, newest first."""
        found = await approvals.list_requests(model, state_, requester, cursor, limit, reader(request))
        return TransitionRequestList([TransitionRequestResponse.of(r) for r in found.items],
                                     found.next_cursor)

    @get("/{request_id:int}", operation_id="getTransitionRequest", responses=problem_responses(400, 404))
    async def get_request(self, request: Request[Any, Any, Any],
                          request_id: RequestId) -> TransitionRequestResponse:
        """One request, with its approvals."""
        return TransitionRequestResponse.of(await approvals.get_request(request_id, reader(request)))

    async def _decide(self, request: Request[Any, Any, Any], request_id: int, decision: str,
                      data: DecisionRequest | None) -> DecisionResponse:
        comment = data.comment if data is not None else None
        d = await approvals.decide(DecideRequest(request_id, decision, comment), writer(request))
        return DecisionResponse(TransitionRequestResponse.of(d.request), d.applied,
                                gate_results(d.results),
                                ModelVersionResponse.of(d.version) if d.version else None)

    @post("/{request_id:int}/approve", operation_id="approveTransitionRequest", status_code=200,
          responses=problem_responses(400, 403, 404, 409))
    async def approve(self, request: Request[Any, Any, Any], request_id: RequestId,
                      data: JSONBody[DecisionRequest | None] = None) -> DecisionResponse:
        """Approve (releaser; never the requester's own principal, 403). The approval that
        completes the quorum applies the move when the policy's `auto_apply` is on and every
        other gate passes (`applied`, with the new `version`); `results` are the gates."""
        return await self._decide(request, request_id, "approve", data)

    @post("/{request_id:int}/reject", operation_id="rejectTransitionRequest", status_code=200,
          responses=problem_responses(400, 403, 404, 409))
    async def reject(self, request: Request[Any, Any, Any], request_id: RequestId,
                     data: JSONBody[DecisionRequest | None] = None) -> DecisionResponse:
        """Reject an open request (releaser)."""
        return await self._decide(request, request_id, "reject", data)

    @post("/{request_id:int}/cancel", operation_id="cancelTransitionRequest", status_code=200,
          responses=problem_responses(400, 403, 404, 409))
    async def cancel(self, request: Request[Any, Any, Any], request_id: RequestId,
                     data: JSONBody[DecisionRequest | None] = None) -> DecisionResponse:
        """Cancel an open request (its requester's principal, or an admin)."""
        return await self._decide(request, request_id, "cancel", data)
