"""Sending signed webhooks (Standard Webhooks) to addresses that are vetted twice.

A subscription's URL is checked when it is saved and again on every connection, on the address
actually dialled: the transport resolves the host itself, refuses private, loopback, link-local,
metadata and other non-global addresses (unless allowed), and connects to the vetted IP while the
request keeps its Host header and TLS keeps the host name for SNI and certificate checks. Redirects
are never followed and at most ``BODY_CAP`` bytes of a response are read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from registry import tracing
from registry.domain.errors import ValidationError
from registry.services.webhooks import SECRET_PREFIX

BODY_CAP = 4096
MAX_RETRY_AFTER = 86400.0
BLOCKED_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data",
                           "metadata.azure.internal"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Lookups run in their own threads: a receiver whose DNS never answers keeps a thread until the
# resolver gives up (past the attempt's timeout), and must not starve other receivers' lookups
# or the loop's default executor (file sink, to_thread). More threads than deliveries in flight.
_RESOLVER = ThreadPoolExecutor(max_workers=128, thread_name_prefix="webhook-dns")


class UnsafeUrlError(ValidationError):
    """The URL may not be a webhook target (scheme, form, or an address that is not allowed)."""


def sign(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,<base64 HMAC-SHA256>`` per secret, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    parts = []
    for secret in secrets_:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(digest).decode())
    return " ".join(parts)


METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215; Python < 3.11.10 calls it global
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv6 one that carries it (mapped, 6to4, NAT64, compatible)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_allowed(ip: IPAddress, allow_private: bool) -> bool:
    """Only global unicast addresses, unless private targets are allowed; never multicast,
    unspecified or a cloud metadata address."""
    ip = _embedded_ipv4(ip)
    if ip.is_multicast or ip.is_unspecified or ip in METADATA_ADDRESSES:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip in NAT64_LOCAL:
        return allow_private
    return allow_private or ip.is_global


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_url(url: str) -> Target:
    """The URL's form alone: http(s), a host, no credentials, no fragment."""
    if len(url) > 2048 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise UnsafeUrlError("the URL must be at most 2048 characters, without spaces or controls")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrlError(f"the URL cannot be parsed: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrlError("the URL must be https://")
    if not parts.hostname:
        raise UnsafeUrlError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("the URL may not carry credentials")
    if parts.fragment:
        raise UnsafeUrlError("the URL may not have a fragment")
    try:
        httpx.URL(url)  # refuse now what the sender could not parse
    except httpx.InvalidURL as exc:
        raise UnsafeUrlError(f"the URL cannot be parsed: {exc}") from None
    host = parts.hostname.rstrip(".").lower()
    if host in BLOCKED_NAMES:
        raise UnsafeUrlError(f"{host} is a cloud metadata address")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.run_in_executor(_RESOLVER, socket.getaddrinfo, host, port, 0,
                                           socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeUrlError(f"{host} does not resolve: {exc.strerror}") from None
    except UnicodeError:  # the IDNA codec refuses the name (empty or over-long label)
        raise UnsafeUrlError(f"{host} is not a valid host name") from None
    out: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def _vet(target: Target, addresses: list[IPAddress], allow_private: bool) -> list[IPAddress]:
    refused = [ip for ip in addresses if not address_allowed(ip, allow_private)]
    if refused:
        raise UnsafeUrlError(
            f"{target.host} resolves to {refused[0]}, which is not a public address "
            "(private, loopback, link-local and metadata addresses are refused)")
    if target.scheme == "http" and not all(not ip.is_global for ip in addresses):
        raise UnsafeUrlError("plain http is allowed only to private addresses; use https://")
    return addresses


class UrlGuard:
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def check(self, url: str) -> None:
        """Raise UnsafeUrlError unless the URL may be a subscription's target right now."""
        target = parse_url(url)
        if target.scheme == "http" and not self.allow_private:
            raise UnsafeUrlError("the URL must be https://")
        _vet(target, await resolve(target.host, target.port), self.allow_private)

    async def addresses(self, url: str) -> tuple[Target, list[IPAddress]]:
        target = parse_url(url)
        if target.scheme == "http" and not self.allow_private:
            raise UnsafeUrlError("the URL must be https://")
        return target, _vet(target, await resolve(target.host, target.port), self.allow_private)


class GuardedTransport(httpx.AsyncBaseTransport):
    """Resolves and vets the host on every request, then dials the vetted IP itself. Connections
    are pooled per host name, so one host's TLS session never carries another host's request."""

    def __init__(self, guard: UrlGuard, *, max_hosts: int = 256) -> None:
        self._guard = guard
        self._pools: OrderedDict[str, httpx.AsyncHTTPTransport] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._max_hosts = max_hosts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target, addresses = await self._guard.addresses(str(request.url))
        # The Host header was set from the original URL; TLS names the original host.
        request.extensions = {**request.extensions, "sni_hostname": target.host}
        original = request.url
        for i, ip in enumerate(addresses):  # every one vetted; the next when one cannot connect
            request.url = original.copy_with(host=str(ip))
            try:
                return await self._pool(target).handle_async_request(request)
            except httpx.ConnectError:
                if i == len(addresses) - 1:
                    raise
        raise AssertionError("resolve() returns at least one address")

    def _pool(self, target: Target) -> httpx.AsyncHTTPTransport:
        key = f"{target.scheme}://{target.host}:{target.port}"
        pool = self._pools.get(key)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(retries=0)
            self._pools[key] = pool
            while len(self._pools) > self._max_hosts:
                _, old = self._pools.popitem(last=False)
                task = asyncio.get_running_loop().create_task(old.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        else:
            self._pools.move_to_end(key)
        return pool

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: ``status`` None when no response arrived."""

    status: int | None
    latency_ms: float
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # the asctime form has no zone and means UTC (RFC 9110 5.6.7)
        parsed = parsed.replace(tzinfo=UTC)
    when = parsed.timestamp()
    return min(max(when - now, 0.0), MAX_RETRY_AFTER)


class HttpPoster:
    """POSTs a body and reports the outcome; never raises for network or HTTP failures. Inside a
    span (a delivery's), the request carries its W3C ``traceparent``."""

    def __init__(self, client: httpx.AsyncClient, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        outcome = await self._post(url, tracing.inject(headers), body)
        tracing.note({"http.response.status_code": outcome.status}, outcome.error)
        return outcome

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                request = self._client.build_request("POST", url, headers=headers, content=body)
                response = await self._client.send(request, stream=True, follow_redirects=False)
                try:
                    await _read_capped(response)
                finally:
                    await response.aclose()
        except (UnsafeUrlError, httpx.InvalidURL) as exc:  # InvalidURL: saved before the check
            return Outcome(None, _ms(started), f"refused: {exc}")
        except TimeoutError:
            return Outcome(None, _ms(started), f"timed out after {self._timeout:g} s")
        except httpx.HTTPError as exc:
            return Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:500])
        except OSError as exc:
            return Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:500])
        status = response.status_code
        error = None
        if not 200 <= status < 300:
            error = f"HTTP {status}"
            if 300 <= status < 400:
                error += " (redirects are not followed)"
        wait = None
        if status in (429, 502, 503, 504):
            wait = retry_after(response.headers.get("retry-after"), time.time())
        return Outcome(status, _ms(started), error, wait)

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_capped(response: httpx.Response) -> bytes:
    seen = bytearray()
    async for chunk in response.aiter_raw():
        seen += chunk[:BODY_CAP - len(seen)]
        if len(seen) >= BODY_CAP:
            break
    return bytes(seen)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def webhook_poster(guard: UrlGuard, timeout: float) -> HttpPoster:
    client = httpx.AsyncClient(transport=GuardedTransport(guard), follow_redirects=False,
                               timeout=httpx.Timeout(timeout), trust_env=False,
                               headers={"user-agent": _user_agent()})
    return HttpPoster(client, timeout)


def plain_poster(timeout: float, headers: dict[str, str] | None = None) -> HttpPoster:
    """For the operator's lineage endpoint: no address checks."""
    client = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(timeout),
                               headers={"user-agent": _user_agent(), **(headers or {})})
    return HttpPoster(client, timeout)


def _user_agent() -> str:
    import registry

    return f"model-registry/{registry.__version__} (webhooks)"


def webhook_headers(msg_id: str, secrets_: list[str], body: bytes, now: float | None = None) -> dict[str, Any]:
    timestamp = int(time.time() if now is None else now)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets_, msg_id, timestamp, body),
    }
