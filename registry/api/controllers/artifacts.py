"""A version's artifact files, presigned uploads, sealing, and resolving model URIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote, unquote_to_bytes

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import ResponseHeader
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.response import Redirect, Stream

from registry.api.artifact_schemas import (
    ArtifactList,
    ArtifactResponse,
    ManifestFile,
    RequestUploadRequest,
    ResolvedResponse,
    SealResponse,
    UploadTicketResponse,
)
from registry.api.deps import ModelPath, VersionPath, reader, writer
from registry.api.errors import problem_responses
from registry.domain.artifacts import client_digest, content_digest
from registry.domain.errors import ValidationError
from registry.services import artifacts, resolve
from registry.services.artifacts import RequestUpload, UploadArtifact
from registry.services.ports import ArtifactStore

ArtifactPathParam = Annotated[str, PathParameter(description="the file's path in the version")]
ContentDigest = Annotated[str | None, HeaderParameter(
    name="Content-Digest", max_length=200, description="sha-256=:<base64>: (RFC 9530), checked")]
AmzChecksum = Annotated[str | None, HeaderParameter(
    name="x-amz-checksum-sha256", max_length=100, description="<base64 sha256>, checked")]
DIGEST_HEADER = [ResponseHeader(name="Content-Digest", description="sha-256=:<base64>: of the file",
                                documentation_only=True)]


def _store(request: Request[Any, Any, Any]) -> ArtifactStore:
    return request.app.state.container.artifacts


def _relative(request: Request[Any, Any, Any], path: str) -> str:
    """The file's path as the client sent it, decoded once: Litestar's path parameter has '//'
    merged and a trailing '/' dropped, which would turn refusals ('//etc/passwd', 'a//b') into
    other names. Raw: /api/v1/models/<name>/versions/<n>/artifacts/<path>."""
    parts = (request.scope.get("raw_path") or b"").split(b"/", 8)
    if len(parts) == 9 and parts[3] == b"models" and parts[7] == b"artifacts":
        try:  # one decode; artifact_path refuses the escapes still left
            return unquote_to_bytes(parts[8]).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("an artifact path is UTF-8 (percent-encoded or not)") from None
    return path[1:] if path.startswith("/") else path  # the route's own separator


async def _body(request: Request[Any, Any, Any]) -> Any:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _opened(blocks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The blocks, with the first already read: a file that cannot be opened fails the request
    with a problem response, not a connection cut after the headers went out."""
    try:
        first = await anext(blocks)
    except StopAsyncIteration:
        first = b""

    async def rest() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for block in blocks:
            yield block

    return rest()


class ArtifactController(Controller):
    path = "/models/{name:str}/versions/{version:int}"
    tags = ["artifacts"]

    @put("/artifacts/{path:path}", operation_id="uploadArtifact", request_max_body_size=None,
         status_code=201, response_headers=DIGEST_HEADER,
         responses={200: ResponseSpec(ArtifactResponse, description="the file was replaced"),
                    **problem_responses(400, 403, 404, 409, 413)})
    async def upload(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
                     path: ArtifactPathParam, digest: ContentDigest = None,
                     checksum: AmzChecksum = None) -> Response[ArtifactResponse]:
        """Stream the body into the file at `path` (editor), hashing it on the way. A declared
        digest that does not match is 400 and nothing is kept. 409 once the version is sealed."""
        settings = request.app.state.container.settings.artifact_store
        cmd = UploadArtifact(name, version, _relative(request, path), client_digest(digest, checksum),
                             request.content_length)
        artifact, created = await artifacts.upload_artifact(
            cmd, _body(request), _store(request), reader(request), writer(request),
            settings.max_bytes)
        return Response(ArtifactResponse.of(artifact), status_code=201 if created else 200,
                        headers={"Content-Digest": content_digest(artifact.sha256)})

    @get("/artifacts", operation_id="listArtifacts", responses=problem_responses(400, 404))
    async def list(
        self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
        limit: Annotated[int | None, QueryParameter(ge=1, le=1000)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=2048)] = None,
    ) -> ArtifactList:
        """The version's files ordered by path (code points), with sizes, sha256 and its seal."""
        page = await artifacts.list_artifacts(name, version, cursor, limit, reader(request))
        return ArtifactList([ArtifactResponse.of(a) for a in page.items], page.next_cursor,
                            page.sealed_at, page.manifest_digest)

    @get("/artifacts/{path:path}", operation_id="downloadArtifact", media_type="application/octet-stream",
         response_headers=DIGEST_HEADER,
         responses={307: ResponseSpec(None, description="on S3: a short-lived presigned URL in "
                                                        "Location"),
                    **problem_responses(400, 404)})
    async def download(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
                       path: ArtifactPathParam) -> Response[Any]:
        """The file's bytes, or (on S3) a redirect to a presigned URL for them."""
        store = _store(request)
        found = await artifacts.artifact_download(name, version, _relative(request, path), store,
                                                  reader(request))
        headers = {"Content-Digest": content_digest(found.artifact.sha256),
                   "ETag": f'"{found.artifact.sha256}"'}
        if found.url is not None:
            # The route's octet-stream type is for the bytes; a Redirect takes only text types.
            return Redirect(found.url, status_code=307, headers=headers, media_type=MediaType.TEXT)
        headers["Content-Length"] = str(found.artifact.size)
        return Stream(await _opened(store.read(found.key)), media_type="application/octet-stream",
                      headers=headers)

    @delete("/artifacts/{path:path}", operation_id="deleteArtifact",
            responses=problem_responses(400, 403, 404, 409))
    async def remove(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
                     path: ArtifactPathParam) -> None:
        """Remove a file from a version not yet sealed (editor)."""
        await artifacts.delete_artifact(name, version, _relative(request, path), _store(request),
                                        writer(request))

    @post("/artifact-uploads", operation_id="requestArtifactUpload", status_code=201,
          responses=problem_responses(400, 403, 404, 409))
    async def request_upload(self, request: Request[Any, Any, Any], name: ModelPath,
                             version: VersionPath,
                             data: JSONBody[RequestUploadRequest]) -> UploadTicketResponse:
        """A presigned PUT URL for one large file, straight to S3 (editor); `POST .../seal`
        checks it against `size` and `sha256`. 409 on the local store."""
        settings = request.app.state.container.settings.artifact_store
        ticket = await artifacts.request_upload(
            RequestUpload(name, version, data.path, data.size, data.sha256), _store(request),
            writer(request), settings.upload_ttl, settings.max_bytes)
        return UploadTicketResponse(ticket.id, ticket.path, "PUT", ticket.url, ticket.expires_at)

    @post("/seal", operation_id="sealVersion", status_code=200,
          responses=problem_responses(400, 403, 404, 409))
    async def seal(self, request: Request[Any, Any, Any], name: ModelPath,
                   version: VersionPath) -> SealResponse:
        """Check every presigned upload, then freeze the version's files (editor). The first
        move out of `none` seals a version that was not sealed before."""
        sealed = await artifacts.seal_version(name, version, _store(request), reader(request),
                                              writer(request))
        v = sealed.version
        assert v.sealed_at is not None and v.manifest_digest is not None
        return SealResponse(v.model, v.version, v.sealed_at, v.manifest_digest,
                            [ManifestFile(f["path"], f["size"], f["sha256"]) for f in sealed.manifest.files],
                            sealed.dropped)


@get("/resolve", operation_id="resolveModelUri", tags=["artifacts"],
     responses=problem_responses(400, 404))
async def resolve_uri(
    request: Request[Any, Any, Any],
    uri: Annotated[str, QueryParameter(min_length=9, max_length=600,
                                       description="models:/<name>/<stage|version|latest> or "
                                                   "models:/<name>@<alias>")],
) -> ResolvedResponse:
    """The version a model URI names now, as MLflow resolves it (viewer)."""
    v = await resolve.resolve_uri(uri, reader(request))
    url = str(request.base_url).rstrip("/") + \
        f"/api/v1/models/{quote(v.model, safe='')}/versions/{v.version}/artifacts"
    return ResolvedResponse(v.model, v.version, v.stage.value, url, v.manifest_digest, v.sealed_at)
