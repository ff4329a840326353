"""Bodies of the artifacts API: files, presigned uploads, seals, and URI resolution."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from registry.api.schemas import Request
from registry.domain.artifacts import MAX_PATH_BYTES, Artifact

ArtifactPathField = Annotated[str, Meta(min_length=1, max_length=MAX_PATH_BYTES,
                                        pattern=r"^[^\x00-\x1f\x7f-\x9f\\]+(?![\s\S])",
                                        description="a relative path: '/' between names, no '..'")]
Sha256 = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}(?![\s\S])", description="hex sha256")]
ManifestDigest = Annotated[str, Meta(description="sha256:<hex> of the manifest's canonical JSON")]


class ArtifactResponse(Struct):
    path: str
    size: int
    sha256: str
    uploaded_at: datetime
    uploaded_by: str

    @classmethod
    def of(cls, a: Artifact) -> ArtifactResponse:
        return cls(a.path, a.size, a.sha256, a.uploaded_at, a.uploaded_by)


class ArtifactList(Struct):
    items: list[ArtifactResponse]
    next_cursor: str | None
    sealed_at: datetime | None
    manifest_digest: ManifestDigest | None


class RequestUploadRequest(Request):
    path: ArtifactPathField
    size: Annotated[int, Meta(ge=0, le=5 * 1024**3, description="bytes (one PUT: at most 5 GiB)")]
    sha256: Sha256


class UploadTicketResponse(Struct):
    id: int
    path: str
    method: Literal["PUT"]
    url: str
    expires_at: datetime


class ManifestFile(Struct):
    path: str
    size: int
    sha256: str


class SealResponse(Struct):
    model: str
    version: int
    sealed_at: datetime
    manifest_digest: ManifestDigest
    files: list[ManifestFile]
    dropped_uploads: list[str]  # presigned uploads whose tickets expired unchecked: not sealed


class ResolvedResponse(Struct):
    model: str
    version: int
    stage: str
    artifacts_url: str  # the API URL listing the version's files
    manifest_digest: ManifestDigest | None  # None until the version is sealed
    sealed_at: datetime | None
