"""The pages' guard: security headers on every answer, the sign-in session, and CSRF checks.

Every page answer carries a Content-Security-Policy without inline script (htmx and the style
sheet are files the app serves), and refuses framing. A request is signed in by its session
cookie (HttpOnly, SameSite=Strict, Secure when the page was reached over HTTPS); without one a
page redirects to the sign-in form and any other method is 401. Every POST must carry the
session's CSRF token (a form field ``_csrf`` or the ``X-CSRF-Token`` header htmx sends) and, when
the browser says where it came from, an ``Origin`` of this site: otherwise 403, before any handler
runs. The form is read here, once, and handed to the handlers in ``scope["state"]["form"]``.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import structlog
from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from registry.domain.errors import UnauthenticatedError

SESSION_COOKIE = "registry_session"
LOGIN_CSRF_COOKIE = "registry_login_csrf"
MAX_FORM_BYTES = 256 * 1024  # a 10,000-character comment percent-encodes to up to ~120 KB
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
PUBLIC = ("/ui/login",)
SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_https(scope: Scope) -> bool:
    return scope.get("scheme") == "https"


def cookie_header(name: str, value: str, scope: Scope, *, max_age: int | None, path: str = "/ui") -> str:
    """A cookie scripts cannot read, never sent on cross-site requests, HTTPS-only over HTTPS."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if is_https(scope):
        parts.append("Secure")
    return "; ".join(parts)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def _same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    origin = connection.headers.get("origin")
    if origin is None:  # older browsers on same-origin POSTs; the CSRF token still decides
        return True
    host = connection.headers.get("host")
    try:
        parts = urlsplit(origin)
    except ValueError:  # not even a URL: not this site
        return False
    return bool(host) and parts.netloc == host and parts.scheme in ("http", "https")


async def _send_page(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status}</title>"
            f"<link rel=\"stylesheet\" href=\"/ui/static/app.css\"></head><body><main class=\"page\">"
            f"<h1>{status}</h1><p>{text}</p><p><a href=\"/ui\">Models</a></p></main></body></html>").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_form(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, or (b"", False) when it is larger than a form may be."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def parse_form(body: bytes) -> dict[str, str]:
    """The last value of each field of a URL-encoded form."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[-1] for k, v in fields.items()}


class PageGuard:
    """Litestar middleware of the /ui router (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        state: dict[str, Any] = scope.setdefault("state", {})
        # Litestar's own lenient parsing: a malformed cookie of another app on the host hides
        # nothing else.
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
        jar = connection.cookies
        container = scope["app"].state.container
        try:
            session = await container.sessions.authenticate(jar.get(SESSION_COOKIE))
        except UnauthenticatedError:
            session = None
        state["ui_session"] = session
        method = scope["method"]
        if method not in SAFE_METHODS:
            if not _same_origin(connection):
                await _send_page(send_secured, 403, "This form was sent from another site.")
                return
            body, ok = await _read_form(receive)
            if not ok:
                await _send_page(send_secured, 413, "The form is too large.")
                return
            form = parse_form(body)
            state["form"] = form
            receive = _replay(body)
        public = scope["path"] in PUBLIC
        if session is None and not public:
            if method in SAFE_METHODS:
                target = scope["path"] + ("?" + scope["query_string"].decode("latin-1")
                                          if scope.get("query_string") else "")
                location = "/ui/login?next=" + quote(target, safe="")
                await send_secured({"type": "http.response.start", "status": 303,
                                    "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
                await send_secured({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await _send_page(send_secured, 401, "Your session ended: <a href=\"/ui/login\">sign in</a> again.",
                                 [(b"hx-redirect", b"/ui/login")])
            return
        if method not in SAFE_METHODS:
            expected = session.csrf if session is not None else jar.get(LOGIN_CSRF_COOKIE)
            given = connection.headers.get("x-csrf-token") or state["form"].get("_csrf")
            if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
                await _send_page(send_secured, 403, "The form's CSRF token is missing or wrong: reload the page.")
                return
        if session is not None:
            scope["user"] = session.principal
            structlog.contextvars.bind_contextvars(actor=session.principal.token_name)
        await self.app(scope, receive, send_secured)
