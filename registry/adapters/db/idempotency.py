"""Idempotent POSTs in the database: the key is claimed in the effect's own transaction.

The first write unit of work of a request that carries an ``Idempotency-Key`` joins the
:class:`IdempotentCall` (an ``IdempotentUnitOfWork``). In its transaction it takes a
transaction-scoped advisory lock on the key (PostgreSQL; a second attempt while the first runs
gets 409 at once instead of waiting on a row lock) and looks for a stored answer; then it opens a
savepoint for the effect. Its commit stops short of COMMIT: the API layer renders the answer,
and the held unit's ``finish`` stores it beside the effect and commits both. A refusal rolls back
to the savepoint and stores only the refusal. On SQLite the writers' queue already serialises
such calls, so a retry waits and replays.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.tables import idempotency_t
from registry.domain.errors import IdempotencyConflictError, IdempotencyInProgressError
from registry.services.idempotency import HeldAnswer, Replay, StoredResponse


class Cipher(Protocol):
    def encrypt(self, plaintext: str) -> str: ...
    def decrypt(self, ciphertext: str) -> str: ...


LOCK_SPACE = 0x49444D50  # "IDMP": the first key of the two-key advisory lock space
STORED_HEADERS = ("content-type", "etag", "location")


class IdempotentCall:
    """One POST with an Idempotency-Key (the API layer's ``IdempotentRequest``). ``joined``:
    a writer of the request has taken it; ``held``: that writer's transaction, kept open until
    the answer is stored beside the effect."""

    def __init__(self, key_hash: str, fingerprint: str, ttl: timedelta, cipher: Cipher) -> None:
        self.key_hash = key_hash
        self.fingerprint = fingerprint
        self.ttl = ttl
        # Answers can carry secrets shown once (a new token, a webhook secret): encrypted at rest.
        self.cipher = cipher
        self.joined = False
        self.held: HeldAnswer | None = None

    async def claim(self, conn: AsyncConnection, now: datetime) -> None:
        """Lock the key for this transaction, then replay a stored answer if there is one."""
        if conn.dialect.name == "postgresql":
            lock = int(self.key_hash[:8], 16) - 2**31  # a signed 32-bit second key
            got = await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:space, :key)"),
                                    {"space": LOCK_SPACE, "key": lock})
            if not got:
                raise IdempotencyInProgressError(
                    "a request with this Idempotency-Key is still being processed; retry later")
        row = (await conn.execute(select(idempotency_t).where(
            idempotency_t.c.key_hash == self.key_hash))).first()
        if row is None:
            return
        if row.created_at <= now - self.ttl:
            await conn.execute(delete(idempotency_t).where(idempotency_t.c.key_hash == self.key_hash))
            return
        if row.fingerprint != self.fingerprint:
            raise IdempotencyConflictError(
                "this Idempotency-Key was used with a different request (body or If-Match)")
        try:
            body = self.cipher.decrypt(row.body)
        except (RuntimeError, ValueError):  # its key was rotated away: as if it had expired
            await conn.execute(delete(idempotency_t).where(idempotency_t.c.key_hash == self.key_hash))
            return
        raise Replay(StoredResponse(row.status, dict(row.headers), body.encode()))

    async def store(self, conn: AsyncConnection, response: StoredResponse, now: datetime) -> None:
        headers = {k: v for k, v in response.headers.items() if k in STORED_HEADERS}
        await conn.execute(insert(idempotency_t).values(
            key_hash=self.key_hash, fingerprint=self.fingerprint, status=response.status,
            headers=headers, body=self.cipher.encrypt(response.body.decode()), created_at=now))


async def prune_keys(conn: AsyncConnection, older_than: datetime) -> int:
    """Delete stored answers past their time to live; returns how many."""
    result = await conn.execute(delete(idempotency_t).where(idempotency_t.c.created_at < older_than))
    return result.rowcount or 0
