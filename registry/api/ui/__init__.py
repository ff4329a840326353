"""Server-rendered pages under /ui for the people who decide: Jinja2 templates, htmx, one style
sheet; every asset is served by the app (no CDN, no front-end build).

The pages call the same services as the API, as the token their session was opened with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request, Response, Router, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from registry.api.errors import status_of
from registry.api.ui.actions import Actions, SignIn
from registry.api.ui.pages import Pages
from registry.api.ui.security import SECURITY_HEADERS, PageGuard
from registry.api.ui.views import parse_at
from registry.domain import errors as e
from registry.domain.permissions import Role
from registry.domain.stages import Stage

HERE = Path(__file__).parent


def _when(value: datetime | str | None) -> str:
    """A time as people read it, in UTC."""
    if value is None:
        return "—"
    return parse_at(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(value: datetime | str | None) -> str:
    if value is None:
        return ""
    seconds = int((datetime.now(UTC) - parse_at(value)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(Role=Role, Stage=Stage)
    env.filters.update(q=lambda s: quote(str(s), safe=""), when=_when, ago=_ago,
                       query=lambda d: urlencode({k: v for k, v in d.items() if v is not None}),
                       size=_size, moved=_moved)
    return env


def _moved(entry: dict[str, Any]) -> str:
    """" from → to" of an audit entry that changed a stage, else nothing."""
    before, after = entry.get("before") or {}, entry.get("after") or {}
    if "stage" in before and "stage" in after:
        return f" {before['stage']} → {after['stage']}"
    return ""


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(engine=JinjaTemplateEngine.from_environment(environment()))


def _error_page(request: Request[Any, Any, Any], status: int, title: str, detail: str,
                **extra: Any) -> Response[Any]:
    session = request.scope.get("state", {}).get("ui_session")
    # An htmx swap of a part (a comment's form) shows the error as the page, not inside that part.
    headers = {"HX-Retarget": "body", "HX-Reswap": "innerHTML"} if request.headers.get("hx-request") else None
    return Template(template_name="error.html", status_code=status, headers=headers, context={
        "status": status, "title": title, "detail": detail, "user": session.principal if session else None,
        "csrf": session.csrf if session else "", "back": _back(request),
        "results": extra.get("results", []), "allowed": extra.get("allowed", []), "path": request.url.path})


def _back(request: Request[Any, Any, Any]) -> str:
    """The page the form was on, when it is one of ours (the Referer is only a hint)."""
    try:
        referer = urlsplit(request.headers.get("referer") or "")
    except ValueError:
        return "/ui"
    if referer.netloc == request.headers.get("host") and referer.path.startswith("/ui"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/ui"


def registry_error(request: Request[Any, Any, Any], exc: e.RegistryError) -> Response[Any]:
    status, _, title = status_of(exc)
    results = [r.to_dict() for r in getattr(exc, "results", [])]
    allowed = [getattr(s, "value", s) for s in getattr(exc, "allowed", [])]
    return _error_page(request, status, title, str(exc), results=results, allowed=allowed)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = exc.detail if exc.status_code < 500 else "Something went wrong; it has been logged."
    return _error_page(request, exc.status_code, "Request failed", detail)


def ui_router() -> Router:
    return Router(path="/ui", route_handlers=[Pages, Actions, SignIn],
                  middleware=[DefineMiddleware(PageGuard)], include_in_schema=False,
                  exception_handlers={e.RegistryError: registry_error, HTTPException: http_error,
                                      ValidationException: http_error})


def static_router() -> Router:
    return create_static_files_router(path="/ui/static", directories=[HERE / "static"],
                                      include_in_schema=False, name="ui:static")


@get("/", include_in_schema=False)
async def root() -> Redirect:
    return Redirect("/ui", status_code=303)


@get("/approvals", include_in_schema=False)
async def approvals_shortcut() -> Redirect:
    return Redirect("/ui/approvals", status_code=303)


def handlers() -> list[Any]:
    """Everything the pages add to the app."""
    return [ui_router(), static_router(), root, approvals_shortcut]


__all__ = ["SECURITY_HEADERS", "handlers", "template_config"]
