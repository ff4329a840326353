"""Model versions, their stage transitions, stage membership and aliases."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter

from registry.api.deps import AliasPath, ModelPath, VersionPath, given, parse_time, reader, rfc3339, writer
from registry.api.errors import problem_responses
from registry.api.schemas import (
    NO_NUL,
    AliasItem,
    AliasList,
    AliasResponse,
    DatasetBody,
    HistoryStages,
    LineageResponse,
    LineageRun,
    ModelHistoryResponse,
    ModelVersionList,
    ModelVersionResponse,
    RegisterVersionRequest,
    SetAliasRequest,
    StageChangeRecord,
    StageHistory,
    StageHolder,
    StageMembers,
    TransitionRequest,
    TransitionResponse,
    UpdateVersionRequest,
)
from registry.domain.model import normalize_name
from registry.services import aliases, history, lineage, transitions, versions
from registry.services.commands import (
    DeleteAlias,
    DeleteModelVersion,
    RegisterModelVersion,
    SetAlias,
    TransitionModelVersion,
    UpdateModelVersion,
)

IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", max_length=1024,
                                                description="an ETag of the version; 412 when stale")]
ETAG_HEADER = [ResponseHeader(name="ETag", description="strong entity tag of the version",
                              documentation_only=True)]


def with_etag(body: Any, etag: str, status: int = 200) -> Response[Any]:
    return Response(body, status_code=status, headers={"ETag": etag})


class VersionController(Controller):
    path = "/models/{name:str}"
    tags = ["versions"]

    @post("/versions", operation_id="registerModelVersion", response_headers=ETAG_HEADER,
          responses=problem_responses(400, 403, 404))
    async def register_version(self, request: Request[Any, Any, Any], name: ModelPath,
                       data: JSONBody[RegisterVersionRequest]) -> Response[ModelVersionResponse]:
        """Register the next version (numbers come from the model's counter) in stage `none`."""
        cmd = RegisterModelVersion(
            name, data.source, data.run_id, data.description, data.tags, data.metrics,
            [{"namespace": i.namespace, "name": i.name, "version": i.version} for i in data.inputs],
        )
        version = await versions.register_model_version(cmd, writer(request))
        return with_etag(ModelVersionResponse.of(version), version.etag, 201)

    @get("/versions", operation_id="listModelVersions", responses=problem_responses(400, 404))
    async def list(
        self, request: Request[Any, Any, Any], name: ModelPath,
        stage: Annotated[str | None, QueryParameter(pattern="^(none|staging|production|archived)$")] = None,
        run_id: Annotated[str | None, QueryParameter(max_length=256, pattern=NO_NUL)] = None,
        tag: Annotated[list[str] | None, QueryParameter(description="key:value, repeatable")] = None,
        limit: Annotated[int | None, QueryParameter(ge=1, le=1000)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=2048)] = None,
    ) -> ModelVersionList:
        """Versions ordered by number, filtered by stage, run and tags."""
        result = await versions.list_model_versions(name, stage, run_id, tag or [], cursor, limit,
                                                    reader(request))
        return ModelVersionList([ModelVersionResponse.of(v) for v in result.items], result.next_cursor)

    @get("/versions/{version:int}", operation_id="getModelVersion", response_headers=ETAG_HEADER,
         responses=problem_responses(400, 404))
    async def get_version(self, request: Request[Any, Any, Any], name: ModelPath,
                  version: VersionPath) -> Response[ModelVersionResponse]:
        """One version, with its ETag."""
        v = await versions.get_model_version(name, version, reader(request))
        return with_etag(ModelVersionResponse.of(v), v.etag)

    @patch("/versions/{version:int}", operation_id="updateModelVersion", response_headers=ETAG_HEADER,
           responses=problem_responses(400, 403, 404, 409, 412))
    async def update_version(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
                     data: JSONBody[UpdateVersionRequest], if_match: IfMatch = None) -> Response[ModelVersionResponse]:
        """JSON merge patch of description and tags; metrics only while the stage is `none`
        (409 `conflict` otherwise)."""
        cmd = UpdateModelVersion(name, version, given(data.description), given(data.tags),
                                 given(data.metrics), if_match)
        v = await versions.update_model_version(cmd, writer(request))
        return with_etag(ModelVersionResponse.of(v), v.etag)

    @delete("/versions/{version:int}", operation_id="deleteModelVersion",
            responses=problem_responses(400, 403, 404, 409))
    async def delete_version(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath) -> None:
        """Delete the version softly (admin): hidden from every read, list and search, its number
        never handed out again, its audit kept; aliases pointing at it are removed and its open
        transition requests cancelled. 409 `conflict` while it is in production."""
        await versions.delete_model_version(DeleteModelVersion(name, version), writer(request))

    @post("/versions/{version:int}/transitions", operation_id="transitionModelVersion",
          status_code=200, response_headers=ETAG_HEADER,
          responses=problem_responses(400, 403, 404, 409, 412, 422))
    async def transition_version(self, request: Request[Any, Any, Any], name: ModelPath, version: VersionPath,
                         data: JSONBody[TransitionRequest], if_match: IfMatch = None) -> Response[TransitionResponse]:
        """Move the version to `to_stage`. 409 `invalid_transition` (with `allowed`) when the
        stage table has no such edge; 422 `gate_failed` (with every gate's result); 412 when
        If-Match, `expected_stage` or `expected_production_version` is stale. Promoting to
        production archives the incumbent in the same transaction (listed in `archived`)."""
        cmd = TransitionModelVersion(name, version, data.to_stage, data.comment, data.expected_stage,
                                     given(data.expected_production_version), if_match)
        result = await transitions.transition_model_version(cmd, writer(request))
        return with_etag(TransitionResponse.of(result), result.version.etag)

    @get("/versions/{version:int}/transitions", operation_id="getStageHistory",
         responses=problem_responses(400, 404))
    async def stage_history(self, request: Request[Any, Any, Any], name: ModelPath,
                      version: VersionPath) -> StageHistory:
        """The version's stage changes, oldest first (from the audit log)."""
        rows = await transitions.stage_history(name, version, reader(request))
        return StageHistory([StageChangeRecord(**r) for r in rows])

    @get("/versions/{version:int}/lineage", operation_id="getVersionLineage",
         responses=problem_responses(400, 404))
    async def lineage(self, request: Request[Any, Any, Any], name: ModelPath,
                      version: VersionPath) -> LineageResponse:
        """Upstream datasets and training run (its id mapped to an OpenLineage run id), the stage
        history, and the OpenLineage RunEvents emitted for the version, oldest first (built by the
        relay, usually within a second of the change)."""
        found = await lineage.version_lineage(name, version, reader(request))
        run = found["run"]
        return LineageResponse(
            [DatasetBody(**i) for i in found["inputs"]],
            None if run is None else LineageRun(run["id"], run["run_uuid"]),
            [StageChangeRecord(**r) for r in found["stages"]], found["events"])

    @get("/stages/{stage:str}", operation_id="getVersionsInStage", responses=problem_responses(400, 404))
    async def versions_in_stage(self, request: Request[Any, Any, Any], name: ModelPath,
                    stage: Annotated[str, PathParameter(pattern="^(none|staging|production|archived)$")]
                    ) -> StageMembers:
        """Versions now in the stage (production: zero or one)."""
        members = await versions.versions_in_stage(name, stage, reader(request))
        return StageMembers([ModelVersionResponse.of(v) for v in members])

    @get("/history", operation_id="getModelHistory", responses=problem_responses(400, 404))
    async def history_at(self, request: Request[Any, Any, Any], name: ModelPath,
                         at: Annotated[str, rfc3339("RFC 3339 moment")]) -> ModelHistoryResponse:
        """Which version held production and staging, and where each alias pointed, at `at`:
        replayed from the model's audit chain."""
        moment = parse_time(at)
        assert moment is not None
        h = await history.model_history(name, moment, reader(request))
        return ModelHistoryResponse(
            h.at, HistoryStages(StageHolder(h.production) if h.production is not None else None,
                                [StageHolder(v) for v in h.staging]),
            h.aliases)

    @get("/aliases", operation_id="listAliases", responses=problem_responses(400, 404))
    async def list_aliases(
        self, request: Request[Any, Any, Any], name: ModelPath,
        limit: Annotated[int | None, QueryParameter(ge=1, le=1000, description="page size (default 50)")] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=2048, description="from next_cursor")] = None,
    ) -> AliasList:
        """The model's aliases, ordered by alias name (code point order, the same on every
        backend), a page at a time."""
        result = await aliases.list_aliases(name, cursor, limit, reader(request))
        return AliasList([AliasItem(alias, r.version, r.protected) for alias, r in result.items],
                         result.next_cursor)

    @put("/aliases/{alias:str}", operation_id="setAlias", responses=problem_responses(400, 403, 404))
    async def set_alias(self, request: Request[Any, Any, Any], name: ModelPath, alias: AliasPath,
                        data: JSONBody[SetAliasRequest]) -> AliasResponse:
        """Point the alias at a version (creating or moving it). Protected aliases are moved,
        deleted or (un)protected by admins only."""
        v, protected = await aliases.set_alias(SetAlias(name, alias, data.version, data.protected),
                                               writer(request))
        return AliasResponse(v.model, normalize_name(alias), v.version, protected, ModelVersionResponse.of(v))

    @get("/aliases/{alias:str}", operation_id="getAlias", responses=problem_responses(400, 404))
    async def get_alias(self, request: Request[Any, Any, Any], name: ModelPath,
                        alias: AliasPath) -> AliasResponse:
        """The version the alias points at."""
        v, protected = await aliases.get_alias(name, alias, reader(request))
        return AliasResponse(v.model, normalize_name(alias), v.version, protected, ModelVersionResponse.of(v))

    @delete("/aliases/{alias:str}", operation_id="deleteAlias", responses=problem_responses(400, 403, 404))
    async def delete_alias(self, request: Request[Any, Any, Any], name: ModelPath, alias: AliasPath) -> None:
        """Remove the alias."""
        await aliases.delete_alias(DeleteAlias(name, alias), writer(request))
