"""A real webhook receiver on loopback, for end-to-end tests of delivery.

One :class:`Receiver` is one threaded HTTP server on ``127.0.0.1`` (a thread per connection, so
concurrent deliveries really overlap). It serves any number of :class:`Endpoint`\\ s, one per
subscription, at ``/hooks/<name>``. Every request is checked with ``standardwebhooks`` against
the endpoint's secrets and recorded as a :class:`Received` (webhook-id, parsed body, headers,
receipt time, arrival order), whether it verified or not; one that does not verify is answered
401, as a real receiver would.

An endpoint answers 200 unless told otherwise: :meth:`Endpoint.answer` queues replies for the
next requests (any status and headers, e.g. 429 with ``Retry-After`` or 302 with ``Location``) and
sets the reply after them; a reply may wait before answering (a slow receiver). The whole receiver
can go :meth:`Receiver.down` (its port is closed, so connecting is refused) and come back
:meth:`Receiver.up` on the same port. Responses are HTTP/1.0, so every request comes on a new
connection and "down" is down for every request, pooled or not.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PREFIX = "/hooks/"
T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """What an endpoint answers: a status, headers, and how long it waits first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


OK = Reply(200)


@dataclass
class Received:
    """One request as it arrived. ``at`` is the wall clock (``time.time()``) once the whole body
    had been read, comparable with the server's timestamps on the same machine; ``index`` is the
    arrival order across the whole receiver."""

    endpoint: str
    method: str
    index: int
    at: float
    webhook_id: str | None
    headers: dict[str, str]  # names lower-cased
    raw: bytes
    body: Any  # the parsed JSON, None if it was not JSON
    verified: bool  # one of the endpoint's secrets verified it
    error: str | None = None  # why it did not verify
    status: int | None = None  # what was answered; None while being answered or if sending failed
    answered_at: float | None = None

    @property
    def event(self) -> dict[str, Any]:
        """The event object the body carries (``data``)."""
        return self.body["data"]

    @property
    def signatures(self) -> list[str]:
        return self.headers.get("webhook-signature", "").split()

    def verifies_with(self, secret: str) -> bool:
        """Whether this one secret verifies the request (standardwebhooks)."""
        try:
            Webhook(secret).verify(self.raw, self.headers)
        except WebhookVerificationError:
            return False
        return True


class Endpoint:
    """One path of the receiver, standing for one subscriber."""

    def __init__(self, receiver: Receiver, name: str) -> None:
        self._receiver = receiver
        self.name = name
        self.secrets: list[str] = []
        self._script: deque[Reply] = deque()
        self._then = OK

    @property
    def url(self) -> str:
        return f"{self._receiver.base_url}{PREFIX}{self.name}"

    def answer(self, *replies: Reply, then: Reply = OK) -> None:
        """Answer the next requests with ``replies`` in turn, and every later one with ``then``."""
        with self._receiver.lock:
            self._script = deque(replies)
            self._then = then

    def _next_reply(self) -> Reply:
        with self._receiver.lock:
            return self._script.popleft() if self._script else self._then

    @property
    def received(self) -> list[Received]:
        """Every request so far, in arrival order (a copy)."""
        with self._receiver.lock:
            return [r for r in self._receiver.log if r.endpoint == self.name]

    @property
    def unverified(self) -> list[Received]:
        return [r for r in self.received if not r.verified]

    def ids(self) -> list[str | None]:
        return [r.webhook_id for r in self.received]

    def wait_for(self, check: Callable[[list[Received]], T], timeout: float = 20.0,
                 what: str = "") -> T:
        """Poll until ``check(received)`` is truthy; return it, or fail with what did arrive."""
        return poll(lambda: check(self.received), timeout,
                    lambda: f"{self.name}: {what or 'condition'} not met; received "
                            f"{[(r.webhook_id, r.status) for r in self.received][-20:]} (last 20)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many deliveries connect at once
    allow_reuse_address = True


class Receiver:
    """A threaded HTTP server on loopback that records and verifies webhook requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[Received] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.stray: list[tuple[str, bytes]] = []  # requests to a path no endpoint serves
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._start(0)
        assert self._server is not None
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"

    def endpoint(self, name: str) -> Endpoint:
        assert name not in self.endpoints, name
        self.endpoints[name] = Endpoint(self, name)
        return self.endpoints[name]

    @property
    def in_flight(self) -> list[Received]:
        """Requests read but not yet answered."""
        with self.lock:
            return [r for r in self.log if r.status is None and r.answered_at is None]

    # -- up and down ----------------------------------------------------------------------------

    def down(self) -> None:
        """Close the port: connecting is refused until :meth:`up`. Requests being answered finish."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            assert self._thread is not None
            self._thread.join(5)

    def up(self) -> None:
        """Listen again, on the same port."""
        if self._server is None:
            self._start(self.port)

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def close(self) -> None:
        self._closing.set()  # slow replies stop waiting
        self.down()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, port: int) -> None:
        deadline = time.monotonic() + 5
        while True:
            try:
                self._server = _Server(("127.0.0.1", port), self._handler_class())
                break
            except OSError:  # the old socket is still being released
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"receiver-{port}", daemon=True)
        self._thread.start()

    # -- handling -------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection (see the module docstring). Every method is
            # recorded: a followed 302 would come back as a GET.
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                receiver._handle(self)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_POST  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("content-length") or 0))
        at = time.time()
        name = h.path[len(PREFIX):] if h.path.startswith(PREFIX) else None
        endpoint = self.endpoints.get(name or "")
        if endpoint is None:
            with self.lock:
                self.stray.append((h.path, raw))
            self._send(h, Reply(404))
            return
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        verified, error = _verify(endpoint.secrets, raw, headers)
        with self.lock:
            record = Received(endpoint.name, h.command, len(self.log), at, headers.get("webhook-id"), headers,
                              raw, body, verified, error)
            self.log.append(record)
        reply = endpoint._next_reply() if verified else Reply(401)
        if reply.delay:
            self._closing.wait(reply.delay)
        sent = self._send(h, reply)
        with self.lock:
            record.answered_at = time.time()
            record.status = reply.status if sent else None

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: Reply) -> bool:
        try:
            h.send_response(reply.status)
            for key, value in reply.headers.items():
                h.send_header(key, value)
            h.send_header("content-length", "2")
            h.end_headers()
            h.wfile.write(b"{}")
            h.wfile.flush()
        except OSError:  # the sender gave up (timeout) or died
            return False
        return True


def _verify(secrets: list[str], raw: bytes, headers: dict[str, str]) -> tuple[bool, str | None]:
    if not secrets:
        return False, "the endpoint has no secret yet"
    error = None
    for secret in secrets:
        try:
            Webhook(secret).verify(raw, headers)
        except WebhookVerificationError as exc:
            error = str(exc)
        else:
            return True, None
    return False, error


def poll(check: Callable[[], T], timeout: float, describe: Callable[[], str] | str = "",
         interval: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy (returned), failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            text = describe() if callable(describe) else describe
            raise AssertionError(f"not within {timeout:g} s: {text}")
        time.sleep(interval)
