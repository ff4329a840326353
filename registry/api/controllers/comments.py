"""Comments on versions and on their transition requests."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from registry.api.comment_schemas import CommentList, CommentRequest, CommentResponse
from registry.api.controllers.gates import RequestId
from registry.api.deps import ModelPath, VersionPath, reader, writer
from registry.api.errors import problem_responses
from registry.services import comments
from registry.services.commands import AddComment, AddRequestComment, EditComment
from registry.services.ports import Page

CommentId = Annotated[int, PathParameter(ge=1, le=2**53 - 1, description="comment id")]
Limit = Annotated[int | None, QueryParameter(ge=1, le=1000)]
Cursor = Annotated[str | None, QueryParameter(max_length=2048)]


def _list(found: Page) -> CommentList:
    return CommentList([CommentResponse.of(c) for c in found.items], found.next_cursor)


class CommentController(Controller):
    path = "/"
    tags = ["comments"]

    @post("/models/{name:str}/versions/{version:int}/comments", operation_id="addVersionComment",
          responses=problem_responses(400, 403, 404))
    async def add_version_comment(self, request: Request[Any, Any, Any], name: ModelPath,
                                  version: VersionPath, data: JSONBody[CommentRequest]) -> CommentResponse:
        """Comment on a version (editor). The author is the token's principal; the comment is
        audited in the model's chain and announced as `comment.created`."""
        cmd = AddComment(name, version, data.body)
        return CommentResponse.of(await comments.add_comment(cmd, writer(request)))

    @get("/models/{name:str}/versions/{version:int}/comments", operation_id="listVersionComments",
         responses=problem_responses(400, 404))
    async def list_version_comments(self, request: Request[Any, Any, Any], name: ModelPath,
                                    version: VersionPath, limit: Limit = None,
                                    cursor: Cursor = None) -> CommentList:
        """The version's comments, oldest first, those made on its transition requests too
        (with their `request_id`). Deleted comments are left out."""
        return _list(await comments.list_version_comments(name, version, cursor, limit, reader(request)))

    @post("/transition-requests/{request_id:int}/comments", operation_id="addRequestComment",
          responses=problem_responses(400, 403, 404))
    async def add_request_comment(self, request: Request[Any, Any, Any], request_id: RequestId,
                                  data: JSONBody[CommentRequest]) -> CommentResponse:
        """Comment on a transition request (editor); the comment belongs to the request's version
        and is listed with the version's comments too."""
        cmd = AddRequestComment(request_id, data.body)
        return CommentResponse.of(await comments.add_request_comment(cmd, writer(request)))

    @get("/transition-requests/{request_id:int}/comments", operation_id="listRequestComments",
         responses=problem_responses(400, 404))
    async def list_request_comments(self, request: Request[Any, Any, Any], request_id: RequestId,
                                    limit: Limit = None, cursor: Cursor = None) -> CommentList:
        """The request's comments, oldest first. Deleted comments are left out."""
        return _list(await comments.list_request_comments(request_id, cursor, limit, reader(request)))

    @get("/comments/{comment_id:int}", operation_id="getComment", responses=problem_responses(400, 404))
    async def get_comment(self, request: Request[Any, Any, Any], comment_id: CommentId) -> CommentResponse:
        """One comment; 404 once it was deleted."""
        return CommentResponse.of(await comments.get_comment(comment_id, reader(request)))

    @patch("/comments/{comment_id:int}", operation_id="editComment",
           responses=problem_responses(400, 403, 404))
    async def edit_comment(self, request: Request[Any, Any, Any], comment_id: CommentId,
                           data: JSONBody[CommentRequest]) -> CommentResponse:
        """Replace the comment's body: only tokens of its author's principal may (403 for anyone
        else, admins included). Announced as `comment.updated` with the body before and after."""
        cmd = EditComment(comment_id, data.body)
        return CommentResponse.of(await comments.edit_comment(cmd, writer(request)))

    @delete("/comments/{comment_id:int}", operation_id="deleteComment",
            responses=problem_responses(400, 403, 404))
    async def delete_comment(self, request: Request[Any, Any, Any], comment_id: CommentId) -> None:
        """Delete the comment (its author's principal, or an admin): every read then answers 404;
        its audit entries stay. Announced as `comment.deleted`."""
        await comments.delete_comment(comment_id, writer(request))
