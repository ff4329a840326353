"""Artifact files of a version: upload, list, download, presigned uploads and sealing.

Bytes never pass through a transaction, nor wait for a lock. Every write goes to a key of its
own (``<model id>/<version>/<write id>/<path>``) that no row names yet: it is staged (a temporary
file, or an S3 multipart upload not completed), published only after its digest matched, and
then a short unit of work takes the model's lock, checks the version is still unsealed and makes
the file's row name that key. Bytes a row stops naming are removed after that commit. So a
refused or broken upload leaves nothing behind, a listed file's bytes never change under it, and
a seal can never race a file into a version after the fact.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from registry.domain.artifacts import Artifact, Manifest, artifact_path, sha256_hex
from registry.domain.errors import (
    ConflictError,
    DigestMismatchError,
    NotFoundError,
    SealedError,
    TooLargeError,
    UploadsUnsettledError,
    ValidationError,
)
from registry.domain.events import ArtifactDeleted, ArtifactsSealed, ArtifactUploaded
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.permissions import Role
from registry.services.access import check_role, lock_model, require_model
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import ArtifactStore, UnitOfWork, UploadRecord, Written
from registry.services.versions import require_version

log = structlog.get_logger("registry.artifacts")
MAX_PRESIGNED_BYTES = 5 * 1024**3  # one S3 PUT
EXPIRED = "expired without an upload"


@dataclass(frozen=True, slots=True)
class UploadArtifact:
    model: str
    version: int
    path: str
    sha256: str | None = None  # what the client declared, hex
    length: int | None = None  # Content-Length, when the client sent one


@dataclass(frozen=True, slots=True)
class RequestUpload:
    model: str
    version: int
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ArtifactPage:
    items: list[Artifact]
    next_cursor: str | None
    sealed_at: datetime | None
    manifest_digest: str | None


@dataclass(frozen=True, slots=True)
class Download:
    artifact: Artifact
    key: str
    url: str | None  # a presigned URL to redirect to, or None: stream ``key``


@dataclass(frozen=True, slots=True)
class UploadTicket:
    id: int
    path: str
    url: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Sealed:
    version: ModelVersion
    manifest: Manifest
    dropped: list[str]  # paths of presigned uploads whose tickets expired unchecked


def file_key(model: RegisteredModel, version: int, path: str) -> str:
    """A new key for one write of a file, under the model's immutable id (a rename moves
    nothing); the path stays last, so the stored object keeps the file's name."""
    return f"{model.id}/{version}/{uuid.uuid4().hex}/{path}"


def temporary_key() -> str:
    """Where a presigned upload lands until sealing checked it."""
    return f".uploads/{uuid.uuid4().hex}"


async def _forget(store: ArtifactStore, keys: list[str]) -> None:
    """Remove bytes no row names any more, after the commit. A failure leaves an unlisted object
    behind (logged), and must not report the committed change as failed."""
    for key in keys:
        try:
            await store.delete(key)
        except Exception:
            log.warning("artifact_orphaned", key=key, exc_info=True)


async def _limited(body: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in body:
        total += len(chunk)
        if total > limit:
            raise TooLargeError(f"an artifact is at most {limit} bytes (REGISTRY_MAX_ARTIFACT_BYTES)")
        yield chunk


async def _writable(uow: UnitOfWork, name: str, number: int, *,
                    lock: bool) -> tuple[RegisteredModel, ModelVersion]:
    what = "changing artifacts"
    if lock:
        model = await lock_model(uow, name, Role.EDITOR, what)
    else:
        model = await require_model(uow, name)
        check_role(uow, Role.EDITOR, what)
    version = await require_version(uow.repo, model, number)
    if version.sealed_at is not None:
        raise SealedError(version.version, version.sealed_at)
    return model, version


async def upload_artifact(cmd: UploadArtifact, body: AsyncIterator[bytes], store: ArtifactStore,
                          check: UnitOfWork, uow: UnitOfWork, limit: int) -> tuple[Artifact, bool]:
    """Stream the body to the store, hashing it; keep it only if it matches the declared digest
    and the version is still unsealed. Returns the file and whether it is new."""
    path = artifact_path(cmd.path)
    if cmd.length is not None and cmd.length > limit:
        raise TooLargeError(f"an artifact is at most {limit} bytes (REGISTRY_MAX_ARTIFACT_BYTES)")
    async with check:  # refuse before receiving gigabytes
        model, _ = await _writable(check, cmd.model, cmd.version, lock=False)
    staged = await store.stage(file_key(model, cmd.version, path), _limited(body, limit), cmd.length)
    written = staged.written
    if cmd.sha256 is not None and written.sha256 != cmd.sha256:
        await store.discard(staged)
        raise DigestMismatchError("the body's sha256 is not the declared digest; nothing was kept",
                                  cmd.sha256, written.sha256)
    try:
        await store.publish(staged)  # at a key no row names yet: no lock needed
    except BaseException:
        await store.discard(staged)
        raise
    committed = False
    try:
        async with uow:
            locked, version = await _writable(uow, cmd.model, cmd.version, lock=True)
            if locked.id != model.id:
                raise ConflictError(f"model {cmd.model!r} was deleted and created again during "
                                    "the upload; nothing was kept")
            artifact, before = await _record(uow, locked, version, path, written, staged.key)
            if before is not None:  # the replaced write's own key, named by no row after this
                uow.after_commit(lambda: _forget(store, [before.key]))
            await uow.commit()
            committed = True
    except BaseException:
        if not committed:  # a failure after the commit must not take bytes a row names
            await _forget(store, [staged.key])
        raise
    log.info("artifact_uploaded", model=model.name, version=version.version, path=path,
             size=artifact.size, sha256=artifact.sha256)
    return artifact, before is None


async def _record(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion, path: str,
                  written: Written, key: str) -> tuple[Artifact, Artifact | None]:
    """Make the file's row name ``key`` (the caller holds the model's lock); returns the new
    file and the one it replaced."""
    assert version.id is not None
    before = await uow.repo.get_artifact(version.id, path)
    artifact = Artifact(path, written.size, written.sha256, uow.now(), uow.actor.name, key)
    await uow.repo.put_artifact(version.id, artifact)
    uow.record(model, ArtifactUploaded(model=model.name, version=version.version,
                                       before=before.entry() if before else None,
                                       after=artifact.entry()))
    return artifact, before


async def delete_artifact(model_name: str, number: int, raw_path: str, store: ArtifactStore,
                          uow: UnitOfWork) -> None:
    path = artifact_path(raw_path)
    async with uow:
        model, version = await _writable(uow, model_name, number, lock=True)
        assert version.id is not None
        artifact = await uow.repo.get_artifact(version.id, path)
        if artifact is None:
            raise NotFoundError(f"version {number} has no artifact {path!r}")
        await uow.repo.delete_artifact(version.id, path)
        uow.record(model, ArtifactDeleted(model=model.name, version=number, before=artifact.entry()))
        # After the commit: if this fails, an unlisted object remains, never a listed missing one.
        uow.after_commit(lambda: _forget(store, [artifact.key]))
        await uow.commit()


async def list_artifacts(model_name: str, number: int, cursor: str | None, limit: int | None,
                         uow: UnitOfWork) -> ArtifactPage:
    """The version's files by path (code point order), with its seal."""
    size = check_limit(limit)
    after = decode_cursor(cursor, str)
    if after is not None:
        try:
            artifact_path(after)  # a forged cursor must not reach the database as any string
        except ValidationError:
            raise ValidationError("cursor is not one this service issued") from None
    async with uow:
        model = await require_model(uow, model_name)
        version = await require_version(uow.repo, model, number)
        assert version.id is not None
        items, next_cursor = page(await uow.repo.list_artifacts(version.id, after, size + 1), size,
                                  lambda a: a.path)
    return ArtifactPage(items, next_cursor, version.sealed_at, version.manifest_digest)


async def artifact_download(model_name: str, number: int, raw_path: str, store: ArtifactStore,
                            uow: UnitOfWork) -> Download:
    path = artifact_path(raw_path)
    async with uow:
        model = await require_model(uow, model_name)
        version = await require_version(uow.repo, model, number)
        assert version.id is not None
        artifact = await uow.repo.get_artifact(version.id, path)
    if artifact is None:
        raise NotFoundError(f"version {number} has no artifact {path!r}")
    return Download(artifact, artifact.key, store.download_url(artifact.key, path.rsplit("/", 1)[-1]))


async def request_upload(cmd: RequestUpload, store: ArtifactStore, uow: UnitOfWork,
                         ttl: float, limit: int) -> UploadTicket:
    """A presigned PUT URL for one file, checked when the version is sealed."""
    path, sha256 = artifact_path(cmd.path), sha256_hex(cmd.sha256)
    if not 0 <= cmd.size <= min(limit, MAX_PRESIGNED_BYTES):
        raise ValidationError(f"a presigned upload is 0 to {min(limit, MAX_PRESIGNED_BYTES)} bytes; "
                              "PUT larger files through the service")
    key = temporary_key()
    url = store.upload_url(key, ttl)
    replaced: list[UploadRecord] = []
    async with uow:
        model, version = await _writable(uow, cmd.model, cmd.version, lock=True)
        if url is None:
            raise ConflictError("this registry stores artifacts on its local disk, which clients "
                                "cannot write to directly: PUT the file to the artifacts URL instead")
        assert version.id is not None
        now = uow.now()
        replaced = [u for u in await uow.repo.uploads(version.id) if u.path == path]
        record = await uow.repo.add_upload(version.id, path, cmd.size, sha256, key, uow.actor.name,
                                           now, now + timedelta(seconds=ttl))
        # Whatever was uploaded for the old ticket is never read once this commits.
        uow.after_commit(lambda: _forget(store, [old.key for old in replaced]))
        await uow.commit()
    return UploadTicket(record.id, path, url, record.expires_at)


async def _place_upload(store: ArtifactStore, model: RegisteredModel, number: int,
                        upload: UploadRecord, now: datetime) -> tuple[str | None, Written | None, str | None]:
    """Copy what was uploaded for the ticket to a key of its own (beyond the reach of the
    presigned URL, which still works), then hash that copy: what is checked is what is kept.
    Returns the key and digest, or the problem (the copy removed)."""
    key = file_key(model, number, upload.path)
    if not await store.copy(upload.key, key):
        return None, None, EXPIRED if upload.expires_at <= now else "not uploaded yet"
    written = await store.digest(key)
    problem = None
    if written is None:
        problem = "vanished while it was checked"
    elif written.size != upload.size:
        problem = f"{written.size} bytes uploaded, {upload.size} declared"
    elif written.sha256 != upload.sha256:
        problem = f"sha256 {written.sha256} uploaded, {upload.sha256} declared"
    if problem is not None:
        await store.delete(key)
        return None, None, problem
    return key, written, None


async def seal_version(model_name: str, number: int, store: ArtifactStore, check: UnitOfWork,
                       uow: UnitOfWork) -> Sealed:
    """Check every presigned upload against what was declared, keep the good ones, then seal
    the version. Any upload missing or wrong: nothing changes (409 lists them)."""
    async with check:
        model, version = await _writable(check, model_name, number, lock=False)
        assert version.id is not None
        uploads = await check.repo.uploads(version.id)
        now = check.now()
    placed: list[str] = []
    committed = False
    try:
        checked = []
        for upload in uploads:
            key, written, problem = await _place_upload(store, model, number, upload, now)
            checked.append((upload, key, written, problem))
            if key is not None:
                placed.append(key)
        async with uow:
            locked, version = await _writable(uow, model_name, number, lock=True)
            assert version.id is not None
            current = {u.id for u in await uow.repo.uploads(version.id)}
            problems = [{"path": u.path, "problem": p} for u, _, _, p in checked
                        if u.id in current and p not in (None, EXPIRED)]
            if locked.id != model.id or current - {u.id for u in uploads}:
                problems.append({"path": None, "problem": "uploads changed while sealing; retry"})
            if problems:
                raise UploadsUnsettledError("some presigned uploads are missing or do not match "
                                            "what was declared; nothing was sealed", problems)
            replaced = []
            for upload, key, written, _ in checked:
                if key is not None and written is not None:
                    replaced.append((await _record(uow, locked, version, upload.path, written, key))[1])
                    await uow.repo.delete_upload(upload.id)
            # Tickets that expired unused are left to seal(), which drops and reports them.
            manifest, dropped = await seal(uow, locked, version)
            version.revision += 1  # its representation (sealed_at) changed: a new ETag
            version.updated_at = version.sealed_at or uow.now()
            await uow.repo.save_version(version)
            # Once committed, no row names these: the uploads' temporary objects, replaced files.
            unnamed = [u.key for u in uploads] + [old.key for old in replaced if old is not None]
            uow.after_commit(lambda: _forget(store, unnamed))
            await uow.commit()
            committed = True
    except BaseException:
        if not committed:
            await _forget(store, placed)
        raise
    return Sealed(version, manifest, dropped)


async def seal(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion, *,
               announce_empty: bool = True, drop_open: bool = False) -> tuple[Manifest, list[str]]:
    """Freeze the version's files as they are (the caller holds the model's lock and saves the
    version). Presigned uploads still open refuse it (unless ``drop_open``: archiving); tickets
    that expired unused are dropped and named (``dropped_uploads``). A seal is announced
    (``model_version.artifacts_sealed``) unless it holds and drops nothing and
    ``announce_empty`` is off: a transition's own audit entry records that empty manifest anyway.
    Returns the manifest and the dropped paths."""
    assert version.id is not None
    now = uow.now()
    dropped = []
    for upload in await uow.repo.uploads(version.id):
        if upload.expires_at > now and not drop_open:
            raise UploadsUnsettledError(
                "presigned uploads are still open: POST .../seal checks them first, or let them expire",
                [{"path": upload.path, "problem": "not checked yet"}])
        await uow.repo.delete_upload(upload.id)
        dropped.append(upload.path)
    manifest = Manifest.of(await uow.repo.list_artifacts(version.id, None, None))
    version.sealed_at, version.manifest_digest = now, manifest.digest
    if manifest.files or dropped or announce_empty:
        after: dict[str, Any] = {"sealed_at": now.isoformat().replace("+00:00", "Z"), **manifest.to_dict()}
        if dropped:
            after["dropped_uploads"] = dropped
        uow.record(model, ArtifactsSealed(model=model.name, version=version.version, after=after))
    return manifest, dropped
