"""API tokens: random, recognisable by their prefix, shown once and stored only as SHA-256 hashes.

Tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching): a lookup
is one indexed read. Checking a token writes nothing; a short in-process cache saves even the read.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from registry.domain.errors import UnauthenticatedError, ValidationError
from registry.domain.events import SystemChange
from registry.services.ports import Actor, UnitOfWork, UnitOfWorkFactory

TOKEN_PREFIX = "mrt_"
ROLES = ("viewer", "editor", "stager", "releaser", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    token_name: str
    name: str
    role: str


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_token(name: str, role: str, uow: UnitOfWork, *, secret: str | None = None,
                       principal: str | None = None) -> str:
    """Store a new token and return its secret (the only time it is ever available)."""
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}")
    if not 1 <= len(name) <= 128:
        raise ValidationError("token name must be 1 to 128 characters")
    if secret is not None and len(secret) < 16:
        raise ValidationError("a given token must be at least 16 characters")
    secret = secret or new_secret()
    async with uow:
        token_id = await uow.repo.add_token(name, principal or name, role, hash_token(secret),
                                            secret[:8], uow.now())
        uow.record_system(SystemChange(
            action="token.created",
            after={"id": token_id, "name": name, "principal": principal or name, "role": role},
        ))
        await uow.commit()
    return secret


async def ensure_bootstrap_token(uow_factory: UnitOfWorkFactory, given: str | None) -> str | None:
    """On an empty database, create the first admin token (``given`` or a new one) and return it.
    Returns None when tokens exist already."""
    async with uow_factory(Actor("bootstrap", "bootstrap"), write=False) as uow:
        if await uow.repo.any_token():
            return None
    return await create_token("admin", "admin", uow_factory(Actor("bootstrap", "bootstrap")),
                              secret=given)


class Authenticator:
    """Resolves a bearer token to a principal; revocation and expiry are seen within ``ttl``."""

    def __init__(self, uow_factory: UnitOfWorkFactory, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000) -> None:
        self._uow_factory = uow_factory
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None, datetime | None]] = {}

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
        return principal

    async def _lookup(self, digest: str) -> tuple[Principal | None, datetime | None]:
        async with self._uow_factory(Actor("auth", "auth"), write=False) as uow:
            record = await uow.repo.token_by_hash(digest)
        if record is None or record.revoked_at is not None:
            return None, None
        return Principal(record.id, record.name, record.principal, record.role), record.expires_at
