"""MLflow's model-registry operations, each parsed from MLflow's wire format and run through the
same services as the native API (permissions, stage machine, gates, audit, events)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post
from litestar.handlers import HTTPRouteHandler

from registry.api.deps import reader, writer
from registry.api.mlflow import filters, wire
from registry.api.mlflow.wire import Params
from registry.domain.errors import NotFoundError, ValidationError
from registry.domain.stages import Stage
from registry.services import aliases, models, search, transitions, versions
from registry.services.commands import (
    CreateModel,
    DeleteAlias,
    DeleteModel,
    DeleteModelVersion,
    RegisterModelVersion,
    RenameModel,
    SetAlias,
    TransitionModelVersion,
    UpdateModel,
    UpdateModelVersion,
)
from registry.services.search import Search

AnyRequest = Request[Any, Any, Any]
MAX_MODELS_PER_PAGE = 1000  # MLflow's limits for search_registered_models / search_model_versions
DEFAULT_MODELS_PER_PAGE = 100
MAX_VERSIONS_PER_PAGE = 200_000
DEFAULT_VERSIONS_PER_PAGE = 10_000


def ok(body: dict[str, Any] | None = None) -> Response[Any]:
    return Response(body or {}, media_type="application/json")


async def _model_json(request: AnyRequest, name: str) -> dict[str, Any]:
    """A registered model as MLflow shows it: latest version per stage and its aliases."""
    return wire.registered_model(*await search.model_summary(name, reader(request)))


def _searched(params: Params, *, versions: bool, default: int, maximum: int) -> Search:
    return filters.search(params.string("filter"), params.strings("order_by"),
                          params.integer("max_results", default), params.string("page_token"),
                          versions=versions, max_allowed=maximum)


def _page(key: str, items: list[dict[str, Any]], found: int, wanted: Search) -> Response[Any]:
    """One page of a search (the search fetched ``limit + 1``: a next page exists if it found more)."""
    body: dict[str, Any] = {key: items}
    if found > wanted.limit:
        body["next_page_token"] = filters.encode_page_token(wanted.offset + wanted.limit)
    return ok(body)


# -- registered models -------------------------------------------------------------------------

@post("/registered-models/create", status_code=200)
async def create_registered_model(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    cmd = CreateModel(p.required("name"), p.string("description") or "", p.tags())
    model = await models.create_model(cmd, writer(request))
    return ok({"registered_model": wire.registered_model(model)})


@post("/registered-models/rename", status_code=200)
async def rename_registered_model(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    model = await models.rename_model(RenameModel(p.required("name"), p.required("new_name")), writer(request))
    return ok({"registered_model": await _model_json(request, model.name)})


@patch("/registered-models/update")
async def update_registered_model(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    name, description = p.required("name"), p.string("description")
    await models.update_model(UpdateModel(name, description if description is not None else ""),
                              writer(request))
    return ok({"registered_model": await _model_json(request, name)})


@delete("/registered-models/delete", status_code=200)
async def delete_registered_model(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    await models.delete_model(DeleteModel(p.required("name")), writer(request))
    return ok()


@get("/registered-models/get")
async def get_registered_model(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    return ok({"registered_model": await _model_json(request, p.required("name"))})


@get("/registered-models/search")
async def search_registered_models(request: AnyRequest) -> Response[Any]:
    wanted = _searched(await Params.of(request), versions=False, default=DEFAULT_MODELS_PER_PAGE,
                       maximum=MAX_MODELS_PER_PAGE)
    found = await search.search_models(wanted, reader(request))
    summaries = await search.model_summaries(found[:wanted.limit], reader(request))
    return _page("registered_models", [wire.registered_model(*s) for s in summaries], len(found), wanted)


async def _latest(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    stages = [wire.parse_stage(s) for s in p.strings("stages")]
    found = await search.latest_versions(p.required("name"), stages or None, reader(request))
    return ok({"model_versions": [wire.model_version(v) for v in found]})


@post("/registered-models/get-latest-versions", status_code=200)
async def get_latest_versions_post(request: AnyRequest) -> Response[Any]:
    return await _latest(request)


@get("/registered-models/get-latest-versions")
async def get_latest_versions_get(request: AnyRequest) -> Response[Any]:
    return await _latest(request)


@post("/registered-models/set-tag", status_code=200)
async def set_registered_model_tag(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    value = p.string("value")
    await models.update_model(UpdateModel(p.required("name"), tags={p.required("key"): value or ""}),
                              writer(request))
    return ok()


@delete("/registered-models/delete-tag", status_code=200)
async def delete_registered_model_tag(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    await models.update_model(UpdateModel(p.required("name"), tags={p.required("key"): None}),
                              writer(request))
    return ok()


@post("/registered-models/alias", status_code=200)
async def set_registered_model_alias(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    await aliases.set_alias(SetAlias(p.required("name"), p.required("alias"), p.version()), writer(request))
    return ok()


@delete("/registered-models/alias", status_code=200)
async def delete_registered_model_alias(request: AnyRequest) -> Response[Any]:
    """As in MLflow, deleting an alias the model does not have changes nothing and succeeds."""
    p = await Params.of(request)
    name, alias = p.required("name"), p.required("alias")
    try:
        await aliases.delete_alias(DeleteAlias(name, alias), writer(request))
    except NotFoundError:
        await models.get_model(name, reader(request))  # 404 when the model itself is missing
    return ok()


@get("/registered-models/alias")
async def get_model_version_by_alias(request: AnyRequest) -> Response[Any]:
    """The version an alias points at; ``latest`` is the highest-numbered version (MLflow 3). An
    alias the model lacks is MLflow's 400 INVALID_PARAMETER_VALUE; a missing model, 404."""
    p = await Params.of(request)
    name, alias = p.required("name"), p.required("alias")
    if alias.lower() == "latest":
        found = await search.latest_versions(name, None, reader(request))
        if not found:
            raise NotFoundError(f"Latest version not found for model {name}.")
        return ok({"model_version": wire.model_version(max(found, key=lambda v: v.version))})
    try:
        version, _ = await aliases.get_alias(name, alias, reader(request))
    except NotFoundError:
        await models.get_model(name, reader(request))
        raise ValidationError(f"Registered model alias {alias} not found.") from None
    return ok({"model_version": wire.model_version(version)})


# -- model versions ----------------------------------------------------------------------------

@post("/model-versions/create", status_code=200)
async def create_model_version(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    cmd = RegisterModelVersion(p.required("name"), p.required("source"), p.string("run_id") or None,
                               p.string("description") or "", p.tags())
    version = await versions.register_model_version(cmd, writer(request))
    return ok({"model_version": wire.model_version(version)})


@patch("/model-versions/update")
async def update_model_version(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    description = p.string("description")
    cmd = UpdateModelVersion(p.required("name"), p.version(), description if description is not None else "")
    version = await versions.update_model_version(cmd, writer(request))
    return ok({"model_version": wire.model_version(version)})


@post("/model-versions/transition-stage", status_code=200)
async def transition_model_version_stage(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    name, number, target = p.required("name"), p.version(), wire.parse_stage(p.required("stage"))
    archive = p.boolean("archive_existing_versions")
    if archive and target in (Stage.NONE, Stage.ARCHIVED):
        raise ValidationError(f"archive_existing_versions can be true only when the stage is "
                              f"Staging or Production, not {wire.STAGE_NAMES[target]}")
    cmd = TransitionModelVersion(name, number, target.value, archive_others=archive)
    result = await transitions.transition_model_version(cmd, writer(request))
    return ok({"model_version": wire.model_version(result.version)})


@delete("/model-versions/delete", status_code=200)
async def delete_model_version(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    await versions.delete_model_version(DeleteModelVersion(p.required("name"), p.version()), writer(request))
    return ok()


@get("/model-versions/get")
async def get_model_version(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    version = await versions.get_model_version(p.required("name"), p.version(), reader(request))
    return ok({"model_version": wire.model_version(version)})


@get("/model-versions/search")
async def search_model_versions(request: AnyRequest) -> Response[Any]:
    wanted = _searched(await Params.of(request), versions=True, default=DEFAULT_VERSIONS_PER_PAGE,
                       maximum=MAX_VERSIONS_PER_PAGE)
    found = await search.search_model_versions(wanted, reader(request))
    return _page("model_versions", [wire.model_version(v) for v in found[:wanted.limit]], len(found), wanted)


@get("/model-versions/get-download-uri")
async def get_model_version_download_uri(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    version = await versions.get_model_version(p.required("name"), p.version(), reader(request))
    return ok({"artifact_uri": version.source})


@post("/model-versions/set-tag", status_code=200)
async def set_model_version_tag(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    cmd = UpdateModelVersion(p.required("name"), p.version(), tags={p.required("key"): p.string("value") or ""})
    await versions.update_model_version(cmd, writer(request))
    return ok()


@delete("/model-versions/delete-tag", status_code=200)
async def delete_model_version_tag(request: AnyRequest) -> Response[Any]:
    p = await Params.of(request)
    await versions.update_model_version(UpdateModelVersion(p.required("name"), p.version(),
                                                           tags={p.required("key"): None}), writer(request))
    return ok()


HANDLERS: list[HTTPRouteHandler] = [
    create_registered_model, rename_registered_model, update_registered_model, delete_registered_model,
    get_registered_model, search_registered_models, get_latest_versions_post, get_latest_versions_get,
    set_registered_model_tag, delete_registered_model_tag, set_registered_model_alias,
    delete_registered_model_alias, get_model_version_by_alias, create_model_version, update_model_version,
    transition_model_version_stage, delete_model_version, get_model_version, search_model_versions,
    get_model_version_download_uri, set_model_version_tag, delete_model_version_tag,
]
