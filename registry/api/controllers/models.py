"""Registered models: create, list, read, update, delete."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody, QueryParameter

from registry.api.deps import ModelPath, given, reader, writer
from registry.api.errors import problem_responses
from registry.api.schemas import (
    NO_NUL,
    CreateModelRequest,
    ModelList,
    ModelResponse,
    RenameModelRequest,
    UpdateModelRequest,
)
from registry.services import models as svc
from registry.services.commands import CreateModel, DeleteModel, RenameModel, UpdateModel

Limit = Annotated[int | None, QueryParameter(ge=1, le=1000, description="page size (default 50)")]
Cursor = Annotated[str | None, QueryParameter(max_length=2048, description="from next_cursor")]


class ModelController(Controller):
    path = "/models"
    tags = ["models"]

    @post("/", operation_id="createModel", responses=problem_responses(400, 403, 409))
    async def create_model(self, request: Request[Any, Any, Any], data: JSONBody[CreateModelRequest]) -> ModelResponse:
        """Register a new model name. 409 `already_exists` when the name is taken."""
        model = await svc.create_model(CreateModel(data.name, data.description, data.tags), writer(request))
        return ModelResponse.of(model)

    @get("/", operation_id="listModels", responses=problem_responses(400))
    async def list_models(
        self, request: Request[Any, Any, Any], limit: Limit = None, cursor: Cursor = None,
        name_prefix: Annotated[str | None, QueryParameter(max_length=256, pattern=NO_NUL)] = None,
    ) -> ModelList:
        """Models ordered by name, a page at a time."""
        result = await svc.list_models(name_prefix, cursor, limit, reader(request))
        return ModelList([ModelResponse.of(m) for m in result.items], result.next_cursor)

    @get("/{name:str}", operation_id="getModel", responses=problem_responses(400, 404))
    async def get_model(self, request: Request[Any, Any, Any], name: ModelPath) -> ModelResponse:
        """One model."""
        return ModelResponse.of(await svc.get_model(name, reader(request)))

    @patch("/{name:str}", operation_id="updateModel", responses=problem_responses(400, 403, 404))
    async def update_model(self, request: Request[Any, Any, Any], name: ModelPath,
                     data: JSONBody[UpdateModelRequest]) -> ModelResponse:
        """JSON merge patch of description and tags (a null tag value removes the tag)."""
        cmd = UpdateModel(name, given(data.description), given(data.tags))
        return ModelResponse.of(await svc.update_model(cmd, writer(request)))

    @delete("/{name:str}", operation_id="deleteModel", responses=problem_responses(400, 403, 404, 409))
    async def delete_model(self, request: Request[Any, Any, Any], name: ModelPath) -> None:
        """Delete a model with its versions and aliases; its audit log stays. 409 `conflict`
        while a version is in production."""
        await svc.delete_model(DeleteModel(name), writer(request))

    @post("/{name:str}/rename", operation_id="renameModel", status_code=200,
          responses=problem_responses(400, 403, 404, 409))
    async def rename_model(self, request: Request[Any, Any, Any], name: ModelPath,
                           data: JSONBody[RenameModelRequest]) -> ModelResponse:
        """Give the model a new name (admin). Its versions, aliases, policies and audit chain go
        with it; the old name is free again. 409 `already_exists` when the new name is taken."""
        return ModelResponse.of(await svc.rename_model(RenameModel(name, data.new_name), writer(request)))
