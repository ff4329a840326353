"""Repository queries for comments on versions and on transition requests (mixed into
SqlRepository; they run in the caller's unit of work). Deleted comments stay as rows
(``deleted_at``) and no read here returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.tables import comments_t, models_t
from registry.domain.model import RegisteredModel
from registry.services.ports import CommentRecord

_LIVE = comments_t.c.deleted_at.is_(None)
_COMMENTS = (select(comments_t.c.id, models_t.c.name.label("model_name"), comments_t.c.version,
                    comments_t.c.request_id, comments_t.c.author, comments_t.c.body,
                    comments_t.c.created_at, comments_t.c.updated_at, comments_t.c.deleted_at)
             .join(models_t, models_t.c.id == comments_t.c.model_id).where(_LIVE))


def _comment(row: Any) -> CommentRecord:
    return CommentRecord(id=row.id, model=row.model_name, version=row.version,
                         request_id=row.request_id, author=row.author, body=row.body,
                         created_at=row.created_at, updated_at=row.updated_at,
                         deleted_at=row.deleted_at)


class CommentQueries:
    conn: AsyncConnection

    async def add_comment(self, model: RegisteredModel, version: int, request_id: int | None,
                          author: str, body: str, now: datetime) -> CommentRecord:
        stmt = insert(comments_t).values(
            model_id=model.id, version=version, request_id=request_id, author=author, body=body,
            created_at=now).returning(comments_t.c.id)
        comment_id = int((await self.conn.execute(stmt)).scalar_one())
        return CommentRecord(comment_id, model.name, version, request_id, author, body, now)

    async def get_comment(self, comment_id: int) -> CommentRecord | None:
        row = (await self.conn.execute(_COMMENTS.where(comments_t.c.id == comment_id))).first()
        return _comment(row) if row else None

    async def update_comment(self, comment_id: int, body: str, now: datetime) -> None:
        await self.conn.execute(update(comments_t).where(comments_t.c.id == comment_id).values(
            body=body, updated_at=now))

    async def delete_comment(self, comment_id: int, now: datetime) -> None:
        await self.conn.execute(update(comments_t).where(comments_t.c.id == comment_id).values(
            deleted_at=now))

    async def version_comments(self, model: RegisteredModel, version: int, after: int | None,
                               limit: int) -> list[CommentRecord]:
        stmt = _COMMENTS.where(comments_t.c.model_id == model.id, comments_t.c.version == version)
        return await self._page(stmt, after, limit)

    async def request_comments(self, request_id: int, after: int | None,
                               limit: int) -> list[CommentRecord]:
        return await self._page(_COMMENTS.where(comments_t.c.request_id == request_id), after, limit)

    async def _page(self, stmt: Any, after: int | None, limit: int) -> list[CommentRecord]:
        if after is not None:
            stmt = stmt.where(comments_t.c.id > after)
        stmt = stmt.order_by(comments_t.c.id).limit(limit)
        return [_comment(row) for row in await self.conn.execute(stmt)]
