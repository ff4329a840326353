"""A state change, its audit entries and its outbox events commit together or not at all.

Refused transitions (409 invalid_transition, 422 gate_failed, 412 precondition_failed) leave
every row as it was; a promotion writes version rows, audit entries and events in one commit; a
failure while committing rolls back the version rows it had already updated."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from registry.api.errors import status_of
from registry.bootstrap import Container
from registry.domain.errors import (
    ConflictError,
    GateFailedError,
    InvalidTransitionError,
    PreconditionFailedError,
    RegistryError,
)
from registry.services import audit, versions
from tests.integration.helpers import (
    ALICE,
    audit_rows,
    chain_of,
    execute,
    move,
    new_model,
    outbox_rows,
    register,
    snapshot,
    stages,
    to_production,
)


async def _setup(c: Container) -> str:
    """v1 archived (was production), v2 production, v3 staging, v4 none, v5 archived (never
    production)."""
    name = await new_model(c)
    await register(c, name, 5)
    await to_production(c, name, 1)
    await to_production(c, name, 2)
    await move(c, name, 3, "staging")
    await move(c, name, 5, "archived")
    assert await stages(c, name) == {1: "archived", 2: "production", 3: "staging", 4: "none",
                                     5: "archived"}
    return name


@dataclass(frozen=True)
class Refusal:
    error: type[RegistryError]
    status: int
    code: str
    attempt: Callable[[Container, str], Awaitable[Any]]
    check: Callable[[Any], bool] = lambda e: True


async def _stale_etag(c: Container, name: str) -> Any:
    v3 = await versions.get_model_version(name, 3, c.uow(ALICE, write=False))
    stale = f'"{v3.model_id}-3-{v3.revision - 1}"'
    return await move(c, name, 3, "production", if_match=stale)


REFUSALS = {
    "none-to-production": Refusal(
        InvalidTransitionError, 409, "invalid_transition",
        lambda c, n: move(c, n, 4, "production"),
        lambda e: sorted(e.allowed) == ["archived", "staging"]),
    "same-stage": Refusal(
        InvalidTransitionError, 409, "invalid_transition",
        lambda c, n: move(c, n, 3, "staging"),
        lambda e: sorted(e.allowed) == ["archived", "none", "production"]),
    "production-to-staging": Refusal(
        InvalidTransitionError, 409, "invalid_transition",
        lambda c, n: move(c, n, 2, "staging"),
        lambda e: e.allowed == ["archived"]),
    "rollback-without-comment": Refusal(
        GateFailedError, 422, "gate_failed",
        lambda c, n: move(c, n, 1, "production"),
        lambda e: e.failed == ["comment"]),
    "rollback-to-never-production": Refusal(
        GateFailedError, 422, "gate_failed",
        lambda c, n: move(c, n, 5, "production", comment="why not"),
        lambda e: e.failed == ["previous_production"]),
    "expected-stage-stale": Refusal(
        PreconditionFailedError, 412, "precondition_failed",
        lambda c, n: move(c, n, 3, "production", expected_stage="none")),
    "expected-production-stale": Refusal(
        PreconditionFailedError, 412, "precondition_failed",
        lambda c, n: move(c, n, 3, "production", expected_production_version=1)),
    "expected-no-production": Refusal(
        PreconditionFailedError, 412, "precondition_failed",
        lambda c, n: move(c, n, 3, "production", expected_production_version=None)),
    "if-match-stale": Refusal(
        PreconditionFailedError, 412, "precondition_failed", _stale_etag),
}


async def test_a_refused_transition_writes_nothing(container: Container) -> None:
    """Every kind of refusal against one registry; each must leave every row as it was (one
    database for all cases keeps the suite fast; the message names the case that failed)."""
    name = await _setup(container)
    before = await snapshot(container)
    for case, refusal in REFUSALS.items():
        with pytest.raises(refusal.error) as raised:
            await refusal.attempt(container, name)
        got = status_of(raised.value)[:2]
        assert got == (refusal.status, refusal.code), case
        assert refusal.check(raised.value), (case, raised.value.extensions())
        assert await snapshot(container) == before, f"{case}: a refused transition wrote rows"


async def test_a_promotion_commits_versions_audit_and_events_together(container: Container) -> None:
    name = await _setup(container)
    chain = await chain_of(container, name)
    before = await snapshot(container)
    audit_before, events_before = await audit_rows(container, chain), await outbox_rows(container, chain)

    result = await move(container, name, 3, "production", comment="go", expected_stage="staging",
                        expected_production_version=2)
    assert result.transition.archived == [2]

    after = await snapshot(container)
    assert (after.audit, after.outbox) == (before.audit + 2, before.outbox + 2)
    assert await stages(container, name) == {1: "archived", 2: "archived", 3: "production",
                                             4: "none", 5: "archived"}
    new_audit = (await audit_rows(container, chain))[len(audit_before):]
    new_events = (await outbox_rows(container, chain))[len(events_before):]
    assert [(r["action"], r["version"]) for r in new_audit] == [
        ("model_version.stage_changed", 2), ("model_version.stage_changed", 3)]
    assert [(e["type"], e["version"]) for e in new_events] == [
        ("model_version.stage_changed", 2), ("model_version.stage_changed", 3)]
    # One transaction: one timestamp, one request, the version rows stamped with it too.
    stamps = {r["at"] for r in new_audit} | {e["at"] for e in new_events}
    assert stamps == {result.version.updated_at}
    assert {r["request_id"] for r in new_audit + new_events} == {"req-alice"}
    changed = [a for a, b in zip(after.version_rows, before.version_rows, strict=True) if a != b]
    assert len(changed) == 2
    head_before = next(h for h in before.chain_heads if h[0] == chain)
    head_after = next(h for h in after.chain_heads if h[0] == chain)
    assert head_after != head_before
    assert [e["sequence"] for e in new_events] == [len(events_before) + 1, len(events_before) + 2]


async def test_a_failure_while_committing_rolls_back_the_state_change(container: Container) -> None:
    """Plant an outbox row where the promotion's second event will go: the commit's INSERT fails
    after the version rows and the audit entries were written, and all of it must roll back."""
    name = await _setup(container)
    chain = await chain_of(container, name)
    next_seq = len(await outbox_rows(container, chain)) + 1
    await execute(container, """
        INSERT INTO outbox_events (event_id, chain, sequence, type, model, actor, request_id, at,
                                   data)
        VALUES ('00000000-0000-0000-0000-000000000000', :chain, :seq, 'planted', :model, 'x',
                'x', CURRENT_TIMESTAMP, '{}')""", chain=chain, seq=next_seq + 1, model=name)
    before = await snapshot(container)

    with pytest.raises(ConflictError) as raised:
        await move(container, name, 3, "production")
    assert status_of(raised.value)[0] == 409
    assert await snapshot(container) == before
    assert (await stages(container, name))[2] == "production", "the incumbent's archive rolled back"

    await execute(container, "DELETE FROM outbox_events WHERE type = 'planted'")
    assert (await move(container, name, 3, "production")).transition.archived == [2]
    verdict = await audit.verify_audit(name, container.uow(ALICE, write=False))
    assert verdict.ok, verdict


async def test_a_registration_that_fails_at_commit_does_not_consume_its_number(
    container: Container,
) -> None:
    name = await new_model(container)
    await register(container, name)
    chain = await chain_of(container, name)
    await execute(container, """
        INSERT INTO outbox_events (event_id, chain, sequence, type, model, actor, request_id, at,
                                   data)
        VALUES ('00000000-0000-0000-0000-000000000001', :chain, 3, 'planted', :model, 'x', 'x',
                CURRENT_TIMESTAMP, '{}')""", chain=chain, model=name)
    before = await snapshot(container)
    with pytest.raises(ConflictError):
        await register(container, name)
    assert await snapshot(container) == before
    await execute(container, "DELETE FROM outbox_events WHERE type = 'planted'")
    assert [v.version for v in await register(container, name)] == [2]
