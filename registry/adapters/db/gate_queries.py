"""Repository queries for checks, stage policies and transition requests (mixed into
SqlRepository; they run in the caller's unit of work)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.matching import name_matches
from registry.adapters.db.tables import checks_t, models_t, policies_t, requests_t
from registry.domain.model import RegisteredModel
from registry.domain.stages import Stage
from registry.services.ports import Actor, CheckRecord, PolicyRecord, RequestQuery, RequestRecord

_CHECK_COLS = (checks_t.c.id, checks_t.c.name, checks_t.c.status, checks_t.c.details_url,
               checks_t.c.summary, checks_t.c.reported_by, checks_t.c.reported_at)
_REQUESTS = select(requests_t, models_t.c.name.label("model_name")).join(
    models_t, models_t.c.id == requests_t.c.model_id)
OPEN_STATES = ("pending", "approved")


def _request(row: Any) -> RequestRecord:
    return RequestRecord(
        id=row.id, model_id=row.model_id, model=row.model_name, version=row.version,
        to_stage=row.to_stage, state=row.state, requested_by=row.requested_by,
        requester_principal=row.requester_principal, comment=row.comment,
        approvals=list(row.approvals), created_at=row.created_at, updated_at=row.updated_at,
        decided_by=row.decided_by, decision_comment=row.decision_comment,
    )


class GateQueries:
    conn: AsyncConnection
    sqlite: bool
    locked_policies: dict[tuple[int, str], dict[str, Any] | None]
    no_open_requests: set[tuple[int, int]]

    # -- checks -------------------------------------------------------------------------------

    async def add_check(self, model: RegisteredModel, version: int, name: str, status: str,
                        details_url: str | None, summary: str | None, actor: str,
                        now: datetime) -> int:
        stmt = insert(checks_t).values(
            model_id=model.id, version=version, name=name, status=status, details_url=details_url,
            summary=summary, reported_by=actor, reported_at=now).returning(checks_t.c.id)
        return int((await self.conn.execute(stmt)).scalar_one())

    async def latest_checks(self, model: RegisteredModel, version: int) -> dict[str, str]:
        latest = (select(func.max(checks_t.c.id))
                  .where(checks_t.c.model_id == model.id, checks_t.c.version == version)
                  .group_by(checks_t.c.name))
        stmt = select(checks_t.c.name, checks_t.c.status).where(checks_t.c.id.in_(latest))
        return {row.name: row.status for row in await self.conn.execute(stmt)}

    async def check_history(self, model: RegisteredModel, version: int) -> list[CheckRecord]:
        stmt = (select(*_CHECK_COLS)
                .where(checks_t.c.model_id == model.id, checks_t.c.version == version)
                .order_by(checks_t.c.name, checks_t.c.id.desc()))
        return [CheckRecord(*row) for row in await self.conn.execute(stmt)]

    # -- policies -----------------------------------------------------------------------------

    async def get_policy(self, model: RegisteredModel, stage: Stage) -> PolicyRecord | None:
        stmt = select(policies_t.c.stage, policies_t.c.rules, policies_t.c.updated_at,
                      policies_t.c.updated_by).where(policies_t.c.model_id == model.id,
                                                     policies_t.c.stage == stage.value)
        row = (await self.conn.execute(stmt)).first()
        return PolicyRecord(*row) if row else None

    async def policy_rules(self, model: RegisteredModel, stage: Stage) -> dict[str, Any] | None:
        """The rules of the model's own policy for ``stage``; no round trip when the model was
        locked in this unit of work (its lock read them)."""
        key = (model.id, stage.value)
        if key in self.locked_policies:
            return self.locked_policies[key]
        record = await self.get_policy(model, stage)
        return record.rules if record is not None else None

    async def put_policy(self, model: RegisteredModel, stage: Stage, rules: dict[str, Any],
                         actor: str, now: datetime) -> None:
        # The caller holds the model's row lock, so read-then-write cannot race another writer.
        self.locked_policies.pop((model.id, stage.value), None)
        values = {"rules": rules, "updated_at": now, "updated_by": actor}
        where = and_(policies_t.c.model_id == model.id, policies_t.c.stage == stage.value)
        if (await self.conn.execute(update(policies_t).where(where).values(**values))).rowcount == 0:
            await self.conn.execute(insert(policies_t).values(model_id=model.id, stage=stage.value,
                                                              **values))

    async def delete_policy(self, model: RegisteredModel, stage: Stage) -> None:
        self.locked_policies.pop((model.id, stage.value), None)
        await self.conn.execute(delete(policies_t).where(policies_t.c.model_id == model.id,
                                                         policies_t.c.stage == stage.value))

    # -- transition requests ------------------------------------------------------------------

    async def add_request(self, model: RegisteredModel, version: int, to_stage: str, actor: Actor,
                          comment: str | None, now: datetime) -> RequestRecord:
        principal = actor.principal or actor.name
        self.no_open_requests.discard((model.id, version))
        values = {"model_id": model.id, "version": version, "to_stage": to_stage,
                  "state": "pending", "requested_by": actor.name, "requester_principal": principal,
                  "comment": comment, "approvals": [], "created_at": now, "updated_at": now}
        new_id = (await self.conn.execute(
            insert(requests_t).values(**values).returning(requests_t.c.id))).scalar_one()
        return RequestRecord(id=int(new_id), model=model.name, **values)

    async def get_request(self, request_id: int) -> RequestRecord | None:
        row = (await self.conn.execute(_REQUESTS.where(requests_t.c.id == request_id))).first()
        return _request(row) if row else None

    async def open_requests(self, model: RegisteredModel, version: int,
                            to_stage: str | None = None) -> list[RequestRecord]:
        if (model.id, version) in self.no_open_requests:  # read in this unit of work: none
            return []
        stmt = _REQUESTS.where(requests_t.c.model_id == model.id, requests_t.c.version == version,
                               requests_t.c.state.in_(OPEN_STATES)).order_by(requests_t.c.id)
        if to_stage is not None:
            stmt = stmt.where(requests_t.c.to_stage == to_stage)
        return [_request(row) for row in await self.conn.execute(stmt)]

    async def save_request(self, request: RequestRecord) -> None:
        await self.conn.execute(update(requests_t).where(requests_t.c.id == request.id).values(
            state=request.state, approvals=request.approvals, decided_by=request.decided_by,
            decision_comment=request.decision_comment, updated_at=request.updated_at))

    async def list_requests(self, query: RequestQuery, before: int | None,
                            limit: int) -> list[RequestRecord]:
        stmt = _REQUESTS.order_by(requests_t.c.id.desc()).limit(limit)
        if before is not None:
            stmt = stmt.where(requests_t.c.id < before)
        if query.patterns is not None:
            stmt = stmt.where(name_matches(models_t.c.name, query.patterns, self.sqlite))
        if query.model is not None:
            stmt = stmt.where(models_t.c.name == query.model)
        if query.state is not None:
            stmt = stmt.where(requests_t.c.state == query.state)
        if query.requester is not None:
            stmt = stmt.where(requests_t.c.requester_principal == query.requester)
        return [_request(row) for row in await self.conn.execute(stmt)]
