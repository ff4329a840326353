"""The audit log and the event feed."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter

from registry.api.deps import parse_time, reader, rfc3339
from registry.api.errors import problem_responses
from registry.api.schemas import (
    MODEL_NAME_PATTERN,
    NO_NUL,
    AuditEntry,
    AuditList,
    AuditVerification,
    ChainHead,
    ChainHeads,
    Event,
    EventList,
)
from registry.services import audit
from registry.services.ports import AuditQuery

ModelQuery = Annotated[str | None, QueryParameter(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN,
                                                  description="model name")]


class AuditController(Controller):
    path = "/"
    tags = ["audit"]

    @get("/audit", operation_id="listAudit", responses=problem_responses(400, 404))
    async def list_audit(
        self, request: Request[Any, Any, Any], model: ModelQuery = None,
        version: Annotated[int | None, QueryParameter(ge=1, le=2**31 - 1)] = None,
        actor: Annotated[str | None, QueryParameter(min_length=1, max_length=256, pattern=NO_NUL)] = None,
        action: Annotated[str | None, QueryParameter(min_length=1, max_length=64, pattern=NO_NUL)] = None,
        since: Annotated[str | None, rfc3339("RFC 3339; entries at or after")] = None,
        until: Annotated[str | None, rfc3339("RFC 3339; entries at or before")] = None,
        limit: Annotated[int | None, QueryParameter(ge=1, le=1000)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=2048)] = None,
    ) -> AuditList:
        """Audit entries of one model's chain, or of every chain the token may see (the system
        chain for admins only), in chain order, filtered."""
        query = AuditQuery(version=version, actor=actor, action=action, since=parse_time(since),
                           until=parse_time(until))
        result = await audit.list_audit(model, cursor, limit, reader(request), query)
        return AuditList([AuditEntry(**r) for r in result.items], result.next_cursor)

    @get("/audit/head", operation_id="getAuditHeads", responses=problem_responses(400, 404))
    async def audit_heads(self, request: Request[Any, Any, Any], model: ModelQuery = None) -> ChainHeads:
        """Each visible chain's latest seq and hash: save them elsewhere to anchor the log, so
        a truncated or rewritten tail is caught later (`python -m registry audit verify --anchor`)."""
        heads = await audit.audit_heads(model, reader(request))
        return ChainHeads([ChainHead(**h) for h in heads])

    @get("/audit/verify", operation_id="verifyAudit", responses=problem_responses(400, 404))
    async def verify_audit(self, request: Request[Any, Any, Any], model: ModelQuery = None) -> AuditVerification:
        """Recompute the chain(s) from the stored canonical text; `first_bad_seq` is the first
        entry that does not hash, link or number correctly."""
        v = await audit.verify_audit(model, reader(request))
        return AuditVerification(v.ok, v.checked, v.first_bad_seq, v.first_bad_chain)

    @get("/events", operation_id="listEvents", responses=problem_responses(400, 404))
    async def list_events(self, request: Request[Any, Any, Any],
                     model: Annotated[str, QueryParameter(min_length=1, max_length=256,
                                                          pattern=MODEL_NAME_PATTERN)],
                     # Litestar 2 leaves a falsy bound (`ge=0`) out of the document: state it again.
                     after: Annotated[int | None, QueryParameter(ge=0, le=2**62, description="a sequence",
                                                                 schema_extra={"minimum": 0})] = None,
                     limit: Annotated[int | None, QueryParameter(ge=1, le=1000)] = None) -> EventList:
        """One model's outbox events in `sequence` order (gap-free). Pass `next_cursor` as
        `after` to read on."""
        result = await audit.list_events(model, after, limit, reader(request))
        return EventList([Event(**e) for e in result.items], result.next_cursor)
