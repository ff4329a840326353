"""Repository queries for artifact files and presigned uploads (mixed into SqlRepository; they
run in the caller's unit of work, which holds the model's lock for every write)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.tables import artifacts_t, uploads_t
from registry.domain.artifacts import Artifact
from registry.services.ports import UploadRecord

_ARTIFACT_COLS = (artifacts_t.c.path, artifacts_t.c.size, artifacts_t.c.sha256,
                  artifacts_t.c.uploaded_at, artifacts_t.c.uploaded_by, artifacts_t.c.key)


def _artifact(row: Any) -> Artifact:
    return Artifact(row.path, row.size, row.sha256, row.uploaded_at, row.uploaded_by, row.key)


def _upload(row: Any) -> UploadRecord:
    return UploadRecord(row.id, row.path, row.size, row.sha256, row.key, row.created_by,
                        row.created_at, row.expires_at)


class ArtifactQueries:
    conn: AsyncConnection
    sqlite: bool

    async def list_artifacts(self, version_id: int, after: str | None,
                             limit: int | None) -> list[Artifact]:
        stmt = (select(*_ARTIFACT_COLS).where(artifacts_t.c.version_id == version_id)
                .order_by(artifacts_t.c.path))
        if after is not None:
            stmt = stmt.where(artifacts_t.c.path > after)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [_artifact(r) for r in await self.conn.execute(stmt)]

    async def get_artifact(self, version_id: int, path: str) -> Artifact | None:
        row = (await self.conn.execute(select(*_ARTIFACT_COLS).where(
            artifacts_t.c.version_id == version_id, artifacts_t.c.path == path))).first()
        return _artifact(row) if row else None

    async def put_artifact(self, version_id: int, artifact: Artifact) -> None:
        values = {"size": artifact.size, "sha256": artifact.sha256, "key": artifact.key,
                  "uploaded_at": artifact.uploaded_at, "uploaded_by": artifact.uploaded_by}
        # The model's lock serialises writers of a version, so update-then-insert cannot race.
        updated = await self.conn.execute(update(artifacts_t).where(
            artifacts_t.c.version_id == version_id, artifacts_t.c.path == artifact.path).values(**values))
        if updated.rowcount == 0:
            await self.conn.execute(insert(artifacts_t).values(
                version_id=version_id, path=artifact.path, **values))

    async def delete_artifact(self, version_id: int, path: str) -> None:
        await self.conn.execute(delete(artifacts_t).where(
            artifacts_t.c.version_id == version_id, artifacts_t.c.path == path))

    async def count_artifacts(self, version_id: int) -> int:
        return (await self.conn.execute(select(func.count()).select_from(artifacts_t).where(
            artifacts_t.c.version_id == version_id))).scalar_one()

    async def add_upload(self, version_id: int, path: str, size: int, sha256: str, key: str,
                         actor: str, now: datetime, expires_at: datetime) -> UploadRecord:
        await self.conn.execute(delete(uploads_t).where(
            uploads_t.c.version_id == version_id, uploads_t.c.path == path))
        upload_id = (await self.conn.execute(insert(uploads_t).values(
            version_id=version_id, path=path, size=size, sha256=sha256, key=key, created_at=now,
            created_by=actor, expires_at=expires_at).returning(uploads_t.c.id))).scalar_one()
        return UploadRecord(upload_id, path, size, sha256, key, actor, now, expires_at)

    async def uploads(self, version_id: int) -> list[UploadRecord]:
        stmt = select(uploads_t).where(uploads_t.c.version_id == version_id).order_by(uploads_t.c.path)
        return [_upload(r) for r in await self.conn.execute(stmt)]

    async def delete_upload(self, upload_id: int) -> None:
        await self.conn.execute(delete(uploads_t).where(uploads_t.c.id == upload_id))
