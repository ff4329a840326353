"""``SqlUnitOfWork.after_commit(fn)`` on both backends: ``fn`` runs once the unit's changes are
durably committed, after the unit let go of its connection and lock, and never otherwise.

The services register their cleanups of bytes no row names any more this way (a replaced file's
key, a deleted file's key, replaced upload tickets, sealed uploads' temporary objects): a hook that
ran for a change that did not commit would delete bytes a row still names. Each hook here records
what another connection sees at that moment, and takes the model's lock in a unit of its own (on
SQLite, the writers' queue too), so a hook run under the lock would time out instead of passing.

With an Idempotency-Key the unit's commit stops short of COMMIT (the answer is stored beside the
effect by ``finish``): hooks then run in ``finish(answer)`` once it commits, and not at all when
``finish(None)`` rolls back, when that COMMIT fails, or when the block was refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import insert, select

from registry.adapters.db.idempotency import IdempotentCall
from registry.adapters.db.tables import idempotency_t, models_t
from registry.adapters.db.unit_of_work import IdempotentUnitOfWork, SqlUnitOfWork
from registry.bootstrap import Container
from registry.domain.errors import ConflictError, TransientConflictError
from registry.services.idempotency import StoredResponse
from tests.integration.helpers import ALICE, BOB, new_model, reader

ANSWER = StoredResponse(201, {"content-type": "application/json"}, b'{"ok":true}')


async def description(c: Container, name: str) -> str:
    """The model's description as committed (a connection of its own, autocommit)."""
    async with reader(c.engine).connect() as conn:
        return (await conn.execute(select(models_t.c.description)
                                   .where(models_t.c.name == name))).scalar_one()


async def stored_answers(c: Container, call: IdempotentCall) -> int:
    async with reader(c.engine).connect() as conn:
        rows = await conn.execute(select(idempotency_t.c.status)
                                  .where(idempotency_t.c.key_hash == call.key_hash))
        return len(rows.all())


async def describe(uow: SqlUnitOfWork, name: str, text: str) -> None:
    """Change the model's description under its lock (inside ``uow``)."""
    model = await uow.repo.lock_model(name)
    model.description = text
    await uow.repo.update_model(model)


class Hooks:
    """Hooks that note, when they run, what the database holds and that the lock is free."""

    def __init__(self, c: Container, name: str) -> None:
        self.c, self.name = c, name
        self.ran: list[tuple[str, str]] = []  # (hook, description seen when it ran)

    def hook(self, label: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            seen = await description(self.c, self.name)
            # The unit must have let go of the model's row lock (PostgreSQL) and of the writers'
            # queue (SQLite): a hook taking them in a unit of its own must not wait.
            async def lock_again() -> None:
                async with self.c.uow(BOB) as other:
                    await other.repo.lock_model(self.name)
            await asyncio.wait_for(lock_again(), timeout=5)
            self.ran.append((label, seen))
        return run


def idempotent(c: Container) -> IdempotentCall:
    return c.idempotent_call(uuid.uuid4().hex * 2, uuid.uuid4().hex)


# -- without an Idempotency-Key ---------------------------------------------------------------


async def test_hooks_run_in_order_once_the_commit_is_durable_and_the_lock_released(
    container: Container,
) -> None:
    name = await new_model(container)
    hooks = Hooks(container, name)
    async with container.uow(ALICE) as uow:
        await describe(uow, name, "committed")
        uow.after_commit(hooks.hook("first"))
        uow.after_commit(hooks.hook("second"))
        await uow.commit()
        assert hooks.ran == [], "a hook ran before the unit ended (its lock still held)"
    assert hooks.ran == [("first", "committed"), ("second", "committed")]
    assert await description(container, name) == "committed"


async def test_no_hook_runs_when_the_block_ends_without_a_commit(container: Container) -> None:
    name = await new_model(container)
    hooks = Hooks(container, name)
    async with container.uow(ALICE) as uow:
        await describe(uow, name, "never committed")
        uow.after_commit(hooks.hook("rolled back"))
    assert hooks.ran == []
    assert await description(container, name) == ""


@pytest.mark.parametrize("failure", [ConflictError("refused"), RuntimeError("a bug")],
                         ids=["refusal", "exception"])
async def test_no_hook_runs_when_the_block_raises_before_its_commit(
    container: Container, failure: Exception,
) -> None:
    name = await new_model(container)
    hooks = Hooks(container, name)
    with pytest.raises(type(failure)) as caught:
        async with container.uow(ALICE) as uow:
            await describe(uow, name, "never committed")
            uow.after_commit(hooks.hook("rolled back"))
            raise failure
    assert caught.value is failure
    assert hooks.ran == [] and await description(container, name) == ""


async def test_no_hook_runs_when_the_database_refuses_the_change(container: Container) -> None:
    """A constraint violation inside the block (another model of that name) rolls back and
    leaves as a 409: the hook registered before it never runs."""
    name, taken = await new_model(container), await new_model(container)
    hooks = Hooks(container, name)
    with pytest.raises(TransientConflictError):
        async with container.uow(ALICE) as uow:
            await describe(uow, name, "never committed")
            uow.after_commit(hooks.hook("rolled back"))
            model = await uow.repo.lock_model(taken)
            await uow.repo.conn.execute(insert(models_t).values(
                name=taken, description="", tags={}, last_version=0, created_at=model.created_at,
                updated_at=model.created_at, created_by="alice"))
            await uow.commit()
    assert hooks.ran == [] and await description(container, name) == ""


async def test_hooks_still_run_when_the_block_raises_after_its_commit(container: Container) -> None:
    """The change is durable: its cleanups must run (the error still reaches the caller)."""
    name = await new_model(container)
    hooks = Hooks(container, name)
    with pytest.raises(RuntimeError, match="after the commit"):
        async with container.uow(ALICE) as uow:
            await describe(uow, name, "committed")
            uow.after_commit(hooks.hook("cleanup"))
            await uow.commit()
            raise RuntimeError("after the commit")
    assert hooks.ran == [("cleanup", "committed")]


# -- with an Idempotency-Key ------------------------------------------------------------------


async def test_an_idempotent_unit_runs_its_hooks_when_finish_commits_the_answer(
    container: Container,
) -> None:
    name = await new_model(container)
    hooks = Hooks(container, name)
    call = idempotent(container)
    uow = container.uow(ALICE, idempotency=call)
    async with uow:
        await describe(uow, name, "committed with its answer")
        uow.after_commit(hooks.hook("cleanup"))
        await uow.commit()
    # The effect waits for its answer: not committed yet, so no hook may have run.
    assert uow.holds_effect and call.held is uow
    assert hooks.ran == [] and await description(container, name) == ""
    assert await stored_answers(container, call) == 0
    # Another writer of the same request does not join the key while the first holds it.
    assert not isinstance(container.uow(ALICE, idempotency=call), IdempotentUnitOfWork)

    assert await call.held.finish(ANSWER) is True

    assert call.held is None and not call.joined
    assert hooks.ran == [("cleanup", "committed with its answer")]
    assert await stored_answers(container, call) == 1


async def test_an_idempotent_unit_rolled_back_by_finish_none_runs_no_hook(
    container: Container,
) -> None:
    """The answer failed to render (a 5xx): finish(None) rolls the effect back."""
    name = await new_model(container)
    hooks = Hooks(container, name)
    call = idempotent(container)
    uow = container.uow(ALICE, idempotency=call)
    async with uow:
        await describe(uow, name, "never committed")
        uow.after_commit(hooks.hook("cleanup"))
        await uow.commit()

    assert await uow.finish(None) is False

    assert hooks.ran == [] and await description(container, name) == ""
    assert await stored_answers(container, call) == 0
    # The lock is free again: another unit can change the model.
    async with container.uow(BOB) as other:
        await describe(other, name, "later")
        await other.commit()
    assert await description(container, name) == "later" and hooks.ran == []


async def test_an_idempotent_unit_whose_final_commit_fails_runs_no_hook(
    container: Container, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Storing the answer fails (the connection broke at that moment): nothing commits, and the
    hooks registered for the effect must not run."""
    name = await new_model(container)
    hooks = Hooks(container, name)
    call = idempotent(container)

    async def broken_store(*args: object) -> None:
        raise ConnectionResetError("the database connection broke")
    monkeypatch.setattr(call, "store", broken_store)
    uow = container.uow(ALICE, idempotency=call)
    async with uow:
        await describe(uow, name, "never committed")
        uow.after_commit(hooks.hook("cleanup"))
        await uow.commit()

    assert await uow.finish(ANSWER) is False

    assert hooks.ran == [] and await description(container, name) == ""


async def test_a_refused_idempotent_unit_runs_no_hook_when_its_refusal_is_stored(
    container: Container,
) -> None:
    """The block registered a cleanup, then was refused (a replayable 409): the effect is rolled
    back to the savepoint and only the refusal is stored by finish(). That COMMIT carries no
    effect, so a hook (deleting bytes a row still names) must not run."""
    name = await new_model(container)
    hooks = Hooks(container, name)
    call = idempotent(container)
    uow = container.uow(ALICE, idempotency=call)
    with pytest.raises(ConflictError):
        async with uow:
            await describe(uow, name, "rolled back to the savepoint")
            uow.after_commit(hooks.hook("cleanup"))
            raise ConflictError("refused after registering a cleanup")
    assert not uow.holds_effect

    assert await uow.finish(StoredResponse(409, {}, b'{"code":"conflict"}')) is True

    assert await stored_answers(container, call) == 1, "the refusal was not stored"
    assert await description(container, name) == ""
    assert hooks.ran == [], "a cleanup ran for an effect that was rolled back"
