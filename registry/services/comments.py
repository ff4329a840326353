"""Comments on versions and on their transition requests.

Editors and up write them on the versions of the models they see; every role that sees the model
reads them. A comment's author is the writer's principal (as approvals record it), so any token of
that principal may edit it, and no one else may, admins included; the author or an admin deletes
it, softly: it is then hidden from every read. Comments on a deleted version are hidden with it.
Each write takes the model's lock and is audited in the model's chain and announced
(``comment.created|updated|deleted``) in its own transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from registry.domain.errors import ForbiddenError, NotFoundError, TransientConflictError, ValidationError
from registry.domain.events import CommentCreated, CommentDeleted, CommentUpdated
from registry.domain.model import RegisteredModel
from registry.domain.permissions import Role, visible
from registry.services.access import lock_model, require_model
from registry.services.commands import AddComment, AddRequestComment, EditComment
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import CommentRecord, Page, RequestRecord, UnitOfWork
from registry.services.versions import require_version

MAX_BODY = 10_000


def check_body(body: str) -> str:
    """A comment's text: 1 to MAX_BODY characters, not only white space, no NUL (which
    PostgreSQL text cannot hold)."""
    if not 1 <= len(body) <= MAX_BODY:
        raise ValidationError(f"body must be 1-{MAX_BODY} characters, not {len(body)}")
    if "\x00" in body:
        raise ValidationError("body must not contain NUL characters")
    if not body.strip():
        raise ValidationError("body must not be only white space")
    return body


def _principal(uow: UnitOfWork) -> str:
    return uow.actor.principal or uow.actor.name


def _snapshot(c: CommentRecord) -> dict[str, Any]:
    return {"id": c.id, "body": c.body, "author": c.author, "request_id": c.request_id}


def _extra(c: CommentRecord) -> dict[str, Any]:
    return {"comment_id": c.id, "request_id": c.request_id}


async def _visible_request(uow: UnitOfWork, request_id: int) -> RequestRecord:
    request = await uow.repo.get_request(request_id)
    if request is None or not visible(uow.actor.models, request.model):
        raise NotFoundError(f"transition request {request_id} does not exist")
    return request


async def _visible_comment(uow: UnitOfWork, comment_id: int) -> CommentRecord:
    """A live comment on a live version of a model the caller sees."""
    comment = await uow.repo.get_comment(comment_id)
    if comment is not None and visible(uow.actor.models, comment.model):
        model = await uow.repo.get_model(comment.model)
        if model is not None and await uow.repo.get_version(model, comment.version) is not None:
            return comment
    raise NotFoundError(f"comment {comment_id} does not exist")


async def _add(uow: UnitOfWork, model: RegisteredModel, version: int, request_id: int | None,
               body: str) -> CommentRecord:
    comment = await uow.repo.add_comment(model, version, request_id, _principal(uow), body, uow.now())
    uow.record(model, CommentCreated(model=model.name, version=version, after=_snapshot(comment),
                                     extra=_extra(comment)))
    await uow.commit()
    return comment


async def add_comment(cmd: AddComment, uow: UnitOfWork) -> CommentRecord:
    """Comment on a version (editor), or with ``request_id`` on one of its transition requests."""
    check_body(cmd.body)
    async with uow:
        model = await lock_model(uow, cmd.model, Role.EDITOR, "commenting")
        await require_version(uow.repo, model, cmd.version)
        if cmd.request_id is not None:
            request = await uow.repo.get_request(cmd.request_id)
            if request is None or (request.model_id, request.version) != (model.id, cmd.version):
                raise NotFoundError(f"version {cmd.version} of model {model.name!r} has no "
                                    f"transition request {cmd.request_id}")
        return await _add(uow, model, cmd.version, cmd.request_id, cmd.body)


async def add_request_comment(cmd: AddRequestComment, uow: UnitOfWork) -> CommentRecord:
    """Comment on a transition request (editor); the comment belongs to the request's version."""
    check_body(cmd.body)
    async with uow:
        found = await _visible_request(uow, cmd.request_id)
        model = await lock_model(uow, found.model, Role.EDITOR, "commenting")
        request = await uow.repo.get_request(cmd.request_id)  # again, under the model's lock
        if request is None or request.model_id != model.id:
            raise TransientConflictError(f"transition request {cmd.request_id} changed meanwhile; "
                                         "try again")
        await require_version(uow.repo, model, request.version)
        return await _add(uow, model, request.version, request.id, cmd.body)


async def list_version_comments(model: str, version: int, cursor: str | None, limit: int | None,
                                uow: UnitOfWork) -> Page:
    """The version's comments, those on its transition requests too (each with its
    ``request_id``), oldest first."""
    limit = check_limit(limit)
    after = decode_cursor(cursor, int)
    async with uow:
        found = await require_model(uow, model)
        await require_version(uow.repo, found, version)
        rows = await uow.repo.version_comments(found, version, after, limit + 1)
    return Page(*page(rows, limit, lambda c: c.id))


async def list_request_comments(request_id: int, cursor: str | None, limit: int | None,
                                uow: UnitOfWork) -> Page:
    """A transition request's comments, oldest first."""
    limit = check_limit(limit)
    after = decode_cursor(cursor, int)
    async with uow:
        request = await _visible_request(uow, request_id)
        model = await require_model(uow, request.model)
        await require_version(uow.repo, model, request.version)
        rows = await uow.repo.request_comments(request_id, after, limit + 1)
    return Page(*page(rows, limit, lambda c: c.id))


async def get_comment(comment_id: int, uow: UnitOfWork) -> CommentRecord:
    async with uow:
        return await _visible_comment(uow, comment_id)


async def _locked(uow: UnitOfWork, comment_id: int, what: str) -> tuple[RegisteredModel, CommentRecord]:
    """The comment's model, locked for a change by an editor or up, and the comment read again
    under that lock."""
    found = await _visible_comment(uow, comment_id)
    model = await lock_model(uow, found.model, Role.EDITOR, what)
    comment = await _visible_comment(uow, comment_id)
    if comment.model != model.name:  # the model was renamed between the two reads
        raise TransientConflictError(f"comment {comment_id} changed meanwhile; try again")
    return model, comment


async def edit_comment(cmd: EditComment, uow: UnitOfWork) -> CommentRecord:
    """Replace a comment's body: its author's principal only (403 for anyone else, admins
    included). The same body again changes nothing."""
    check_body(cmd.body)
    async with uow:
        model, comment = await _locked(uow, cmd.comment_id, "editing a comment")
        if comment.author != _principal(uow):
            raise ForbiddenError(f"comment {comment.id} is edited by its author ({comment.author}) only")
        if comment.body == cmd.body:
            return comment
        now = uow.now()
        await uow.repo.update_comment(comment.id, cmd.body, now)
        edited = replace(comment, body=cmd.body, updated_at=now)
        uow.record(model, CommentUpdated(model=model.name, version=comment.version,
                                         before=_snapshot(comment), after=_snapshot(edited),
                                         extra=_extra(comment)))
        await uow.commit()
    return edited


async def delete_comment(comment_id: int, uow: UnitOfWork) -> None:
    """Delete a comment softly (its author's principal, or an admin): every read then answers
    404; its audit entries stay."""
    async with uow:
        model, comment = await _locked(uow, comment_id, "deleting a comment")
        if comment.author != _principal(uow) and uow.actor.role < Role.ADMIN:
            raise ForbiddenError(f"comment {comment.id} is deleted by its author or an admin")
        await uow.repo.delete_comment(comment.id, uow.now())
        uow.record(model, CommentDeleted(model=model.name, version=comment.version,
                                         before=_snapshot(comment), extra=_extra(comment)))
        await uow.commit()
