"""The pages people read: models, a model, a version, approvals, the audit log, webhooks.

Each page reads through the same services as the API, as the signed-in token (its role and
models), and shows only the buttons that token may use; the services refuse the rest anyway."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery
from litestar.response import Stream, Template

from registry.api.deps import ModelPath, VersionPath, parse_time, reader
from registry.api.ui.views import NEXT_STAGE, lineage_picture, policy_in_words, stays, timeline
from registry.domain.errors import ValidationError
from registry.domain.permissions import Role, role_for_transition
from registry.domain.stages import Stage, allowed_targets
from registry.services import (
    aliases,
    approvals,
    artifacts,
    audit,
    checks,
    comments,
    gates,
    lineage,
    models,
    overview,
    policies,
    versions,
    webhooks,
)
from registry.services.ports import AuditQuery

PAGE_SIZE = 50
Query = FromQuery[str | None]  # a page's query parameters are read as text and checked here
OPEN_STATES = ("pending", "approved")


def page(request: Request[Any, Any, Any], template: str, **context: Any) -> Template:
    """A page with what every page needs: who is signed in, their role, the CSRF token."""
    session = request.scope["state"]["ui_session"]
    user = session.principal
    context.update(user=user, role=user.role, csrf=session.csrf,
                   expires_at=session.expires_at, path=request.url.path)
    return Template(template_name=template, context=context, status_code=200)


def number(value: str | None, field: str, high: int = 2**31 - 1) -> int | None:
    """A whole number a form or query gave as text, 0 to ``high``; a 400 naming the field otherwise."""
    value = (value or "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 12) or int(value) > high:
        raise ValidationError(f"{field} must be a whole number from 0 to {high}")
    return int(value)


def _offset(value: str | None) -> int:
    return number(value, "offset") or 0


def can_move(role: Role, principal: str, current: Stage, target: Stage, requests: list[Any]) -> bool:
    """Whether the signed-in token may make this move itself, by the services' rule: its role
    suffices, or (an editor and up) its own request for the move is approved, which stands in for
    the role except on the rollback edge."""
    if role >= role_for_transition(current, target):
        return True
    rollback = current is Stage.ARCHIVED and target is Stage.PRODUCTION
    return role >= Role.EDITOR and not rollback and any(
        r.state == "approved" and r.to_stage == target.value and r.requester_principal == principal
        for r in requests)


class Pages(Controller):
    path = "/"
    include_in_schema = False

    @get("/", name="ui:models")
    async def model_list(self, request: Request[Any, Any, Any], q: Query = None,
                         offset: Query = None) -> Template:
        """Models by name, with production and staging at a glance and the latest change."""
        start = _offset(offset)
        query = (q or "").strip()[:256] or None
        found, more = await overview.glance(query, start, PAGE_SIZE, reader(request))
        return page(request, "models.html", found=found, q=query or "", offset=start, more=more,
                    page_size=PAGE_SIZE)

    @get("/models/{name:str}", name="ui:model")
    async def model(self, request: Request[Any, Any, Any], name: ModelPath, offset: Query = None) -> Template:
        """A model: its versions, aliases, stage timeline and policies."""
        model = await models.get_model(name, reader(request))
        start = _offset(offset)
        all_versions = sorted(await _all_versions(request, model.name), key=lambda v: -v.version)
        shown = all_versions[start:start + PAGE_SIZE]
        statuses = await overview.latest_checks(model.name, [v.version for v in shown], reader(request))
        found_aliases = (await aliases.list_aliases(model.name, None, 1000, reader(request))).items
        entries = await overview.stage_entries(model.name, reader(request))
        found_stays = stays(entries)
        chart = timeline(found_stays, datetime.now(UTC))
        rules = {stage: await policies.get_policy(model.name, stage, reader(request))
                 for stage in ("staging", "production")}
        return page(request, "model.html", model=model, versions=shown, statuses=statuses,
                    aliases=found_aliases, chart=chart, stays=list(reversed(found_stays)),
                    policies={s: (v, policy_in_words(v.policy)) for s, v in rules.items()},
                    offset=start, more=len(all_versions) > start + PAGE_SIZE, page_size=PAGE_SIZE)

    @get("/models/{name:str}/versions/{version:int}", name="ui:version")
    async def version(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath) -> Template:
        """A version: the gates of its next stage, open requests, files, audit, lineage, comments."""
        v = await versions.get_model_version(name, version, reader(request))
        user = request.scope["state"]["ui_session"].principal
        next_stage = NEXT_STAGE.get(v.stage)
        assessment = (await gates.check_gates(v.model, version, next_stage.value, None, reader(request))
                      if next_stage else None)
        requests = (await approvals.list_requests(v.model, None, None, None, 1000, reader(request))).items
        mine = [r for r in requests if r.version == version]
        files = await artifacts.list_artifacts(v.model, version, None, 1000, reader(request))
        entries = await overview.version_entries(v.model, version, reader(request))
        found_lineage = await lineage.version_lineage(v.model, version, reader(request))
        thread = (await comments.list_version_comments(v.model, version, None, 1000, reader(request))).items
        open_requests = [r for r in mine if r.state in OPEN_STATES]
        moves = [t for t in allowed_targets(v.stage) if can_move(user.role, user.name, v.stage, t, open_requests)]
        return page(request, "version.html", v=v, next_stage=next_stage, assessment=assessment,
                    open_requests=open_requests,
                    closed_requests=[r for r in mine if r.state not in OPEN_STATES],
                    files=files, entries=list(reversed(entries)), lineage=found_lineage,
                    picture=lineage_picture(v.model, version, found_lineage), comments=thread,
                    checks=await checks.list_checks(v.model, version, reader(request)),
                    moves=moves, principal=user.name, model=v.model, version=v.version)

    @get("/approvals", name="ui:approvals")
    async def approvals_page(self, request: Request[Any, Any, Any]) -> Template:
        """Open transition requests on visible models, newest first."""
        found = []
        for state in OPEN_STATES:
            found += (await approvals.list_requests(None, state, None, None, 1000, reader(request))).items
        found.sort(key=lambda r: r.created_at, reverse=True)
        return page(request, "approvals.html", requests=found)

    @get("/audit", name="ui:audit")
    async def audit_page(self, request: Request[Any, Any, Any], model: Query = None,
                         version: Query = None, actor: Query = None, action: Query = None,
                         since: Query = None, until: Query = None,
                         cursor: Query = None, verify: Query = None) -> Template:
        """The audit log, filtered. A model's chain is verified with every view; every visible
        chain (the whole log, for an admin) only when asked, as that re-reads all of it."""
        filters = _filters(model, version, actor, action, since, until)
        query = _audit_query(filters)
        result = await audit.list_audit(filters["model"], cursor, PAGE_SIZE, reader(request), query)
        verification = (await audit.verify_audit(filters["model"], reader(request))
                        if filters["model"] or verify == "all" else None)
        export = {k: v for k, v in filters.items() if v}
        return page(request, "audit.html", entries=result.items, next_cursor=result.next_cursor,
                    filters=filters, verification=verification, export=export)

    @get("/audit/export", name="ui:audit-export")
    async def audit_export(self, request: Request[Any, Any, Any], model: Query = None,
                           version: Query = None, actor: Query = None,
                           action: Query = None, since: Query = None,
                           until: Query = None) -> Stream:
        """Every entry the filters select, one JSON object per line, as stored (with its hash)."""
        filters = _filters(model, version, actor, action, since, until)
        query = _audit_query(filters)
        await audit.list_audit(filters["model"], None, 1, reader(request), query)  # errors before the stream

        async def lines() -> AsyncIterator[bytes]:
            cursor = None
            while True:
                found = await audit.list_audit(filters["model"], cursor, 1000, reader(request), query)
                for entry in found.items:
                    yield (json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
                if found.next_cursor is None:
                    return
                cursor = found.next_cursor

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Stream(lines(), media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="audit-{stamp}.jsonl"'})

    @get("/webhooks", name="ui:webhooks")
    async def webhooks_page(self, request: Request[Any, Any, Any]) -> Template:
        """Subscriptions with their recent deliveries (admins)."""
        subs = (await webhooks.list_webhooks(None, 1000, reader(request))).items
        recent = {s.id: (await webhooks.list_deliveries(webhooks.target_of(s.id), None, None, 10,
                                                        reader(request), sub_id=s.id)).items
                  for s in subs}
        return page(request, "webhooks.html", subscriptions=subs, deliveries=recent,
                    since=(datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))


async def _all_versions(request: Request[Any, Any, Any], name: str) -> list[Any]:
    found, cursor = [], None
    while True:
        listed = await versions.list_model_versions(name, None, None, [], cursor, 1000, reader(request))
        found += listed.items
        if listed.next_cursor is None:
            return found
        cursor = listed.next_cursor


def _filters(model: str | None, version: str | None, actor: str | None, action: str | None,
             since: str | None, until: str | None) -> dict[str, Any]:
    def clean(value: str | None) -> str | None:
        value = (value or "").strip()
        return value[:256] or None

    return {"model": clean(model), "version": clean(version), "actor": clean(actor),
            "action": clean(action), "since": clean(since), "until": clean(until)}


def _audit_query(filters: dict[str, Any]) -> AuditQuery:
    return replace(AuditQuery(), version=number(filters["version"], "version"), actor=filters["actor"],
                   action=filters["action"], since=_time(filters["since"]),
                   until=_time(filters["until"], end_of_minute=True))


def _time(value: str | None, *, end_of_minute: bool = False) -> datetime | None:
    """An RFC 3339 time, or the browser's datetime-local minute (taken as UTC; as an upper bound,
    the whole minute)."""
    if value is None:
        return None
    if len(value) == 16 and value[10] == "T":  # 2026-12-07T10:30 from <input type=datetime-local>
        value += ":59.999999Z" if end_of_minute else ":00Z"
    return parse_time(value)
