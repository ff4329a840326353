"""Artifact files of a version: upload, list, download, presigned uploads and sealing.

Bytes never pass through a transaction: an upload is staged first (a temporary file, or an S3
multipart upload not yet completed), and only after its digest matched does a short unit of work
take the model's lock, check the version is still unsealed, publish the bytes in place and record
them. So a refused or broken upload leaves
nothing behind, and a seal can never race a file into a version after the fact.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

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


def file_key(model: RegisteredModel, version: int, path: str) -> str:
    """Where a version's file lives, by the model's immutable id: a rename never moves bytes."""
    return f"{model.id}/{version}/{path}"


def temporary_key() -> str:
    """Where a presigned upload lands until sealing checked it."""
    return f".uploads/{uuid.uuid4().hex}"


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
    """Stream the body to the store, hashing it; publish it only if it matches the declared
    digest and the version is still unsealed. Returns the file and whether it is new."""
    path = artifact_path(cmd.path)
    if cmd.length is not None and cmd.length > limit:
        raise TooLargeError(f"an artifact is at most {limit} bytes (REGISTRY_MAX_ARTIFACT_BYTES)")
    async with check:  # refuse before receiving gigabytes
        model, _ = await _writable(check, cmd.model, cmd.version, lock=False)
    staged = await store.stage(file_key(model, cmd.version, path), _limited(body, limit), cmd.length)
    published = False
    try:
        written = staged.written
        if cmd.sha256 is not None and written.sha256 != cmd.sha256:
            raise DigestMismatchError("the body's sha256 is not the declared digest; nothing was kept",
                                      cmd.sha256, written.sha256)
        async with uow:
            model, version = await _writable(uow, cmd.model, cmd.version, lock=True)
            if file_key(model, version.version, path) != staged.key:
                raise ConflictError(f"model {cmd.model!r} was deleted and created again during "
                                    "the upload; nothing was kept")
            # Under the model's lock: a seal cannot slip between the check and the publish.
            await store.publish(staged)
            published = True
            artifact, before = await _record(uow, model, version, path, written)
            await uow.commit()
    finally:
        if not published:
            await store.discard(staged)
    log.info("artifact_uploaded", model=model.name, version=version.version, path=path,
             size=artifact.size, sha256=artifact.sha256)
    return artifact, before is None


async def _record(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion, path: str,
                  written: Written) -> tuple[Artifact, Artifact | None]:
    """Record a file now in place (the caller holds the model's lock)."""
    assert version.id is not None
    before = await uow.repo.get_artifact(version.id, path)
    artifact = Artifact(path, written.size, written.sha256, uow.now(), uow.actor.name)
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
        await uow.commit()
    # After the commit: if this fails, an unlisted object remains, never a listed missing one.
    await store.delete(file_key(model, number, path))


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
    key = file_key(model, number, path)
    return Download(artifact, key, store.download_url(key, path.rsplit("/", 1)[-1]))


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
        await uow.commit()
    for old in replaced:  # whatever was uploaded for the old ticket is never read now
        await store.delete(old.key)
    return UploadTicket(record.id, path, url, record.expires_at)


async def _check_upload(store: ArtifactStore, upload: UploadRecord,
                        now: datetime) -> tuple[Written | None, str | None]:
    """What was uploaded for the ticket, and the problem with it (None: it matches)."""
    written = await store.digest(upload.key)
    if written is None:
        return None, "expired without an upload" if upload.expires_at <= now else "not uploaded yet"
    if written.size != upload.size:
        return written, f"{written.size} bytes uploaded, {upload.size} declared"
    if written.sha256 != upload.sha256:
        return written, f"sha256 {written.sha256} uploaded, {upload.sha256} declared"
    return written, None


async def seal_version(model_name: str, number: int, store: ArtifactStore, check: UnitOfWork,
                       uow: UnitOfWork) -> Sealed:
    """Check every presigned upload against what was declared, move the good ones into place,
    then seal the version. Any upload missing or wrong: nothing changes (409 lists them)."""
    async with check:
        _, version = await _writable(check, model_name, number, lock=False)
        assert version.id is not None
        uploads = await check.repo.uploads(version.id)
        now = check.now()
    checked = [(u, *await _check_upload(store, u, now)) for u in uploads]
    async with uow:
        model, version = await _writable(uow, model_name, number, lock=True)
        assert version.id is not None
        current = {u.id for u in await uow.repo.uploads(version.id)}
        problems = [{"path": u.path, "problem": p} for u, _, p in checked
                    if u.id in current and p is not None and p != "expired without an upload"]
        if problems or current - {u.id for u in uploads}:
            problems = problems or [{"path": None, "problem": "uploads changed while sealing; retry"}]
            raise UploadsUnsettledError("some presigned uploads are missing or do not match what "
                                        "was declared; nothing was sealed", problems)
        for upload, written, problem in checked:
            if problem is None and written is not None:
                await store.move(upload.key, file_key(model, version.version, upload.path),
                                 written.size)
                await _record(uow, model, version, upload.path, written)
            await uow.repo.delete_upload(upload.id)
        manifest = await seal(uow, model, version)
        version.revision += 1  # its representation (sealed_at) changed: a new ETag
        version.updated_at = version.sealed_at or uow.now()
        await uow.repo.save_version(version)
        await uow.commit()
    return Sealed(version, manifest)


async def seal(uow: UnitOfWork, model: RegisteredModel, version: ModelVersion, *,
               announce_empty: bool = True) -> Manifest:
    """Freeze the version's files as they are (the caller holds the model's lock and saves the
    version): presigned uploads still open refuse it; expired ones are dropped. A seal is
    announced (``model_version.artifacts_sealed``) unless it holds no file and ``announce_empty``
    is off: a transition's own audit entry records that empty manifest anyway."""
    assert version.id is not None
    now = uow.now()
    for upload in await uow.repo.uploads(version.id):
        if upload.expires_at > now:
            raise UploadsUnsettledError(
                "presigned uploads are still open: POST .../seal checks them first, or let them expire",
                [{"path": upload.path, "problem": "not checked yet"}])
        await uow.repo.delete_upload(upload.id)
    manifest = Manifest.of(await uow.repo.list_artifacts(version.id, None, None))
    version.sealed_at, version.manifest_digest = now, manifest.digest
    if manifest.files or announce_empty:
        sealed_at = now.isoformat().replace("+00:00", "Z")
        uow.record(model, ArtifactsSealed(model=model.name, version=version.version,
                                          after={"sealed_at": sealed_at, **manifest.to_dict()}))
    return manifest
