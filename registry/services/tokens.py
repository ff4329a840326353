"""API tokens: random, recognisable by their prefix, shown once and stored only as SHA-256 hashes.

Tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching): a lookup
is one indexed read. Checking a token writes nothing in the request; a short in-process cache
(``ttl``, one second) saves even the read, so revocation and expiry take effect within it.
``last_used_at`` is written at most once a minute per token per process, beside the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import structlog

from registry.domain.errors import ForbiddenError, NotFoundError, UnauthenticatedError, ValidationError
from registry.domain.events import SystemChange
from registry.domain.permissions import Role, validate_patterns
from registry.services.access import check_role
from registry.services.audit import SYSTEM_CHAIN, rfc3339
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import Actor, Page, TokenRecord, UnitOfWork, UnitOfWorkFactory

V = TypeVar("V")
TOKEN_PREFIX = "mrt_"
TOUCH_EVERY = 60.0
log = structlog.get_logger("registry.tokens")


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    token_name: str
    name: str
    role: Role
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CreateToken:
    name: str
    role: str
    principal: str | None = None
    models: list[str] | None = None
    expires_at: datetime | None = None


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _describe(record: TokenRecord) -> dict[str, object]:
    return {"id": record.id, "name": record.name, "principal": record.principal, "role": record.role,
            "models": record.models,
            "expires_at": None if record.expires_at is None else rfc3339(record.expires_at)}


def check_token_admin(uow: UnitOfWork, what: str) -> None:
    """Tokens are managed by admins of the whole registry: an admin limited to some models could
    otherwise mint itself an unlimited token."""
    check_role(uow, Role.ADMIN, what)
    if uow.actor.models is not None:
        raise ForbiddenError(f"{what} needs an admin token that is not limited to some models")


def _validated(cmd: CreateToken, secret: str | None) -> tuple[Role, list[str] | None]:
    role = Role.parse(cmd.role)
    models = validate_patterns(cmd.models)
    if not 1 <= len(cmd.name) <= 128:
        raise ValidationError("token name must be 1 to 128 characters")
    if cmd.expires_at is not None and cmd.expires_at.tzinfo is None:
        raise ValidationError("expires_at must carry a time zone")
    if secret is not None and len(secret) < 16:
        raise ValidationError("a given token must be at least 16 characters")
    return role, models


async def _add(uow: UnitOfWork, cmd: CreateToken, role: Role, models: list[str] | None,
               secret: str, generated: bool) -> TokenRecord:
    """Inside a unit of work that holds the system chain's lock."""
    # Only a generated secret's recognisable start is kept; nothing of a given one.
    shown = secret[:len(TOKEN_PREFIX) + 4] if generated else "given"
    token_id = await uow.repo.add_token(cmd.name, cmd.principal or cmd.name, role.label,
                                        hash_token(secret), shown, uow.now(), models, cmd.expires_at)
    record = await uow.repo.get_token(token_id)
    assert record is not None
    uow.record_system(SystemChange(action="token.created", after=_describe(record)))
    return record


async def create_token(cmd: CreateToken, uow: UnitOfWork, *, secret: str | None = None,
                       check_admin: bool = True) -> tuple[TokenRecord, str]:
    """Store a new token; returns it and its secret (the only time the secret is available)."""
    role, models = _validated(cmd, secret)
    if check_admin:
        check_token_admin(uow, "creating a token")
    generated = secret is None
    secret = secret or new_secret()
    async with uow:
        # Token writes serialise on the system chain's head, taken first (before any read and
        # before the entry's time), so concurrent writers neither fork nor race.
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        record = await _add(uow, cmd, role, models, secret, generated)
        await uow.commit()
    return record, secret


async def list_tokens(cursor: str | None, limit: int | None, uow: UnitOfWork) -> Page:
    check_token_admin(uow, "listing tokens")
    limit = check_limit(limit)
    after = decode_cursor(cursor, int) or 0
    async with uow:
        rows = await uow.repo.list_tokens(after, limit + 1)
    items, next_cursor = page(rows, limit, lambda t: t.id)
    return Page(items, next_cursor)


async def revoke_token(token_id: int, uow: UnitOfWork) -> None:
    """Revoke once: a second revocation changes nothing and records nothing."""
    check_token_admin(uow, "revoking a token")
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        record = await uow.repo.get_token(token_id)
        if record is None:
            raise NotFoundError(f"token {token_id} does not exist")
        if record.revoked_at is None:
            await uow.repo.revoke_token(token_id, uow.now())
            uow.record_system(SystemChange(action="token.revoked", before=_describe(record)))
            await uow.commit()


async def ensure_bootstrap_token(uow_factory: UnitOfWorkFactory, given: str | None) -> str | None:
    """On an empty database, create the first admin token (``given`` or a new one) and return it.
    Returns None when tokens exist already. Check and insert happen under the system chain's lock,
    so replicas starting together create one token between them."""
    cmd = CreateToken("admin", "admin")
    role, models = _validated(cmd, given)
    secret = given or new_secret()
    async with uow_factory(Actor("bootstrap", "bootstrap")) as uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        if await uow.repo.any_token():
            return None
        await _add(uow, cmd, role, models, secret, generated=given is None)
        await uow.commit()
    return secret


class ShortCache(Generic[V]):
    """What a database read answered for a key, kept ``ttl`` seconds: credentials are checked on
    every request, and a second's staleness is the price of not reading for each one. At
    ``max_entries`` the oldest tenth (by insertion) goes, not the keys in use."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_entries: int) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, tuple[float, V]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        value = await load()
        if len(self._entries) >= self._max:
            for stale in list(itertools.islice(self._entries, self._max // 10 or 1)):
                del self._entries[stale]
        self._entries[key] = (now + self._ttl, value)
        return value

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


class Authenticator:
    """Resolves a bearer token to a principal; revocation and expiry are seen within ``ttl``."""

    def __init__(self, uow_factory: UnitOfWorkFactory, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: ShortCache[tuple[Principal | None, datetime | None]] = ShortCache(ttl, clock, max_entries)
        self._touched: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise UnauthenticatedError("send 'Authorization: Bearer <token>'")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise UnauthenticatedError("send 'Authorization: Bearer <token>'")
        digest = hash_token(secret.strip())
        principal, expires_at = await self._cache.get(digest, lambda: self._lookup(digest))
        if principal is None or (expires_at is not None and expires_at <= self._wall_clock()):
            raise UnauthenticatedError("the token is unknown, revoked or expired")
        self._touch(principal.token_id, self._clock())
        return principal

    async def _lookup(self, digest: str) -> tuple[Principal | None, datetime | None]:
        async with self._uow_factory(Actor("auth", "auth"), write=False) as uow:
            record = await uow.repo.token_by_hash(digest)
        if record is None or record.revoked_at is not None:
            return None, None
        models = tuple(record.models) if record.models is not None else None
        return (Principal(record.id, record.name, record.principal, Role.parse(record.role), models),
                record.expires_at)

    def _touch(self, token_id: int, now: float) -> None:
        """Record use at most once a minute, in a small write of its own running beside the
        request (never inside its transaction)."""
        if now - self._touched.get(token_id, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        self._touched[token_id] = now
        task = asyncio.get_running_loop().create_task(self._write_last_used(token_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_last_used(self, token_id: int) -> None:
        try:
            async with self._uow_factory(Actor("auth", "auth")) as uow:
                await uow.repo.touch_token(token_id, uow.now())
                await uow.commit()
        except Exception as exc:  # bookkeeping only: never fail or log a request for it
            log.warning("last_used_not_written", token_id=token_id, error=str(exc))
