"""Repository queries of the web pages: sign-in sessions, and each model's latest audit entry
(mixed into SqlRepository; they run in the caller's unit of work)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.tables import SessionRow, audit_t, chains_t, principals_t, tokens_t
from registry.services.ports import SessionRecord, TokenRecord

sessions_t = SessionRow.__table__

_SESSION = (select(sessions_t.c.id, sessions_t.c.csrf_token, sessions_t.c.expires_at,
                   tokens_t.c.id.label("token_id"), tokens_t.c.name, principals_t.c.name.label("principal"),
                   tokens_t.c.role, tokens_t.c.expires_at.label("token_expires_at"), tokens_t.c.revoked_at,
                   tokens_t.c.models, tokens_t.c.created_at, tokens_t.c.last_used_at)
            .join(tokens_t, tokens_t.c.id == sessions_t.c.token_id)
            .join(principals_t, principals_t.c.id == tokens_t.c.principal_id))


class SessionQueries:
    conn: AsyncConnection

    async def add_session(self, secret_hash: str, token_id: int, csrf: str, now: datetime,
                          expires_at: datetime) -> None:
        await self.conn.execute(insert(sessions_t).values(
            secret_hash=secret_hash, token_id=token_id, csrf_token=csrf, created_at=now,
            expires_at=expires_at))

    async def session_by_hash(self, secret_hash: str) -> SessionRecord | None:
        row = (await self.conn.execute(_SESSION.where(sessions_t.c.secret_hash == secret_hash))).first()
        if row is None:
            return None
        token = TokenRecord(row.token_id, row.name, row.principal, row.role, row.token_expires_at,
                            row.revoked_at, row.models, row.created_at, row.last_used_at)
        return SessionRecord(row.id, token, row.csrf_token, row.expires_at)

    async def delete_session(self, secret_hash: str) -> None:
        await self.conn.execute(delete(sessions_t).where(sessions_t.c.secret_hash == secret_hash))

    async def delete_expired_sessions(self, now: datetime) -> None:
        await self.conn.execute(delete(sessions_t).where(sessions_t.c.expires_at <= now))

    async def last_changes(self, chains: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each chain's latest audit entry (action, actor, at, version), by chain."""
        if not chains:
            return {}
        stmt = (select(audit_t.c.chain, audit_t.c.action, audit_t.c.actor, audit_t.c.at, audit_t.c.version)
                .join(chains_t, and_(chains_t.c.id == audit_t.c.chain, chains_t.c.audit_seq == audit_t.c.seq))
                .where(chains_t.c.id.in_(list(chains))))
        return {r.chain: {"action": r.action, "actor": r.actor, "at": r.at, "version": r.version}
                for r in await self.conn.execute(stmt)}
