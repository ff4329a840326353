"""Sign-in sessions of the web pages: an API token exchanged for a random session secret.

The browser holds only the session secret (in an HttpOnly cookie); the database holds its SHA-256,
the token it was opened with, a CSRF secret and when it ends. Every request resolves the session to
the token's principal, so the pages act with exactly the token's role and models, and revoking the
token (or its expiry) ends its sessions within the cache's second. Signing out deletes the row.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from registry.domain.errors import UnauthenticatedError
from registry.domain.permissions import Role
from registry.services.ports import Actor, UnitOfWorkFactory
from registry.services.tokens import Authenticator, Principal, ShortCache

SESSION_PREFIX = "mrs_"


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: datetime


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def open_session(token: str, authenticator: Authenticator, uow_factory: UnitOfWorkFactory,
                       ttl: float) -> tuple[str, Session]:
    """Check the token as the API does and open a session for it: (its secret, the session).
    A session never outlives its token."""
    principal = await authenticator.authenticate(f"Bearer {token.strip()}")
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    async with uow_factory(Actor(principal.token_name, "sign-in")) as uow:
        now = uow.now()
        record = await uow.repo.get_token(principal.token_id)
        expires_at = now + timedelta(seconds=ttl)
        if record is not None and record.expires_at is not None:
            expires_at = min(expires_at, record.expires_at)
        await uow.repo.delete_expired_sessions(now)
        await uow.repo.add_session(_hash(secret), principal.token_id, csrf, now, expires_at)
        await uow.commit()
    return secret, Session(principal, csrf, expires_at)


async def close_session(secret: str, uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory(Actor("sign-out", "sign-out")) as uow:
        await uow.repo.delete_session(_hash(secret))
        await uow.commit()


class SessionAuthenticator:
    """Resolves a session secret to its session; like the token check, a second's cache saves
    the read, so a sign-out or a revocation is seen within ``ttl`` by every process."""

    def __init__(self, uow_factory: UnitOfWorkFactory, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._uow_factory = uow_factory
        self._wall_clock = wall_clock
        self._cache: ShortCache[Session | None] = ShortCache(ttl, clock, max_entries)

    def forget(self, secret: str) -> None:
        """This process stops honouring the session at once (signing out here)."""
        self._cache.forget(_hash(secret))

    async def authenticate(self, secret: str | None) -> Session:
        if not secret or not secret.startswith(SESSION_PREFIX):
            raise UnauthenticatedError("sign in")
        digest = _hash(secret)
        session = await self._cache.get(digest, lambda: self._lookup(digest))
        if session is None or session.expires_at <= self._wall_clock():
            raise UnauthenticatedError("the session ended: sign in again")
        return session

    async def _lookup(self, digest: str) -> Session | None:
        async with self._uow_factory(Actor("auth", "auth"), write=False) as uow:
            record = await uow.repo.session_by_hash(digest)
        if record is None:
            return None
        token = record.token
        if token.revoked_at is not None:
            return None
        expires_at = record.expires_at
        if token.expires_at is not None:
            expires_at = min(expires_at, token.expires_at)
        models = tuple(token.models) if token.models is not None else None
        principal = Principal(token.id, token.name, token.principal, Role.parse(token.role), models)
        return Session(principal, record.csrf, expires_at)
