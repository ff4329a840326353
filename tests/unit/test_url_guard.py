"""Which webhook URLs may be dialled, and what one POST to them comes to.

The address table is written out by hand. The transport and poster tests talk to a real HTTP
server on loopback (a thread in this process), which records every connection it accepts, so
"refused" is checked as "nothing reached the server", not just as an exception.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from registry.adapters.webhooks import (
    BODY_CAP,
    GuardedTransport,
    HttpPoster,
    Target,
    UnsafeUrlError,
    UrlGuard,
    address_allowed,
    parse_url,
    retry_after,
    webhook_poster,
)

# -- addresses --------------------------------------------------------------------------------------

# (address, allowed when private targets are off, allowed when they are on)
ADDRESSES = [
    ("127.0.0.1", False, True),
    ("127.1.2.3", False, True),
    ("::1", False, True),
    ("::ffff:127.0.0.1", False, True),
    ("::ffff:7f01:203", False, True),  # 127.1.2.3, mapped
    ("10.0.0.1", False, True),
    ("10.255.255.255", False, True),
    ("172.16.0.1", False, True),
    ("172.31.255.254", False, True),
    ("172.15.255.255", True, True),  # just below 172.16/12
    ("172.32.0.1", True, True),  # just above it
    ("192.168.1.1", False, True),
    ("::ffff:192.168.1.1", False, True),
    ("169.254.169.254", False, False),  # cloud metadata: refused even when private is allowed
    ("::ffff:169.254.169.254", False, False),
    ("169.254.169.253", False, True),
    ("fe80::1", False, True),
    ("fd00:ec2::254", False, False),  # AWS metadata over IPv6
    ("fd00:ec2::253", False, True),
    ("64:ff9b::7f00:1", False, True),  # NAT64 of 127.0.0.1
    ("64:ff9b::5db8:d822", True, True),  # NAT64 of 93.184.216.34
    ("2002:7f00:1::", False, True),  # 6to4 of 127.0.0.1
    ("::127.0.0.1", False, True),  # IPv4-compatible form
    ("fc00::1", False, True),
    ("100.64.0.1", False, True),
    ("100.127.255.254", False, True),
    ("100.128.0.1", True, True),  # just above 100.64/10
    ("192.0.2.10", False, True),  # documentation
    ("0.0.0.0", False, False),
    ("::", False, False),
    ("::ffff:0.0.0.0", False, False),
    ("224.0.0.1", False, False),
    ("239.255.255.250", False, False),
    ("ff02::1", False, False),
    ("::ffff:224.0.0.1", False, False),
    ("93.184.216.34", True, True),
    ("::ffff:93.184.216.34", True, True),
    ("8.8.8.8", True, True),
    ("2606:2800:220:1::1", True, True),
    ("2001:4860:4860::8888", True, True),
]


@pytest.mark.parametrize(("address", "off", "on"), ADDRESSES)
def test_address_allowed(address: str, off: bool, on: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert address_allowed(ip, allow_private=False) is off
    assert address_allowed(ip, allow_private=True) is on


# -- the URL's form ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/hook", "https://"),
    ("file:///etc/passwd", "https://"),
    ("javascript:alert(1)", "https://"),
    ("//example.com/hook", "https://"),
    ("https:///hook", "no host"),
    ("https://", "no host"),
    ("https://:443/hook", "no host"),
    ("https://user:pass@example.com/hook", "credentials"),
    ("https://user@example.com/hook", "credentials"),
    ("https://:secret@example.com/hook", "credentials"),
    ("https://example.com/hook#top", "fragment"),
    ("https://example.com/a hook", "spaces"),
    ("https://example.com/hook\t", "spaces"),
    ("https://example.com/\r\nX-Injected: 1", "spaces"),
    ("https://exam\x00ple.com/", "spaces"),
    ("https://example.com/\x7f", "spaces"),
    (" https://example.com/", "spaces"),
    ("https://example.com/" + "a" * 2029, "2048"),
    ("https://example.com:99999/", "cannot be parsed"),
    ("https://example.com:port/", "cannot be parsed"),
    ("https://[::1/", "cannot be parsed"),
    ("https://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("https://METADATA.Google.Internal./computeMetadata/v1/", "metadata"),
    ("http://metadata.google.internal/", "metadata"),
    ("https://metadata/", "metadata"),
    ("https://instance-data/latest/", "metadata"),
    ("https://metadata.azure.internal/", "metadata"),
])
def test_parse_url_refuses(url: str, message: str) -> None:
    with pytest.raises(UnsafeUrlError, match=message):
        parse_url(url)


@pytest.mark.parametrize(("url", "target"), [
    ("https://Example.COM./hook?x=1", Target("https", "example.com", 443)),
    ("https://example.com:8443/hook", Target("https", "example.com", 8443)),
    ("http://localhost:8080/x", Target("http", "localhost", 8080)),
    ("http://hooks.internal/x", Target("http", "hooks.internal", 80)),
    ("https://[2606:2800:220:1::1]:8443/", Target("https", "2606:2800:220:1::1", 8443)),
    ("https://example.com/" + "a" * 2028, Target("https", "example.com", 443)),  # 2048 exactly
])
def test_parse_url_accepts(url: str, target: Target) -> None:
    assert parse_url(url) == target


# -- the check at save ------------------------------------------------------------------------------


async def refusal(url: str, allow_private: bool) -> str:
    with pytest.raises(UnsafeUrlError) as info:
        await UrlGuard(allow_private).check(url)
    return str(info.value)


@pytest.mark.parametrize("url", ["http://93.184.216.34/hook", "http://10.0.0.1/hook", "http://localhost/hook"])
async def test_plain_http_is_refused_unless_private_targets_are_allowed(url: str) -> None:
    assert "https://" in await refusal(url, allow_private=False)


async def test_plain_http_to_a_public_address_is_refused_even_when_private_is_allowed() -> None:
    assert "plain http" in await refusal("http://93.184.216.34/hook", allow_private=True)


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "http://localhost:8080/hook", "https://192.168.1.1/hook",
                                 "https://[fd00:ec2::1]/", "https://localhost/hook"])
async def test_private_targets_pass_when_allowed(url: str) -> None:
    await UrlGuard(allow_private=True).check(url)


@pytest.mark.parametrize("url", ["https://93.184.216.34/hook", "https://[2606:2800:220:1::1]:8443/hook"])
@pytest.mark.parametrize("allow_private", [False, True])
async def test_https_to_a_public_ip_literal_passes(url: str, allow_private: bool) -> None:
    await UrlGuard(allow_private).check(url)


@pytest.mark.parametrize("url", ["https://localhost/hook", "https://LOCALHOST./hook", "https://localhost:8443/"])
async def test_localhost_is_refused_because_it_resolves_to_loopback(url: str) -> None:
    message = await refusal(url, allow_private=False)
    assert "not a public address" in message
    assert "127.0.0.1" in message or "::1" in message


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/", "https://[::1]/", "https://[::ffff:127.0.0.1]/", "https://[::ffff:7f00:1]/",
    "https://10.1.2.3/", "https://169.254.169.254/latest/meta-data/", "https://[fe80::1]/",
    "https://[fe80::1%25eth0]/", "https://[fd00:ec2::254]/", "https://100.64.0.1/", "https://0.0.0.0/",
    "https://[::]/", "https://224.0.0.1/",
])
async def test_non_global_ip_literals_are_refused(url: str) -> None:
    assert "not a public address" in await refusal(url, allow_private=False)


@pytest.mark.parametrize("url", ["https://0.0.0.0/", "https://[::]/", "https://224.0.0.1/", "https://0/"])
async def test_unspecified_and_multicast_are_refused_even_when_private_is_allowed(url: str) -> None:
    assert "not a public address" in await refusal(url, allow_private=True)


# What the resolver does with the shorthand IPv4 forms (inet_aton's): every one of them names
# 127.0.0.1, and the guard sees the resolved address, so none gets through.
@pytest.mark.parametrize("url", [
    "https://2130706433/", "https://0x7f000001/", "https://017700000001/", "https://127.1/",
    "https://0x7f.1/", "https://0x7F.0.0.1/", "https://2130706433:8443/hook",
])
async def test_decimal_hex_and_octal_ipv4_forms_resolve_to_loopback_and_are_refused(url: str) -> None:
    message = await refusal(url, allow_private=False)
    assert "resolves to 127.0.0.1" in message


async def test_a_dotted_octal_ipv4_is_refused() -> None:
    # The resolver reads 0177.0.0.1 as 127.0.0.1 (httpx would not parse it at all).
    await refusal("https://0177.0.0.1/", allow_private=False)


async def test_a_decimal_ipv4_over_http_is_refused_for_its_scheme_first() -> None:
    assert "https://" in await refusal("http://2130706433/", allow_private=False)


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    assert "does not resolve" in await refusal("https://no-such-host.invalid/hook", allow_private=False)


@pytest.mark.parametrize("url", ["https://a..b/hook", "https://" + "a" * 64 + ".example.com/hook"])
async def test_a_host_name_the_resolver_cannot_encode_is_refused_not_crashed(url: str) -> None:
    # Found by this test: socket's IDNA codec raises UnicodeError, which is no UnsafeUrlError (a 500
    # at save instead of a 422).
    await refusal(url, allow_private=False)


# -- a real server on loopback ----------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    host: str | None
    body: bytes


@dataclass
class State:
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    endless_sent: int | None = None  # bytes the endless body got out before the client left
    release: threading.Event = field(default_factory=threading.Event)  # ends slow handlers


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        state.requests.append(Seen("POST", url.path, self.headers.get("host"), body))
        if url.path == "/redirect":
            self._reply(int(query.get("code", "302")), {"location": query["to"]})
        elif url.path == "/status":
            headers = {"retry-after": query["retry_after"]} if "retry_after" in query else {}
            self._reply(int(query["code"]), headers)
        elif url.path == "/slow":
            state.release.wait(10)
            self._reply(200)
        elif url.path == "/stalled-body":
            self.send_response(200)
            self.send_header("content-length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            state.release.wait(10)
        elif url.path == "/endless":
            self._endless(state)
        else:
            self._reply(200, body=b"ok")

    def _reply(self, code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _endless(self, state: State) -> None:
        """A body with no end (delimited by the close that never comes), sent until the client
        hangs up: a reader that did not stop would wait for its timeout."""
        self.send_response(200)
        self.send_header("connection", "close")
        self.end_headers()
        chunk, sent = b"x" * 65536, 0
        give_up = time.monotonic() + 20  # so a reader that never stops fails instead of hanging
        try:
            while not state.release.is_set() and time.monotonic() < give_up:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass
        state.endless_sent = sent
        self.close_connection = True


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.state = State()
        super().__init__((host, 0), Handler)

    def verify_request(self, request: object, client_address: object) -> bool:
        self.state.connections += 1
        return True

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    # Listen where "localhost" resolves first, which is where the transport will dial.
    first = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][4][0]
    srv = LoopbackServer(first)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.state.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def private_poster() -> AsyncIterator[HttpPoster]:
    poster = webhook_poster(UrlGuard(allow_private=True), timeout=5.0)
    yield poster
    await poster.aclose()


# -- GuardedTransport -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [
    "https://localhost:{port}/x", "http://localhost:{port}/x", "https://127.0.0.1:{port}/x",
    "https://2130706433:{port}/x", "https://[::1]:{port}/x",
])
async def test_the_transport_refuses_loopback_and_nothing_reaches_the_server(
        server: LoopbackServer, form: str) -> None:
    async with httpx.AsyncClient(transport=GuardedTransport(UrlGuard(allow_private=False))) as client:
        with pytest.raises(UnsafeUrlError):
            await client.post(form.format(port=server.port), content=b"{}")
    assert server.state.connections == 0
    assert server.state.requests == []


async def test_the_transport_dials_an_allowed_private_host_and_keeps_its_host_header(
        server: LoopbackServer) -> None:
    async with httpx.AsyncClient(transport=GuardedTransport(UrlGuard(allow_private=True))) as client:
        response = await client.post(server.url("/x"), content=b'{"a":1}')
    assert response.status_code == 200
    assert response.content == b"ok"
    assert server.state.requests == [Seen("POST", "/x", f"localhost:{server.port}", b'{"a":1}')]


async def test_the_transport_checks_every_request_not_only_the_first(server: LoopbackServer) -> None:
    guard = UrlGuard(allow_private=True)
    async with httpx.AsyncClient(transport=GuardedTransport(guard)) as client:
        assert (await client.post(server.url("/x"), content=b"1")).status_code == 200
        guard.allow_private = False  # as if the name now resolved somewhere it may not go
        with pytest.raises(UnsafeUrlError):
            await client.post(server.url("/x"), content=b"2")
    assert [r.body for r in server.state.requests] == [b"1"]


async def test_the_transport_tries_the_next_vetted_address_when_one_cannot_connect(
        server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with two addresses, the first refusing connections (nothing listens on
    127.0.0.2 at the server's port): the request goes to the second, still by name."""
    if ":" in server.server_address[0]:
        pytest.fail("this machine resolves localhost to IPv6 first; the test needs IPv4 loopback")

    async def two_addresses(host: str, port: int) -> list[ipaddress.IPv4Address]:
        return [ipaddress.IPv4Address("127.0.0.2"), ipaddress.IPv4Address(server.server_address[0])]

    monkeypatch.setattr("registry.adapters.webhooks.resolve", two_addresses)
    async with httpx.AsyncClient(transport=GuardedTransport(UrlGuard(allow_private=True))) as client:
        response = await client.post(server.url("/x", host="hooks.internal"), content=b"1")
    assert response.status_code == 200
    assert server.state.requests == [Seen("POST", "/x", f"hooks.internal:{server.port}", b"1")]


# -- HttpPoster -------------------------------------------------------------------------------------


async def test_a_refused_url_is_an_outcome_without_a_status(server: LoopbackServer) -> None:
    poster = webhook_poster(UrlGuard(allow_private=False), timeout=5.0)
    try:
        for url in (server.url("/x"), server.url("/x").replace("http://", "https://")):
            outcome = await poster.post(url, {"content-type": "application/json"}, b"{}")
            assert outcome.status is None
            assert outcome.error is not None and outcome.error.startswith("refused:")
            assert not outcome.ok
    finally:
        await poster.aclose()
    assert server.state.connections == 0


async def test_a_delivered_post_is_ok(server: LoopbackServer, private_poster: HttpPoster) -> None:
    outcome = await private_poster.post(server.url("/hook"), {"webhook-id": "e1"}, b'{"x":1}')
    assert (outcome.status, outcome.error, outcome.retry_after, outcome.ok) == (200, None, None, True)
    assert outcome.latency_ms > 0
    assert [(r.path, r.body) for r in server.state.requests] == [("/hook", b'{"x":1}')]


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed(server: LoopbackServer, private_poster: HttpPoster, code: int) -> None:
    target = server.url("/target")
    outcome = await private_poster.post(server.url(f"/redirect?code={code}&to={target}"), {}, b"{}")
    assert outcome.status == code
    assert not outcome.ok
    assert outcome.error == f"HTTP {code} (redirects are not followed)"
    # A followed redirect would have been sent before post returned.
    assert [r.path for r in server.state.requests] == ["/redirect"]


async def test_an_endless_response_body_is_cut_short(server: LoopbackServer) -> None:
    poster = webhook_poster(UrlGuard(allow_private=True), timeout=3.0)
    try:
        outcome = await poster.post(server.url("/endless"), {}, b"{}")
    finally:
        await poster.aclose()
    # A reader that did not stop would have hit the 3 s timeout instead.
    assert (outcome.status, outcome.error) == (200, None)
    await wait_for(lambda: server.state.endless_sent is not None)
    assert server.state.endless_sent is not None and server.state.endless_sent < 64 * 2**20


class CountingStream(httpx.AsyncByteStream):
    """A long body (64 KiB, at least 16 chunks) that counts what was pulled from it."""

    def __init__(self, chunk: int) -> None:
        self.chunk, self.pulled = chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < max(65536, 16 * self.chunk):
            self.pulled += self.chunk
            await asyncio.sleep(0)  # lets the poster's timeout fire, should reading not stop
            yield b"x" * self.chunk


@pytest.mark.parametrize("chunk", [1, 1000, 4096, 65536])
async def test_at_most_4_kib_of_a_body_is_read(chunk: int) -> None:
    stream = CountingStream(chunk)
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, stream=stream)))
    poster = HttpPoster(client, timeout=5.0)
    try:
        outcome = await poster.post("https://hooks.example.com/x", {}, b"{}")
    finally:
        await poster.aclose()
    assert outcome.ok
    assert BODY_CAP == 4096
    # Pulling stops with the chunk that reaches 4 KiB.
    assert stream.pulled == -(-4096 // chunk) * chunk


@pytest.mark.parametrize("path", ["/slow", "/stalled-body"])
async def test_a_slow_receiver_times_out(server: LoopbackServer, path: str) -> None:
    poster = webhook_poster(UrlGuard(allow_private=True), timeout=0.5)
    started = time.monotonic()
    try:
        outcome = await poster.post(server.url(path), {}, b"{}")
    finally:
        await poster.aclose()
    elapsed = time.monotonic() - started
    assert outcome.status is None
    assert outcome.error == "timed out after 0.5 s"
    assert 0.4 <= elapsed < 3.0
    assert 400 <= outcome.latency_ms < 3000


async def test_a_url_the_guard_lets_through_is_posted_without_raising(server: LoopbackServer,
                                                                      private_poster: HttpPoster) -> None:
    # inet_aton reads 0177.0.0.1 as 127.0.0.1, so the guard allows it when private targets are;
    # httpx refuses to parse it. Found by this test: post raised httpx.InvalidURL (no HTTPError).
    outcome = await private_poster.post(f"http://0177.0.0.1:{server.port}/x", {}, b"{}")
    assert outcome.status is None
    assert outcome.error is not None


# -- Retry-After ------------------------------------------------------------------------------------


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize("code", [429, 502, 503, 504])
async def test_retry_after_seconds_is_read_for_throttling_statuses(
        server: LoopbackServer, private_poster: HttpPoster, code: int) -> None:
    outcome = await private_poster.post(server.url(f"/status?code={code}&retry_after=7"), {}, b"{}")
    assert (outcome.status, outcome.retry_after, outcome.error) == (code, 7.0, f"HTTP {code}")


@pytest.mark.parametrize("code", [429, 503])
async def test_retry_after_as_an_http_date_is_read(server: LoopbackServer, private_poster: HttpPoster,
                                                   code: int) -> None:
    when = http_date(120)
    outcome = await private_poster.post(server.url(f"/status?code={code}&retry_after={when}"), {}, b"{}")
    assert outcome.status == code
    assert outcome.retry_after is not None and 115 <= outcome.retry_after <= 121


@pytest.mark.parametrize(("code", "header"), [(500, "30"), (410, "30"), (200, "30"), (429, None), (503, "soon")])
async def test_retry_after_is_ignored_elsewhere_or_when_unreadable(
        server: LoopbackServer, private_poster: HttpPoster, code: int, header: str | None) -> None:
    query = f"code={code}" + ("" if header is None else f"&retry_after={header}")
    outcome = await private_poster.post(server.url(f"/status?{query}"), {}, b"{}")
    assert outcome.status == code
    assert outcome.retry_after is None


async def test_a_garbled_retry_after_does_not_break_the_post(
        server: LoopbackServer, private_poster: HttpPoster) -> None:
    # "²" (byte 0xB2) counts as a digit for str.isdigit but float() refuses it. Found by this test:
    # retry_after raised ValueError out of post, which promises never to raise for HTTP failures.
    outcome = await private_poster.post(server.url("/status?code=429&retry_after=%C2%B2"), {}, b"{}")
    assert outcome.status == 429
    assert outcome.retry_after is None


NOW = 1_700_000_000.0


@pytest.mark.parametrize(("value", "wait"), [
    (None, None),
    ("120", 120.0),
    (" 5 ", 5.0),
    ("0", 0.0),
    ("86400", 86400.0),
    ("999999999", 86400.0),  # capped at a day
    ("-5", None),
    ("1.5", None),
    ("soon", None),
    ("", None),
    ("²", None),
    (format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True), 90.0),
    (format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True), 0.0),  # past: now
    (format_datetime(datetime.fromtimestamp(NOW + 10 * 86400, UTC), usegmt=True), 86400.0),
    ("Tue, 14 Nov 2023 22:14:20 GMT", 60.0),  # NOW is 22:13:20 UTC
    ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),  # RFC 850 form, which receivers must accept
])
def test_retry_after_values(value: str | None, wait: float | None) -> None:
    assert retry_after(value, NOW) == wait


def test_an_asctime_retry_after_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 9110 5.6.7: the asctime form carries no zone and means UTC; receivers must accept it.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert retry_after("Tue Nov 14 22:14:20 2023", NOW) == 60.0
    finally:
        monkeypatch.undo()
        time.tzset()
