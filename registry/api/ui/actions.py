"""What the pages' forms do: sign in and out, request, approve, reject and cancel moves, move a
version, comment, and re-send webhook deliveries. Each calls one service as the signed-in token
and answers with a redirect to the page that shows the result (or, for htmx, the changed part)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, PathParameter
from litestar.response import Redirect, Template

from registry.api.deps import ModelPath, VersionPath, reader, writer
from registry.api.ui.pages import _time, number, page
from registry.api.ui.security import LOGIN_CSRF_COOKIE, SESSION_COOKIE, cookie_header, new_login_csrf
from registry.domain.errors import UnauthenticatedError, ValidationError
from registry.services import approvals, comments, sessions, transitions, webhooks
from registry.services.commands import (
    AddComment,
    AddRequestComment,
    DecideRequest,
    EditComment,
    RequestTransition,
    TransitionModelVersion,
)

# Ids in paths, bounded as the API bounds them (a larger number is a 400, never a database error).
Id = Annotated[int, PathParameter(ge=1, le=2**53 - 1)]


def form(request: Request[Any, Any, Any]) -> dict[str, str]:
    return request.scope["state"].get("form", {})


def _text(request: Request[Any, Any, Any], field: str) -> str | None:
    value = form(request).get(field, "").strip()
    return value or None


def version_url(model: str, version: int) -> str:
    return f"/ui/models/{quote(model, safe='')}/versions/{version}"


def _next(target: str | None) -> str:
    """Only a page of this site: never another host (an open redirect)."""
    if not target or not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return "/ui"
    return target


def _login_page(request: Request[Any, Any, Any], status: int = 200, error: str | None = None) -> Response[Any]:
    token = new_login_csrf()
    response = Template(template_name="login.html", status_code=status, context={
        "csrf": token, "next": _next(request.query_params.get("next") or form(request).get("next")),
        "error": error, "user": None, "ttl_hours": request.app.state.container.settings.ui_session_ttl / 3600})
    response.headers["Set-Cookie"] = cookie_header(LOGIN_CSRF_COOKIE, token, request.scope, max_age=3600,
                                                   path="/ui/login")
    return response


class SignIn(Controller):
    path = "/"
    include_in_schema = False

    @get("/login", name="ui:login")
    async def login_form(self, request: Request[Any, Any, Any]) -> Response[Any]:
        if request.scope["state"].get("ui_session") is not None:
            return Redirect(_next(request.query_params.get("next")), status_code=303)
        return _login_page(request)

    @post("/login", name="ui:login-post", status_code=303)
    async def login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Exchange an API token for a session cookie; the token itself is not kept by the browser."""
        container = request.app.state.container
        token = form(request).get("token", "").strip()
        try:
            secret, session = await sessions.open_session(token, container.authenticator, container.uow,
                                                          container.settings.ui_session_ttl)
        except UnauthenticatedError:
            return _login_page(request, 401, "That token is unknown, revoked or expired.")
        response = Redirect(_next(form(request).get("next")), status_code=303)
        max_age = int((session.expires_at - session.expires_at.now(session.expires_at.tzinfo)).total_seconds())
        response.headers["Set-Cookie"] = cookie_header(SESSION_COOKIE, secret, request.scope, max_age=max_age)
        return response

    @post("/logout", name="ui:logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        container = request.app.state.container
        secret = request.cookies.get(SESSION_COOKIE)
        if secret:
            await sessions.close_session(secret, container.uow)
            container.sessions.forget(secret)
        response = Redirect("/ui/login", status_code=303)
        response.headers["Set-Cookie"] = cookie_header(SESSION_COOKIE, "", request.scope, max_age=0)
        return response


class Actions(Controller):
    path = "/"
    include_in_schema = False

    @post("/models/{name:str}/versions/{version:int}/request", status_code=303)
    async def request_move(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath) -> Redirect:
        """Ask releasers to approve a move."""
        cmd = RequestTransition(name, version, form(request).get("to_stage", ""), _text(request, "comment"))
        found = await approvals.request_transition(cmd, writer(request))
        return Redirect(version_url(found.model, version) + "#requests", status_code=303)

    @post("/models/{name:str}/versions/{version:int}/move", status_code=303)
    async def move(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath) -> Redirect:
        """Move the version now, through the same checks as the API's transition."""
        cmd = TransitionModelVersion(name, version, form(request).get("to_stage", ""), _text(request, "comment"),
                                     expected_stage=_text(request, "expected_stage"))
        result = await transitions.transition_model_version(cmd, writer(request))
        return Redirect(version_url(result.version.model, version), status_code=303)

    @post("/requests/{request_id:int}/{decision:str}", status_code=303)
    async def decide(self, request: Request[Any, Any, Any], request_id: Id,
                     decision: FromPath[str]) -> Redirect:
        """Approve, reject or cancel a transition request."""
        if decision not in ("approve", "reject", "cancel"):
            raise ValidationError("a request is approved, rejected or cancelled")
        d = await approvals.decide(DecideRequest(request_id, decision, _text(request, "comment")), writer(request))
        return Redirect(version_url(d.request.model, d.request.version) + "#requests", status_code=303)

    @post("/models/{name:str}/versions/{version:int}/comments", status_code=303)
    async def comment(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath) -> Response[Any]:
        request_id = number(form(request).get("request_id"), "request_id", 2**53 - 1)
        body = form(request).get("body", "")
        if request_id is not None:
            found = await comments.add_request_comment(AddRequestComment(request_id, body), writer(request))
        else:
            found = await comments.add_comment(AddComment(name, version, body), writer(request))
        return await _thread(request, found.model, found.version)

    @post("/comments/{comment_id:int}/edit", status_code=303)
    async def edit_comment(self, request: Request[Any, Any, Any], comment_id: Id) -> Response[Any]:
        found = await comments.edit_comment(EditComment(comment_id, form(request).get("body", "")), writer(request))
        return await _thread(request, found.model, found.version)

    @post("/comments/{comment_id:int}/delete", status_code=303)
    async def delete_comment(self, request: Request[Any, Any, Any], comment_id: Id) -> Response[Any]:
        found = await comments.get_comment(comment_id, reader(request))
        await comments.delete_comment(comment_id, writer(request))
        return await _thread(request, found.model, found.version)

    @post("/webhooks/{webhook_id:int}/deliveries/{delivery_id:int}/redeliver", status_code=303)
    async def redeliver(self, request: Request[Any, Any, Any], webhook_id: Id,
                        delivery_id: Id) -> Redirect:
        await webhooks.redeliver(webhooks.target_of(webhook_id), delivery_id, writer(request), sub_id=webhook_id)
        return Redirect(f"/ui/webhooks#webhook-{webhook_id}", status_code=303)

    @post("/webhooks/{webhook_id:int}/recover", status_code=303)
    async def recover(self, request: Request[Any, Any, Any], webhook_id: Id) -> Redirect:
        since = _time(_text(request, "since"))
        if since is None:
            raise ValidationError("since: give the time from which failed deliveries are sent again")
        await webhooks.recover(webhooks.target_of(webhook_id), since, writer(request), sub_id=webhook_id)
        return Redirect(f"/ui/webhooks#webhook-{webhook_id}", status_code=303)


async def _thread(request: Request[Any, Any, Any], model: str, version: int) -> Response[Any]:
    """htmx swaps the comment thread in place; a plain form goes back to the version's page."""
    if request.headers.get("hx-request") != "true":
        return Redirect(version_url(model, version) + "#comments", status_code=303)
    thread = (await comments.list_version_comments(model, version, None, 1000, reader(request))).items
    principal = request.scope["state"]["ui_session"].principal
    found = (await approvals.list_requests(model, None, None, None, 1000, reader(request))).items
    return page(request, "comments.html", comments=thread, model=model, version=version,
                principal=principal.name,
                open_requests=[r for r in found if r.version == version and r.is_open])
