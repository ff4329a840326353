"""``Idempotency-Key`` on POST, as ASGI middleware around the app.

It reads the whole body (to fingerprint it), hands the request's first writer an idempotent call
to join (see ``adapters/db/idempotency.py``), and holds the app's answer back until the writer's
transaction has committed with the answer stored beside the effect. A client therefore never
sees a success that did not commit, and a retry after any failure either replays the stored
answer or runs the call afresh.
"""

from __future__ import annotations

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from registry.api.errors import send_problem
from registry.bootstrap import Container
from registry.domain.errors import ValidationError
from registry.services.idempotency import (
    IdempotentRequest,
    StoredResponse,
    fingerprint,
    key_hash,
    validate_key,
)

MAX_BODY = 10 * 1024 * 1024  # Litestar's own default request body limit
log = structlog.get_logger("registry.idempotency")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class ClientGone(Exception):  # noqa: N818
    """The client left before sending the whole body: nothing is run."""


NATIVE = "/api/v1/"  # the surface whose POSTs honour Idempotency-Key


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container
        # Keys being processed by this process: a concurrent retry is refused at once. Across
        # processes (PostgreSQL) the advisory lock taken in the transaction does the same.
        self._running: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        credential = _header(scope, b"authorization") if key is not None else None
        if key is None or scope["method"] != "POST" or not credential or not scope["path"].startswith(NATIVE):
            # No key, or no token to scope it (401 follows), or MLflow's surface, which has no
            # Idempotency-Key in its contract: the call runs as it is.
            await self.app(scope, receive, send)
            return
        try:
            validate_key(key)
        except ValidationError as exc:
            await send_problem(send, 400, "validation_error", "Invalid request", exc.detail)
            return
        try:
            body = await _read_body(receive)
        except ClientGone:
            return
        if body is None:
            await send_problem(send, 413, "validation_error", "Request too large",
                           f"a request body is at most {MAX_BODY} bytes")
            return
        # A conditional call with another If-Match is another request.
        condition = (_header(scope, b"if-match") or "").encode("latin-1")
        call = self.container.idempotent_call(key_hash(credential, "POST", scope["path"], key),
                                              fingerprint(condition + b"\n" + body))
        if call.key_hash in self._running:
            await send_problem(send, 409, "idempotency_in_progress", "Request in progress",
                           "a request with this Idempotency-Key is still being processed; retry later")
            return
        self._running.add(call.key_hash)
        try:
            await self._run(scope, send, call, body)
        finally:
            self._running.discard(call.key_hash)

    async def _run(self, scope: Scope, send: Send, call: IdempotentRequest, body: bytes) -> None:
        scope.setdefault("state", {})["idempotency"] = call
        answer: list[Message] = []

        async def replay_body() -> Message:
            nonlocal body
            chunk, body = body, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        async def hold(message: Message) -> None:
            answer.append(message)

        try:
            await self.app(scope, replay_body, hold)
        finally:
            held = call.held
            if held is not None:  # a writer's transaction waits for the answer
                effect = held.holds_effect
                committed = await held.finish(_storable(answer, effect))
                if effect and not committed:
                    log.warning("idempotent_commit_failed", path=scope["path"])
                    answer = []
        if not answer:
            await send_problem(send, 503, "unavailable", "Service unavailable",
                           "the change could not be committed; retry with the same Idempotency-Key")
            return
        for message in answer:
            await send(message)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left mid-body
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _storable(answer: list[Message], holds_effect: bool) -> StoredResponse | None:
    """The app's answer as it will be stored, or None to roll back: a failure after the effect
    (a 5xx while rendering) must not commit it."""
    start = next((m for m in answer if m["type"] == "http.response.start"), None)
    if start is None or start["status"] >= 500:
        return None
    if not holds_effect and start["status"] < 400:
        return None  # only refusals are stored without an effect
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    return StoredResponse(start["status"], headers, body)



