"""API tokens: random, recognisable by their prefix, shown once and stored only as SHA-256 hashes.

Tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching): a lookup
is one indexed read. Checking a token writes nothing in the request; a short in-process cache
(``ttl``, one second) saves even the read, so revocation and expiry take effect within it.
``last_used_at`` is written at most once a minute per token per process, beside the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from registry.domain.errors import NotFoundError, UnauthenticatedError, ValidationError
from registry.domain.events import SystemChange
from registry.domain.permissions import Role, validate_patterns
from registry.services.access import check_role
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import Actor, Page, TokenRecord, UnitOfWork, UnitOfWorkFactory

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
            "expires_at": None if record.expires_at is None else record.expires_at.isoformat()}


async def create_token(cmd: CreateToken, uow: UnitOfWork, *, secret: str | None = None,
                       check_admin: bool = True) -> tuple[TokenRecord, str]:
    """Store a new token; returns it and its secret (the only time the secret is available)."""
    role = Role.parse(cmd.role)
    models = validate_patterns(cmd.models)
    if not 1 <= len(cmd.name) <= 128:
        raise ValidationError("token name must be 1 to 128 characters")
    if cmd.expires_at is not None and cmd.expires_at.tzinfo is None:
        raise ValidationError("expires_at must carry a time zone")
    if secret is not None and len(secret) < 16:
        raise ValidationError("a given token must be at least 16 characters")
    if check_admin:
        check_role(uow, Role.ADMIN, "creating a token")
    secret = secret or new_secret()
    async with uow:
        token_id = await uow.repo.add_token(cmd.name, cmd.principal or cmd.name, role.label,
                                            hash_token(secret), secret[:8], uow.now(), models,
                                            cmd.expires_at)
        record = await uow.repo.get_token(token_id)
        assert record is not None
        uow.record_system(SystemChange(action="token.created", after=_describe(record)))
        await uow.commit()
    return record, secret


async def list_tokens(cursor: str | None, limit: int | None, uow: UnitOfWork) -> Page:
    check_role(uow, Role.ADMIN, "listing tokens")
    limit = check_limit(limit)
    after = decode_cursor(cursor, int) or 0
    async with uow:
        rows = await uow.repo.list_tokens(after, limit + 1)
    items, next_cursor = page(rows, limit, lambda t: t.id)
    return Page(items, next_cursor)


async def revoke_token(token_id: int, uow: UnitOfWork) -> None:
    check_role(uow, Role.ADMIN, "revoking a token")
    async with uow:
        record = await uow.repo.get_token(token_id)
        if record is None:
            raise NotFoundError(f"token {token_id} does not exist")
        if record.revoked_at is None:
            await uow.repo.revoke_token(token_id, uow.now())
            uow.record_system(SystemChange(action="token.revoked", before=_describe(record)))
            await uow.commit()


async def ensure_bootstrap_token(uow_factory: UnitOfWorkFactory, given: str | None) -> str | None:
    """On an empty database, create the first admin token (``given`` or a new one) and return it.
    Returns None when tokens exist already."""
    async with uow_factory(Actor("bootstrap", "bootstrap"), write=False) as uow:
        if await uow.repo.any_token():
            return None
    _, secret = await create_token(CreateToken("admin", "admin"),
                                   uow_factory(Actor("bootstrap", "bootstrap")), secret=given)
    return secret


class Authenticator:
    """Resolves a bearer token to a principal; revocation and expiry are seen within ``ttl``."""

    def __init__(self, uow_factory: UnitOfWorkFactory, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000) -> None:
        self._uow_factory = uow_factory
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None, datetime | None]] = {}
        self._touched: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise UnauthenticatedError("send 'Authorization: Bearer <token>'")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise UnauthenticatedError("send 'Authorization: Bearer <token>'")
        digest = hash_token(secret.strip())
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is None or cached[0] <= now:
            principal, expires_at = await self._lookup(digest)
            if len(self._cache) >= self._max:
                self._cache.clear()
            cached = (now + self._ttl, principal, expires_at)
            self._cache[digest] = cached
        _, principal, expires_at = cached
        if principal is None or (expires_at is not None and expires_at <= datetime.now(UTC)):
            raise UnauthenticatedError("the token is unknown, revoked or expired")
        self._touch(principal.token_id, now)
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
        """Record use at most once a minute, in a small write of its own after the response."""
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
