"""Transition requests: an editor asks for a move, releasers other than the requester's principal
approve it, and the approval that completes the quorum applies it (``auto_apply``) when every
other gate passes; otherwise the requester's own transition call consumes it."""

from __future__ import annotations

from dataclasses import dataclass

from registry.domain import stages
from registry.domain.errors import ConflictError, ForbiddenError, NotFoundError, OpenRequestExistsError, ValidationError
from registry.domain.events import RequestApproved, RequestCancelled, RequestCreated, RequestRejected
from registry.domain.gates import GateResult
from registry.domain.model import MAX_TEXT, ModelVersion, RegisteredModel
from registry.domain.permissions import Role, visible
from registry.domain.stages import Stage
from registry.services.access import check_visible, lock_model
from registry.services.audit import rfc3339
from registry.services.commands import DecideRequest, RequestTransition
from registry.services.gates import assess, effective_policy
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import Page, RequestQuery, RequestRecord, UnitOfWork
from registry.services.transitions import TransitionResult, log_stage_changed, move_checked
from registry.services.versions import require_version

STATES = ("pending", "approved", "applied", "rejected", "cancelled")


@dataclass(frozen=True, slots=True)
class Decision:
    request: RequestRecord
    results: list[GateResult]
    moved: TransitionResult | None = None  # the move, when the approval applied it

    @property
    def applied(self) -> bool:
        return self.moved is not None

    @property
    def version(self) -> ModelVersion | None:
        """The version after the move, when the approval applied it."""
        return self.moved.version if self.moved is not None else None


def _comment(comment: str | None) -> str | None:
    if comment is not None and len(comment) > MAX_TEXT:
        raise ValidationError(f"comment is at most {MAX_TEXT} characters")
    return comment


async def _with_quorum(uow: UnitOfWork, requests: list[RequestRecord]) -> None:
    """Fill in each request's ``required_approvals`` from the current policy of its stage."""
    required: dict[tuple[str, str], int] = {}
    for r in requests:
        if (r.model, r.to_stage) not in required:
            model = await uow.repo.get_model(r.model)
            policy = None if model is None else (await effective_policy(uow, model, Stage(r.to_stage))).policy
            required[r.model, r.to_stage] = policy.required_approvals if policy is not None else 0
        r.required_approvals = required[r.model, r.to_stage]


async def request_transition(cmd: RequestTransition, uow: UnitOfWork) -> RequestRecord:
    """Open a request for a move the stage table allows (409 otherwise, or when one is open)."""
    target = Stage.parse(cmd.to_stage)
    _comment(cmd.comment)
    async with uow:
        model = await lock_model(uow, cmd.model, Role.EDITOR, "requesting a transition")
        version = await require_version(uow.repo, model, cmd.version)
        stages.trigger_for(version.stage, target)
        for existing in await uow.repo.open_requests(model, version.version, target.value):
            raise OpenRequestExistsError(existing.id, f"request {existing.id} for this move is "
                                         f"already {existing.state}")
        request = await uow.repo.add_request(model, version.version, target.value, uow.actor,
                                             cmd.comment, uow.now())
        uow.record(model, RequestCreated(model=model.name, version=version.version,
                                         after=request.snapshot(),
                                         extra={"request": request.id, "comment": cmd.comment}))
        await _with_quorum(uow, [request])
        await uow.commit()
    return request


_DOING = {"approve": "approving", "reject": "rejecting", "cancel": "cancelling"}


async def decide(cmd: DecideRequest, uow: UnitOfWork) -> Decision:
    """Approve, reject or cancel an open request."""
    _comment(cmd.comment)
    needed = Role.EDITOR if cmd.decision == "cancel" else Role.RELEASER
    async with uow:
        found = await uow.repo.get_request(cmd.request_id)
        if found is None or not visible(uow.actor.models, found.model):
            raise NotFoundError(f"transition request {cmd.request_id} does not exist")
        model = await lock_model(uow, found.model, needed, f"{_DOING[cmd.decision]} a request")
        request = await uow.repo.get_request(cmd.request_id)  # again, under the model's lock
        if request is None:
            raise NotFoundError(f"transition request {cmd.request_id} does not exist")
        if not request.is_open:
            raise ConflictError(f"request {request.id} is {request.state}")
        if cmd.decision == "approve":
            decision = await _approve(uow, model, request, cmd.comment)
        else:
            decision = _close(uow, model, request, cmd)
            await uow.repo.save_request(request)
        await _with_quorum(uow, [decision.request])
        await uow.commit()
    if decision.moved is not None:
        log_stage_changed(decision.moved)
    return decision


def _close(uow: UnitOfWork, model: RegisteredModel, request: RequestRecord,
           cmd: DecideRequest) -> Decision:
    principal = uow.actor.principal or uow.actor.name
    if cmd.decision == "cancel" and principal != request.requester_principal \
            and uow.actor.role < Role.ADMIN:
        raise ForbiddenError("a request is cancelled by its requester or an admin")
    before = request.snapshot()
    request.state = "rejected" if cmd.decision == "reject" else "cancelled"
    request.decided_by, request.decision_comment = uow.actor.name, cmd.comment
    request.updated_at = uow.now()
    event = RequestRejected if cmd.decision == "reject" else RequestCancelled
    uow.record(model, event(model=model.name, version=request.version, before=before,
                            after=request.snapshot(),
                            extra={"request": request.id, "comment": cmd.comment}))
    return Decision(request, [])


async def _approve(uow: UnitOfWork, model: RegisteredModel, request: RequestRecord,
                   comment: str | None) -> Decision:
    """Add the caller's approval; when it completes the quorum, mark the request approved and,
    with ``auto_apply`` and every other gate passing, make the move in this transaction."""
    principal = uow.actor.principal or uow.actor.name
    if principal == request.requester_principal:
        raise ForbiddenError("an approval must come from a principal other than the requester's")
    if any(a["principal"] == principal for a in request.valid_approvals):
        raise ConflictError(f"principal {principal!r} has already approved request {request.id}")
    before = request.snapshot()
    request.approvals.append({"principal": principal, "actor": uow.actor.name, "comment": comment,
                              "at": rfc3339(uow.now()), "voided_at": None})
    request.updated_at = uow.now()
    version, production = await uow.repo.get_version_and_production(model, request.version)
    assert version is not None  # deleting a version cancels its open requests: this one's is live
    target = Stage(request.to_stage)
    assessment = await assess(uow, model, version, production, target, comment=request.comment,
                              principal=request.requester_principal, request=request)
    quorum = len(request.valid_approvals) >= assessment.policy.required_approvals
    if quorum:
        request.state = "approved"
    uow.record(model, RequestApproved(model=model.name, version=request.version, before=before,
                                      after=request.snapshot(),
                                      extra={"request": request.id, "comment": comment,
                                             "quorum": quorum}))
    if not (quorum and assessment.policy.auto_apply and assessment.allowed) \
            or await _uploads_open(uow, version):
        await uow.repo.save_request(request)
        return Decision(request, assessment.results)
    result = await move_checked(uow, model, version, production, target, request.comment,
                                request=request, assessment=assessment)  # saves it as applied
    return Decision(request, result.transition.gates, result)


async def _uploads_open(uow: UnitOfWork, version: ModelVersion) -> bool:
    """Whether presigned uploads still open would refuse the seal of the version's first move
    (out of none, or of a version imported unsealed): the approval then stands, and the move waits
    for the requester (as for a failing gate)."""
    if version.sealed_at is not None or version.id is None:  # unsealed: in none, or imported so
        return False
    now = uow.now()
    return any(u.expires_at > now for u in await uow.repo.uploads(version.id))


async def get_request(request_id: int, uow: UnitOfWork) -> RequestRecord:
    async with uow:
        request = await uow.repo.get_request(request_id)
        if request is None or not visible(uow.actor.models, request.model):
            raise NotFoundError(f"transition request {request_id} does not exist")
        await _with_quorum(uow, [request])
    return request


async def list_requests(model: str | None, state: str | None, requester: str | None,
                        cursor: str | None, limit: int | None, uow: UnitOfWork) -> Page:
    """Requests visible to the caller, newest first."""
    if state is not None and state not in STATES:
        raise ValidationError(f"state must be one of {', '.join(STATES)}")
    if model is not None:
        model = check_visible(uow, model)
    limit = check_limit(limit)
    before = decode_cursor(cursor, int)
    query = RequestQuery(uow.actor.models, model, state, requester)
    async with uow:
        rows = await uow.repo.list_requests(query, before, limit + 1)
        await _with_quorum(uow, rows)
    return Page(*page(rows, limit, lambda r: r.id))
