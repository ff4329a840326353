"""Bodies of the comments API: comments on versions and on transition requests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from registry.api.schemas import Request
from registry.services.comments import MAX_BODY
from registry.services.ports import CommentRecord

# Not only white space, no NUL (services.comments.check_body); `(?![\s\S])` ends at the very end.
CommentBody = Annotated[str, Meta(min_length=1, max_length=MAX_BODY, pattern=r"^\s*[^\s\x00][^\x00]*(?![\s\S])",
                                  description=f"1-{MAX_BODY} characters, not only white space, no NUL")]


class CommentRequest(Request):
    body: CommentBody


class CommentResponse(Struct):
    """``author`` is the writer's principal; ``edited`` says whether the body was changed since."""

    id: int
    model: str
    version: int
    request_id: int | None  # set when the comment was made on one of the version's transition requests
    author: str
    body: str
    created_at: datetime
    updated_at: datetime | None
    edited: bool

    @classmethod
    def of(cls, c: CommentRecord) -> CommentResponse:
        return cls(c.id, c.model, c.version, c.request_id, c.author, c.body, c.created_at, c.updated_at,
                   c.updated_at is not None)


class CommentList(Struct):
    items: list[CommentResponse]
    next_cursor: str | None
