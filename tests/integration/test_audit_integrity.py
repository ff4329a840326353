"""The hash-chained audit log as stored: chains link from the genesis hash, the stored text is
the RFC 8785 text that was hashed, and verify finds rows edited or deleted in the database."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import pytest
import rfc8785
from sqlalchemy import select

from registry.adapters.db.tables import audit_t, chains_t, outbox_t, tokens_t
from registry.bootstrap import Container
from registry.services import audit
from registry.services.tokens import TOKEN_PREFIX, CreateToken, create_token, hash_token
from tests.integration.helpers import (
    ALICE,
    BOB,
    audit_rows,
    chain_of,
    move,
    new_model,
    reader,
    register,
)
from tests.support import tamper

ENTRY_KEYS = {"seq", "chain", "at", "actor", "request_id", "action", "model", "version", "before",
              "after", "prev_hash"}


async def _model_with_history(c: Container) -> str:
    """Five entries: created, two versions, a submit by bob, a promote by alice."""
    name = await new_model(c)
    await register(c, name, 2)
    await move(c, name, 1, "staging", actor=BOB)
    await move(c, name, 1, "production", comment="ship")
    return name


async def _verify(c: Container, name: str | None) -> audit.Verification:
    return await audit.verify_audit(name, c.uow(ALICE, write=False))


async def test_a_models_chain_links_from_genesis_with_canonical_text(container: Container) -> None:
    name = await _model_with_history(container)
    chain = await chain_of(container, name)
    rows = await audit_rows(container, chain)
    assert [r["action"] for r in rows] == [
        "model.created", "model_version.created", "model_version.created",
        "model_version.stage_changed", "model_version.stage_changed"]
    prev = "0" * 64
    for seq, row in enumerate(rows, start=1):
        entry = json.loads(row["canonical"])
        assert row["canonical"] == rfc8785.dumps(entry).decode(), "stored text is not JCS"
        assert set(entry) == ENTRY_KEYS, "the hashed entry is the entry without its hash"
        assert (row["seq"], entry["seq"]) == (seq, seq)
        assert row["prev_hash"] == entry["prev_hash"] == prev
        assert row["hash"] == hashlib.sha256(f"{prev}\n{row['canonical']}".encode()).hexdigest()
        assert (entry["chain"], entry["model"]) == (chain, name)
        assert (entry["actor"], entry["action"], entry["version"]) == (
            row["actor"], row["action"], row["version"])
        assert entry["at"].endswith("Z")
        assert datetime.fromisoformat(entry["at"]) == row["at"]
        prev = row["hash"]
    assert [json.loads(r["canonical"])["actor"] for r in rows] == [
        "alice", "alice", "alice", "bob", "alice"]
    promote = json.loads(rows[-1]["canonical"])
    assert (promote["before"], promote["after"]) == (
        {"stage": "staging"}, {"stage": "production", "trigger": "promote", "comment": "ship"})

    async with reader(container.engine).connect() as conn:
        head = (await conn.execute(select(chains_t).where(chains_t.c.id == chain))).one()
    assert (head.audit_seq, head.audit_hash) == (5, prev)
    assert await _verify(container, name) == audit.Verification(True, 5, None)


@pytest.mark.parametrize(("column", "sql"), [
    ("canonical", "UPDATE audit_log SET canonical = replace(canonical, '\"ship\"', '\"yolo\"') "
                  "WHERE chain = :chain AND seq = :seq"),
    ("actor", "UPDATE audit_log SET actor = 'mallory' WHERE chain = :chain AND seq = :seq"),
    ("version", "UPDATE audit_log SET version = 2 WHERE chain = :chain AND seq = :seq"),
])
async def test_verify_reports_a_row_edited_in_the_database(container: Container, column: str,
                                                           sql: str) -> None:
    name = await _model_with_history(container)
    other = await _model_with_history(container)
    chain = await chain_of(container, name)
    assert await tamper(container.settings.database_url, sql, chain=chain, seq=5) == [1]

    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_seq, verdict.first_bad_chain) == (False, 5, chain)
    assert verdict.checked == 5
    assert (await _verify(container, other)).ok, "another model's chain is unaffected"
    everything = await _verify(container, None)
    assert (everything.ok, everything.first_bad_chain, everything.first_bad_seq) == (False, chain, 5)


async def test_verify_reports_an_edit_in_the_middle_of_the_chain(container: Container) -> None:
    name = await _model_with_history(container)
    chain = await chain_of(container, name)
    assert await tamper(container.settings.database_url,
                        "UPDATE audit_log SET canonical = replace(canonical, '\"bob\"', "
                        "'\"alice\"') WHERE chain = :chain AND seq = 4", chain=chain) == [1]
    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_seq, verdict.checked) == (False, 4, 5)


async def test_a_rehashed_edit_breaks_the_link_to_the_next_row(container: Container) -> None:
    """Editing a row and recomputing its own hash keeps that row consistent, but the next row's
    prev_hash no longer matches: the chain is broken there."""
    name = await _model_with_history(container)
    chain = await chain_of(container, name)
    row = (await audit_rows(container, chain))[2]
    forged = row["canonical"].replace('"s3://bucket/', '"s3://evil/')
    assert forged != row["canonical"]
    assert await tamper(container.settings.database_url,
                        "UPDATE audit_log SET canonical = :text, hash = :hash "
                        "WHERE chain = :chain AND seq = 3", chain=chain, text=forged,
                        hash=audit.chain_hash(row["prev_hash"], forged)) == [1]
    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 4)


async def test_verify_reports_a_deleted_middle_row(container: Container) -> None:
    name = await _model_with_history(container)
    chain = await chain_of(container, name)
    assert await tamper(container.settings.database_url,
                        "DELETE FROM audit_log WHERE chain = :chain AND seq = 3", chain=chain) == [1]
    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_seq, verdict.checked) == (False, 4, 4)


@pytest.mark.parametrize("edit", [
    "at = at + INTERVAL '10 days'",
    "model = 'someone-else'",
    "request_id = 'forged'",
])
async def test_verify_reports_an_edited_column_that_filters_and_history_read(
    container: Container, backend: str, edit: str,
) -> None:
    """history?at= and the audit filters read these columns, so they must say what was hashed."""
    if backend == "sqlite" and edit.startswith("at"):
        edit = "at = '2099-01-01 00:00:00.000000'"
    name = await _model_with_history(container)
    chain = await chain_of(container, name)
    assert await tamper(container.settings.database_url,
                        f"UPDATE audit_log SET {edit} WHERE chain = :chain AND seq = 2", chain=chain) == [1]
    verdict = await _verify(container, name)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)


async def test_token_creation_is_audited_in_the_system_chain_without_the_secret(
    container: Container,
) -> None:
    name = await new_model(container)
    _, secret = await create_token(CreateToken("ci-bot", "editor"), container.uow(ALICE))
    given = "mrt_given_secret_0123456789abcdef"
    _, secret2 = await create_token(CreateToken("deployer", "releaser", principal="team-deploy"),
                                    container.uow(BOB), secret=given)
    assert secret2 == given
    assert secret.startswith(TOKEN_PREFIX)

    rows = await audit_rows(container, "system")
    assert [(r["seq"], r["action"], r["actor"], r["model"], r["version"]) for r in rows] == [
        (1, "token.created", "alice", None, None), (2, "token.created", "bob", None, None)]
    assert rows[0]["prev_hash"] == "0" * 64 and rows[1]["prev_hash"] == rows[0]["hash"]
    after = [json.loads(r["canonical"])["after"] for r in rows]
    assert [(a["name"], a["principal"], a["role"]) for a in after] == [
        ("ci-bot", "ci-bot", "editor"), ("deployer", "team-deploy", "releaser")]

    async with reader(container.engine).connect() as conn:
        every_audit_row = [tuple(r) for r in await conn.execute(select(audit_t))]
        every_event = [r._asdict() for r in await conn.execute(select(outbox_t))]
        tokens = {r.name: r for r in await conn.execute(select(tokens_t))}
    dump = repr(every_audit_row + every_event)
    for s in (secret, given):
        assert s not in dump and s[len(TOKEN_PREFIX):] not in dump
        assert hash_token(s) not in dump
    assert all(e["chain"] != "system" for e in every_event), "system changes are audit-only"
    assert tokens["ci-bot"].secret_hash == hash_token(secret)
    assert secret not in repr(tuple(tokens["ci-bot"]))

    verdict = await _verify(container, None)
    assert (verdict.ok, verdict.checked) == (True, 3)  # two tokens + the model's creation
    assert [r["action"] for r in await audit_rows(container, await chain_of(container, name))] == [
        "model.created"]
