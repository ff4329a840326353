"""Comments on versions and on transition requests, against the in-memory unit of work: who may
write, edit, delete and read them, what a body may hold, and the change each write records.

As in test_approvals.py, the registry is arranged through ``store`` (each helper call its own
unit of work) and the call under test runs in one fresh unit, whose ``committed`` and
``recorded`` describe it alone.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from registry.api.errors import status_of
from registry.domain.errors import ForbiddenError, NotFoundError, ValidationError
from registry.domain.events import CHANGE_TYPES, CommentCreated, CommentDeleted, CommentUpdated
from registry.domain.permissions import Role
from registry.services.approvals import request_transition
from registry.services.commands import (
    AddComment,
    AddRequestComment,
    CreateModel,
    EditComment,
    RegisterModelVersion,
    RequestTransition,
)
from registry.services.comments import (
    MAX_BODY,
    add_comment,
    add_request_comment,
    delete_comment,
    edit_comment,
    get_comment,
    list_request_comments,
    list_version_comments,
)
from registry.services.models import create_model
from registry.services.ports import Actor, CommentRecord
from registry.services.versions import register_model_version
from registry.services.webhooks import validate_event_types
from tests.unit.fakes import FakeUnitOfWork, Store

NAME = "fraud"

# ``name`` is the token (what the audit log records), ``principal`` who stands behind it.
ADMIN = Actor("admin-token", "req-admin", Role.ADMIN, principal="root")
DANA = Actor("dana-token", "req-dana", Role.EDITOR, principal="dana")
DANA_LAPTOP = Actor("dana-laptop", "req-dana-2", Role.RELEASER, principal="dana")  # same principal
DANA_READONLY = Actor("dana-ro", "req-dana-3", Role.VIEWER, principal="dana")
ERIN = Actor("erin-token", "req-erin", Role.RELEASER, principal="erin")
VIC = Actor("vic-token", "req-vic", Role.VIEWER, principal="vic")
SCOPED_ADMIN = Actor("churn-admin", "req-churn", Role.ADMIN, models=("churn*",), principal="zed")


@pytest.fixture
def store() -> Store:
    return Store()


def as_(actor: Actor, store: Store) -> FakeUnitOfWork:
    return FakeUnitOfWork(store, actor)


async def given_model(store: Store, versions: int = 2) -> None:
    await create_model(CreateModel(NAME), FakeUnitOfWork(store))
    for _ in range(versions):
        await register_model_version(RegisterModelVersion(NAME, "s3://models/x"), FakeUnitOfWork(store))


async def comment(store: Store, body: str = "looks good", actor: Actor = DANA, version: int = 1,
                  request_id: int | None = None) -> CommentRecord:
    return await add_comment(AddComment(NAME, version, body, request_id), as_(actor, store))


async def given_request(store: Store, version: int = 1) -> int:
    request = await request_transition(RequestTransition(NAME, version, "staging"), as_(ADMIN, store))
    return request.id


async def refused(store: Store, actor: Actor, error: type[Exception], call: Any) -> Any:
    """Run ``call(uow)`` as ``actor``; it must raise ``error`` and leave the store as it was."""
    state, changes = copy.deepcopy(store.state), len(store.changes)
    uow = as_(actor, store)
    with pytest.raises(error) as caught:
        await call(uow)
    assert not uow.committed
    assert store.state == state and len(store.changes) == changes
    return caught.value


def snapshot(c: CommentRecord) -> dict[str, Any]:
    return {"id": c.id, "body": c.body, "author": c.author, "request_id": c.request_id}


async def bodies(store: Store, version: int = 1, actor: Actor = VIC) -> list[str]:
    page = await list_version_comments(NAME, version, None, None, as_(actor, store))
    return [c.body for c in page.items]


# -- writing -------------------------------------------------------------------------------------------


async def test_an_editor_comments_on_a_version_as_its_principal_and_records_it(store: Store) -> None:
    await given_model(store)
    uow = as_(DANA, store)

    made = await add_comment(AddComment(NAME, 2, "the AUC dropped on the holdout set"), uow)

    assert uow.committed
    assert (made.model, made.version, made.request_id, made.author) == (NAME, 2, None, "dana")
    assert (made.body, made.updated_at, made.deleted_at) == ("the AUC dropped on the holdout set", None, None)
    assert made.created_at == store.clock
    assert uow.changes() == [CommentCreated(
        model=NAME, version=2, after={"id": made.id, "body": "the AUC dropped on the holdout set",
                                      "author": "dana", "request_id": None},
        extra={"comment_id": made.id, "request_id": None})]
    assert await get_comment(made.id, as_(VIC, store)) == made


@pytest.mark.parametrize("actor", [DANA, DANA_LAPTOP, ERIN, ADMIN])
async def test_editors_and_up_may_comment(store: Store, actor: Actor) -> None:
    await given_model(store)
    made = await comment(store, actor=actor)
    assert made.author == actor.principal


async def test_a_viewer_may_not_comment(store: Store) -> None:
    await given_model(store)
    request_id = await given_request(store)
    err = await refused(store, VIC, ForbiddenError, lambda uow: add_comment(AddComment(NAME, 1, "hi"), uow))
    assert "editor" in err.detail and status_of(err)[0] == 403
    await refused(store, VIC, ForbiddenError,
                  lambda uow: add_request_comment(AddRequestComment(request_id, "hi"), uow))


async def test_a_model_outside_the_tokens_scope_does_not_exist_for_comments(store: Store) -> None:
    await given_model(store)
    made = await comment(store)
    request_id = await given_request(store)
    await refused(store, SCOPED_ADMIN, NotFoundError, lambda uow: add_comment(AddComment(NAME, 1, "hi"), uow))
    await refused(store, SCOPED_ADMIN, NotFoundError,
                  lambda uow: add_request_comment(AddRequestComment(request_id, "hi"), uow))
    await refused(store, SCOPED_ADMIN, NotFoundError, lambda uow: get_comment(made.id, uow))
    await refused(store, SCOPED_ADMIN, NotFoundError, lambda uow: delete_comment(made.id, uow))
    await refused(store, SCOPED_ADMIN, NotFoundError,
                  lambda uow: list_version_comments(NAME, 1, None, None, uow))
    await refused(store, SCOPED_ADMIN, NotFoundError,
                  lambda uow: list_request_comments(request_id, None, None, uow))


async def test_a_missing_model_or_version_is_not_found(store: Store) -> None:
    await given_model(store)
    await refused(store, DANA, NotFoundError, lambda uow: add_comment(AddComment(NAME, 3, "hi"), uow))
    await refused(store, DANA, NotFoundError, lambda uow: add_comment(AddComment("nope", 1, "hi"), uow))
    await refused(store, DANA, NotFoundError,
                  lambda uow: add_request_comment(AddRequestComment(99, "hi"), uow))


@pytest.mark.parametrize(("body", "says"), [
    ("", "1-10000 characters"),
    ("x" * (MAX_BODY + 1), "1-10000 characters"),
    (" \n\t\u00a0", "white space"),
    ("fine\x00then not", "NUL"),
])
async def test_a_body_out_of_bounds_is_a_validation_error_naming_the_field(
    store: Store, body: str, says: str
) -> None:
    await given_model(store)
    made = await comment(store)
    for call in (lambda uow: add_comment(AddComment(NAME, 1, body), uow),
                 lambda uow: edit_comment(EditComment(made.id, body), uow)):
        err = await refused(store, DANA, ValidationError, call)
        assert err.detail.startswith("body ") and says in err.detail, err.detail


async def test_a_body_of_exactly_the_maximum_and_one_of_a_single_character_are_taken(store: Store) -> None:
    await given_model(store)
    assert len((await comment(store, "x" * MAX_BODY)).body) == MAX_BODY
    assert (await comment(store, " ?\n")).body == " ?\n"   # kept as written, spaces included


# -- comments on transition requests -------------------------------------------------------------------


async def test_a_request_comment_belongs_to_the_requests_model_and_version(store: Store) -> None:
    await given_model(store)
    request_id = await given_request(store, version=2)
    uow = as_(DANA, store)

    made = await add_request_comment(AddRequestComment(request_id, "needs the latency numbers"), uow)

    assert (made.model, made.version, made.request_id, made.author) == (NAME, 2, request_id, "dana")
    assert uow.changes() == [CommentCreated(
        model=NAME, version=2, after={"id": made.id, "body": "needs the latency numbers", "author": "dana",
                                      "request_id": request_id},
        extra={"comment_id": made.id, "request_id": request_id})]
    by_request = await list_request_comments(request_id, None, None, as_(VIC, store))
    assert by_request.items == [made]


async def test_a_versions_list_holds_the_comments_on_its_requests_and_a_requests_list_only_its_own(
    store: Store,
) -> None:
    await given_model(store)
    request_id = await given_request(store)
    on_version = await comment(store, "on the version")
    on_request = await add_request_comment(AddRequestComment(request_id, "on the request"), as_(ERIN, store))
    via_version = await comment(store, "on the request, by the version", request_id=request_id)
    await comment(store, "on version 2", version=2)

    listed = await list_version_comments(NAME, 1, None, None, as_(VIC, store))
    assert listed.items == [on_version, on_request, via_version] and listed.next_cursor is None
    assert [c.request_id for c in listed.items] == [None, request_id, request_id]
    assert (await list_request_comments(request_id, None, None, as_(VIC, store))).items == [on_request, via_version]


async def test_a_request_id_that_is_not_one_of_the_versions_requests_is_not_found(store: Store) -> None:
    await given_model(store)
    request_id = await given_request(store, version=2)
    await refused(store, DANA, NotFoundError,
                  lambda uow: add_comment(AddComment(NAME, 1, "hi", request_id), uow))


# -- reading -------------------------------------------------------------------------------------------


async def test_comments_are_listed_oldest_first_a_page_at_a_time(store: Store) -> None:
    await given_model(store)
    for i in range(5):
        await comment(store, f"c{i}")
    first = await list_version_comments(NAME, 1, None, 2, as_(VIC, store))
    second = await list_version_comments(NAME, 1, first.next_cursor, 2, as_(VIC, store))
    third = await list_version_comments(NAME, 1, second.next_cursor, 2, as_(VIC, store))
    assert [[c.body for c in p.items] for p in (first, second, third)] == [["c0", "c1"], ["c2", "c3"], ["c4"]]
    assert third.next_cursor is None
    await refused(store, VIC, ValidationError, lambda uow: list_version_comments(NAME, 1, "bogus!", 2, uow))
    await refused(store, VIC, ValidationError, lambda uow: list_version_comments(NAME, 1, None, 0, uow))


async def test_the_comments_of_a_version_that_is_gone_are_gone_with_it(store: Store) -> None:
    await given_model(store)
    request_id = await given_request(store)
    made = await add_request_comment(AddRequestComment(request_id, "hi"), as_(DANA, store))
    del store.state.versions[(1, 1)]   # what every read sees of a deleted version
    await refused(store, VIC, NotFoundError, lambda uow: get_comment(made.id, uow))
    await refused(store, VIC, NotFoundError, lambda uow: list_version_comments(NAME, 1, None, None, uow))
    await refused(store, VIC, NotFoundError, lambda uow: list_request_comments(request_id, None, None, uow))
    await refused(store, DANA, NotFoundError, lambda uow: edit_comment(EditComment(made.id, "new"), uow))
    await refused(store, DANA, NotFoundError,
                  lambda uow: add_request_comment(AddRequestComment(request_id, "hi"), uow))


# -- editing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("author", [DANA, DANA_LAPTOP])
async def test_the_authors_principal_edits_a_comment_with_any_of_its_tokens(store: Store, author: Actor) -> None:
    await given_model(store)
    made = await comment(store, "first thought")
    uow = as_(author, store)

    edited = await edit_comment(EditComment(made.id, "second thought"), uow)

    assert uow.committed
    assert (edited.id, edited.body, edited.author, edited.created_at) == (made.id, "second thought", "dana",
                                                                         made.created_at)
    assert edited.updated_at == store.clock and edited.updated_at > made.created_at
    assert uow.changes() == [CommentUpdated(
        model=NAME, version=1, before=snapshot(made), after={**snapshot(made), "body": "second thought"},
        extra={"comment_id": made.id, "request_id": None})]
    assert await get_comment(made.id, as_(VIC, store)) == edited
    assert await bodies(store) == ["second thought"]


@pytest.mark.parametrize("actor", [ERIN, ADMIN], ids=["another-editor", "an-admin"])
async def test_no_one_but_the_author_edits_a_comment_not_even_an_admin(store: Store, actor: Actor) -> None:
    await given_model(store)
    made = await comment(store)
    err = await refused(store, actor, ForbiddenError, lambda uow: edit_comment(EditComment(made.id, "mine now"), uow))
    assert "author" in err.detail


async def test_the_author_with_a_viewer_token_may_not_edit(store: Store) -> None:
    await given_model(store)
    made = await comment(store)
    await refused(store, DANA_READONLY, ForbiddenError, lambda uow: edit_comment(EditComment(made.id, "x"), uow))
    await refused(store, DANA_READONLY, ForbiddenError, lambda uow: delete_comment(made.id, uow))


async def test_an_edit_to_the_same_body_changes_nothing(store: Store) -> None:
    await given_model(store)
    made = await comment(store, "same")
    uow = as_(DANA, store)
    assert await edit_comment(EditComment(made.id, "same"), uow) == made
    assert not uow.committed and uow.changes() == []


# -- deleting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [DANA, DANA_LAPTOP, ADMIN], ids=["author", "authors-other-token", "admin"])
async def test_the_author_or_an_admin_deletes_a_comment_softly(store: Store, actor: Actor) -> None:
    await given_model(store)
    request_id = await given_request(store)
    kept = await comment(store, "kept")
    made = await comment(store, "doomed", request_id=request_id)
    uow = as_(actor, store)

    await delete_comment(made.id, uow)

    assert uow.committed
    assert uow.changes() == [CommentDeleted(model=NAME, version=1, before=snapshot(made),
                                            extra={"comment_id": made.id, "request_id": request_id})]
    _, row = store.state.comments[made.id]
    assert row.deleted_at == store.clock and row.body == "doomed"   # the row stays
    # ... and every read leaves it out
    await refused(store, VIC, NotFoundError, lambda uow: get_comment(made.id, uow))
    assert await bodies(store) == ["kept"]
    assert (await list_request_comments(request_id, None, None, as_(VIC, store))).items == []
    await refused(store, DANA, NotFoundError, lambda uow: edit_comment(EditComment(made.id, "back"), uow))
    await refused(store, ADMIN, NotFoundError, lambda uow: delete_comment(made.id, uow))
    assert await get_comment(kept.id, as_(VIC, store)) == kept


async def test_another_editor_may_not_delete_a_comment(store: Store) -> None:
    await given_model(store)
    made = await comment(store)
    err = await refused(store, ERIN, ForbiddenError, lambda uow: delete_comment(made.id, uow))
    assert "author or an admin" in err.detail


async def test_a_missing_comment_is_not_found(store: Store) -> None:
    await given_model(store)
    for call in (lambda uow: get_comment(7, uow), lambda uow: edit_comment(EditComment(7, "x"), uow),
                 lambda uow: delete_comment(7, uow)):
        err = await refused(store, ADMIN, NotFoundError, call)
        assert err.detail == "comment 7 does not exist"


# -- wire names ----------------------------------------------------------------------------------------


def test_comment_events_are_change_types_a_webhook_may_subscribe_to() -> None:
    assert {"comment.created", "comment.updated", "comment.deleted"} <= set(CHANGE_TYPES)
    assert validate_event_types(["comment.*"]) == ["comment.*"]
    assert validate_event_types(["comment.deleted"]) == ["comment.deleted"]
