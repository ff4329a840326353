"""``Idempotency-Key`` on POST over HTTP, on both backends: a retry with the same key and body
gets the identical answer (``Idempotent-Replayed: true``) and writes nothing; another body is 422
``idempotency_conflict``; the key is scoped to (token, method, path); refusals are stored and
replayed, but not ``idempotency_in_progress``, database races or anything without the key; a
malformed key is 400; a key older than its time to live is forgotten.

"Writes nothing" is checked in the database: the row counts of every table a POST here can
write, the versions' stages and revisions, and every audit chain's head.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from registry.adapters.db.idempotency import LOCK_SPACE
from registry.adapters.db.tables import checks_t, idempotency_t, requests_t, tokens_t
from registry.services.idempotency import key_hash
from tests.api.helpers import (
    assert_problem,
    audit_t,
    chains_t,
    create_model,
    db_execute,
    db_rows,
    model_id,
    models_t,
    move,
    outbox_t,
    register,
    seg,
    versions_t,
)
from tests.support import Server, tamper_sync

REPLAYED = "idempotent-replayed"


def key() -> str:
    return f"key-{uuid.uuid4().hex}"


def post(c: httpx.Client, path: str, body: Any, idem: str | None = None,
         **headers: str) -> httpx.Response:
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return c.post(path, json=body, headers=headers)


def state(server: Server) -> tuple[Any, ...]:
    """Everything a POST of this module could write: row counts, version stages and revisions,
    request states and approvals, every chain's head, and the stored answers."""
    counted = (models_t, versions_t, audit_t, outbox_t, checks_t, requests_t, tokens_t, idempotency_t)
    counts = tuple(db_rows(server, select(func.count()).select_from(t))[0][0] for t in counted)
    versions = db_rows(server, select(versions_t.c.model_id, versions_t.c.version, versions_t.c.stage,
                                      versions_t.c.revision).order_by(versions_t.c.id))
    requests = db_rows(server, select(requests_t.c.id, requests_t.c.state, requests_t.c.approvals)
                       .order_by(requests_t.c.id))
    heads = db_rows(server, select(chains_t.c.id, chains_t.c.audit_seq, chains_t.c.audit_hash,
                                   chains_t.c.event_seq).order_by(chains_t.c.id))
    return counts, [tuple(v) for v in versions], [tuple(r) for r in requests], [tuple(h) for h in heads]


def assert_identical(first: httpx.Response, again: httpx.Response) -> None:
    """The replay is the first answer: status, body bytes and the headers that describe it."""
    assert again.status_code == first.status_code, again.text
    assert again.content == first.content
    assert again.headers.get(REPLAYED) == "true"
    assert REPLAYED not in first.headers
    for header in ("content-type", "etag", "location"):
        assert again.headers.get(header) == first.headers.get(header), header


# -- the tokens -------------------------------------------------------------------------------------


@dataclass
class Tokens:
    admin2: httpx.Client  # another unscoped admin: another token, same role
    editor: httpx.Client


@pytest.fixture(scope="module")
def tokens(server: Server, c: httpx.Client) -> Iterator[Tokens]:
    made = {}
    for label, role in (("admin2", "admin"), ("editor", "editor")):
        r = c.post("/tokens", json={"name": f"idem-{label}-{uuid.uuid4().hex[:6]}", "role": role})
        assert r.status_code == 201, r.text
        made[label] = httpx.Client(base_url=server.api, timeout=30.0,
                                   headers={"Authorization": f"Bearer {r.json()['token']}"})
    try:
        yield Tokens(made["admin2"], made["editor"])
    finally:
        for client in made.values():
            client.close()


# -- the operations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """A POST made ready by ``prepare`` (which returns its path, its body and another body for the
    same path), answering ``status``."""

    id: str
    prepare: Callable[[httpx.Client, Tokens], tuple[str, dict[str, Any], dict[str, Any]]]
    status: int


def _create_model(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = f"idem-new-{uuid.uuid4().hex[:8]}"
    return "/models", {"name": name}, {"name": name, "description": "another"}


def _register(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = create_model(c, "idem-reg")
    return f"/models/{seg(name)}/versions", {"source": "s3://b/one"}, {"source": "s3://b/two"}


def _transition(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = create_model(c, "idem-move")
    register(c, name)
    return (f"/models/{seg(name)}/versions/1/transitions", {"to_stage": "staging"},
            {"to_stage": "staging", "comment": "other"})


def _report(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = create_model(c, "idem-chk")
    register(c, name)
    return (f"/models/{seg(name)}/versions/1/checks", {"name": "ci", "status": "success"},
            {"name": "ci", "status": "failure"})


def _request(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = create_model(c, "idem-req")
    register(c, name)
    return (f"/models/{seg(name)}/versions/1/transition-requests", {"to_stage": "staging"},
            {"to_stage": "archived"})


def _approve(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = create_model(c, "idem-ok")
    register(c, name)
    move(c, name, 1, "staging")
    r = t.editor.post(f"/models/{seg(name)}/versions/1/transition-requests", json={"to_stage": "production"})
    assert r.status_code == 201, r.text
    return f"/transition-requests/{r.json()['id']}/approve", {"comment": "lgtm"}, {"comment": "meh"}


def _rollback(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = create_model(c, "idem-rb")
    register(c, name, 2)
    for v in (1, 2):
        move(c, name, v, "staging")
        move(c, name, v, "production")
    return f"/models/{seg(name)}/rollback", {"comment": "undo"}, {"comment": "undo it"}


def _token(c: httpx.Client, t: Tokens) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = f"idem-tok-{uuid.uuid4().hex[:8]}"
    return "/tokens", {"name": name, "role": "viewer"}, {"name": name, "role": "editor"}


OPS = [Op("createModel", _create_model, 201), Op("registerModelVersion", _register, 201),
       Op("transitionModelVersion", _transition, 200), Op("reportCheck", _report, 201),
       Op("requestTransition", _request, 201), Op("approveTransitionRequest", _approve, 200),
       Op("rollbackModel", _rollback, 200), Op("createToken", _token, 201)]
BY_ID = {op.id: op for op in OPS}


# -- replays ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS, ids=[op.id for op in OPS])
def test_a_retry_replays_the_answer_and_writes_nothing(server: Server, c: httpx.Client, tokens: Tokens,
                                                       op: Op) -> None:
    path, body, _ = op.prepare(c, tokens)
    idem = key()
    before = state(server)
    first = post(c, path, body, idem)
    assert first.status_code == op.status, first.text
    done = state(server)
    assert done != before
    assert done[0][-1] == before[0][-1] + 1   # one stored answer

    for _ in range(2):
        assert_identical(first, post(c, path, body, idem))
    assert state(server) == done


@pytest.mark.parametrize("op", OPS, ids=[op.id for op in OPS])
def test_the_same_key_with_another_body_is_422_and_writes_nothing(server: Server, c: httpx.Client,
                                                                  tokens: Tokens, op: Op) -> None:
    path, body, other = op.prepare(c, tokens)
    idem = key()
    first = post(c, path, body, idem)
    assert first.status_code == op.status, first.text
    done = state(server)
    assert_problem(post(c, path, other, idem), 422, "idempotency_conflict")
    assert state(server) == done
    # The stored answer stays the key's: the first body still replays it.
    assert_identical(first, post(c, path, body, idem))


def test_a_body_that_differs_only_in_spacing_is_another_body(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "idem-bytes")
    idem = key()
    path = f"/models/{seg(name)}/versions"
    first = c.post(path, content=b'{"source": "s3://b/m"}', headers={"Idempotency-Key": idem,
                                                                     "Content-Type": "application/json"})
    assert first.status_code == 201, first.text
    done = state(server)
    again = c.post(path, content=b'{"source":"s3://b/m"}', headers={"Idempotency-Key": idem,
                                                                    "Content-Type": "application/json"})
    assert_problem(again, 422, "idempotency_conflict")
    assert state(server) == done


def test_the_same_key_with_another_if_match_is_422(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "idem-ifmatch")
    register(c, name)
    etag = c.get(f"/models/{seg(name)}/versions/1").headers["etag"]
    path, body, idem = f"/models/{seg(name)}/versions/1/transitions", {"to_stage": "staging"}, key()
    first = post(c, path, body, idem, **{"If-Match": etag})
    assert first.status_code == 200, first.text
    done = state(server)
    assert_problem(post(c, path, body, idem, **{"If-Match": '"1-1-9"'}), 422, "idempotency_conflict")
    assert_problem(post(c, path, body, idem), 422, "idempotency_conflict")
    assert state(server) == done
    assert_identical(first, post(c, path, body, idem, **{"If-Match": etag}))


def test_a_stored_answer_keeps_no_secret_in_plain_text(server: Server, c: httpx.Client) -> None:
    idem = key()
    body = {"name": f"idem-secret-{uuid.uuid4().hex[:8]}", "role": "viewer"}
    first = post(c, "/tokens", body, idem)
    assert first.status_code == 201, first.text
    secret = first.json()["token"]
    stored = key_hash(server.headers["Authorization"], "POST", "/api/v1/tokens", idem)
    (row,) = db_rows(server, select(idempotency_t.c.body).where(idempotency_t.c.key_hash == stored))
    assert secret not in row.body and body["name"] not in row.body
    again = post(c, "/tokens", body, idem)
    assert_identical(first, again)
    assert again.json()["token"] == secret


def test_without_the_header_every_call_runs(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "idem-none")
    path = f"/models/{seg(name)}/versions"
    answers = [c.post(path, json={"source": "s3://b/m"}) for _ in range(2)]
    assert [(r.status_code, r.json()["version"]) for r in answers] == [(201, 1), (201, 2)]
    assert all(REPLAYED not in r.headers for r in answers)
    stored = db_rows(server, select(func.count()).select_from(idempotency_t))[0][0]
    c.post(path, json={"source": "s3://b/m"})
    assert db_rows(server, select(func.count()).select_from(idempotency_t))[0][0] == stored


# -- the key's scope --------------------------------------------------------------------------------


def test_the_same_key_from_another_token_runs_afresh(server: Server, c: httpx.Client, tokens: Tokens) -> None:
    name = create_model(c, "idem-token")
    path, idem, body = f"/models/{seg(name)}/versions", key(), {"source": "s3://b/m"}
    first = post(c, path, body, idem)
    other = post(tokens.admin2, path, body, idem)
    assert (first.status_code, other.status_code) == (201, 201), other.text
    assert (first.json()["version"], other.json()["version"]) == (1, 2)
    assert REPLAYED not in other.headers
    # Each token's own retry replays its own answer.
    assert_identical(first, post(c, path, body, idem))
    assert_identical(other, post(tokens.admin2, path, body, idem))


def test_the_same_key_on_another_path_runs_afresh(c: httpx.Client) -> None:
    a, b = create_model(c, "idem-path-a"), create_model(c, "idem-path-b")
    idem, body = key(), {"source": "s3://b/m"}
    first = post(c, f"/models/{seg(a)}/versions", body, idem)
    second = post(c, f"/models/{seg(b)}/versions", body, idem)
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert (first.json()["model"], second.json()["model"]) == (a, b)
    assert REPLAYED not in second.headers


def test_the_key_does_not_apply_to_other_methods(c: httpx.Client) -> None:
    """PUT is idempotent by itself: the header changes nothing, another body is applied."""
    name = create_model(c, "idem-put")
    idem = key()
    first = c.put(f"/models/{seg(name)}/policies/production", json={"required_approvals": 1},
                  headers={"Idempotency-Key": idem})
    second = c.put(f"/models/{seg(name)}/policies/production", json={"required_approvals": 2},
                   headers={"Idempotency-Key": idem})
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert second.json()["rules"]["required_approvals"] == 2
    assert REPLAYED not in second.headers


# -- refusals ---------------------------------------------------------------------------------------


def _gate_refusal(c: httpx.Client) -> tuple[str, dict[str, Any], int, str, Callable[[], None]]:
    """A 422 gate_failed, then the missing check is reported: afresh, the move would pass."""
    name = create_model(c, "idem-gate")
    register(c, name)
    move(c, name, 1, "staging")
    assert c.put(f"/models/{seg(name)}/policies/production", json={"required_checks": ["ci"]}).status_code == 200

    def fix() -> None:
        r = c.post(f"/models/{seg(name)}/versions/1/checks", json={"name": "ci", "status": "success"})
        assert r.status_code == 201, r.text
    return f"/models/{seg(name)}/versions/1/transitions", {"to_stage": "production"}, 422, "gate_failed", fix


def _stale_refusal(c: httpx.Client) -> tuple[str, dict[str, Any], int, str, Callable[[], None]]:
    """A 412 for a stale expected_stage, then the version reaches that stage."""
    name = create_model(c, "idem-stale")
    register(c, name)

    def fix() -> None:
        move(c, name, 1, "staging")
    return (f"/models/{seg(name)}/versions/1/transitions", {"to_stage": "production", "expected_stage": "staging"},
            412, "precondition_failed", fix)


def _conflict_refusal(c: httpx.Client) -> tuple[str, dict[str, Any], int, str, Callable[[], None]]:
    """A 409 for an open request of the same move, then that request is cancelled."""
    name = create_model(c, "idem-open")
    register(c, name)
    r = c.post(f"/models/{seg(name)}/versions/1/transition-requests", json={"to_stage": "staging"})
    assert r.status_code == 201, r.text

    def fix() -> None:
        assert c.post(f"/transition-requests/{r.json()['id']}/cancel", json={}).status_code == 200
    return f"/models/{seg(name)}/versions/1/transition-requests", {"to_stage": "staging"}, 409, "conflict", fix


def _missing_refusal(c: httpx.Client) -> tuple[str, dict[str, Any], int, str, Callable[[], None]]:
    """A 404 for a version not registered yet, then it is."""
    name = create_model(c, "idem-404")

    def fix() -> None:
        register(c, name)
    return f"/models/{seg(name)}/versions/1/checks", {"name": "ci", "status": "success"}, 404, "not_found", fix


REFUSALS = {"gate_failed": _gate_refusal, "precondition_failed": _stale_refusal, "conflict": _conflict_refusal,
            "not_found": _missing_refusal}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refusal_is_stored_and_replayed_even_once_the_call_would_pass(server: Server, c: httpx.Client,
                                                                        refusal: str) -> None:
    path, body, status, code, fix = REFUSALS[refusal](c)
    idem = key()
    first = post(c, path, body, idem)
    assert_problem(first, status, code)
    fix()
    done = state(server)
    assert_identical(first, post(c, path, body, idem))
    assert state(server) == done
    fresh = post(c, path, body, key())
    assert 200 <= fresh.status_code < 300, fresh.text


def test_a_refusal_of_the_role_is_replayed(server: Server, c: httpx.Client, tokens: Tokens) -> None:
    name = create_model(c, "idem-403")
    register(c, name)
    move(c, name, 1, "staging")
    path, body, idem = f"/models/{seg(name)}/versions/1/transitions", {"to_stage": "production"}, key()
    first = post(tokens.editor, path, body, idem)
    assert_problem(first, 403, "forbidden")
    done = state(server)
    assert_identical(first, post(tokens.editor, path, body, idem))
    assert state(server) == done


def test_a_database_race_409_is_not_stored(server: Server, c: httpx.Client) -> None:
    """The version counter is set back, so the next registration collides with version 1 in the
    database (the unique constraint, as a concurrent writer would); the retry runs afresh."""
    name = create_model(c, "idem-race")
    register(c, name)
    mid = model_id(server, name)
    assert db_execute(server, update(models_t).where(models_t.c.id == mid).values(last_version=0)) == 1
    path, body, idem = f"/models/{seg(name)}/versions", {"source": "s3://b/m"}, key()
    before = state(server)
    first = post(c, path, body, idem)
    assert_problem(first, 409, "conflict")
    assert state(server) == before   # nothing, not even the answer, was stored
    assert db_execute(server, update(models_t).where(models_t.c.id == mid).values(last_version=1)) == 1
    again = post(c, path, body, idem)
    assert again.status_code == 201, again.text
    assert again.json()["version"] == 2 and REPLAYED not in again.headers
    assert_identical(again, post(c, path, body, idem))


# -- keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["k" * 256, "a b", "tab\tkey", b"caf\xe9"],
                         ids=["256-chars", "space", "tab", "latin-1"])
def test_a_malformed_key_is_400_and_the_call_does_not_run(server: Server, c: httpx.Client,
                                                         value: str | bytes) -> None:
    name = create_model(c, "idem-badkey")
    before = state(server)
    r = c.post(f"/models/{seg(name)}/versions", json={"source": "s3://b/m"},
               headers={"Idempotency-Key": value})
    problem = assert_problem(r, 400, "validation_error")
    assert "Idempotency-Key" in problem["detail"]
    assert state(server) == before


def test_an_empty_key_is_400(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "idem-empty")
    before = state(server)
    r = c.post(f"/models/{seg(name)}/versions", json={"source": "s3://b/m"}, headers={"Idempotency-Key": ""})
    assert_problem(r, 400, "validation_error")
    assert state(server) == before


def test_a_key_of_255_visible_characters_is_accepted(c: httpx.Client) -> None:
    name = create_model(c, "idem-longkey")
    idem = "~" + "".join(chr(33 + i % 94) for i in range(254))
    first = post(c, f"/models/{seg(name)}/versions", {"source": "s3://b/m"}, idem)
    assert first.status_code == 201, first.text
    assert_identical(first, post(c, f"/models/{seg(name)}/versions", {"source": "s3://b/m"}, idem))


def test_a_key_past_its_time_to_live_is_forgotten_and_replaced(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "idem-ttl")
    path, body, idem = f"/models/{seg(name)}/versions", {"source": "s3://b/m"}, key()
    first = post(c, path, body, idem)
    assert first.status_code == 201, first.text
    stored = key_hash(server.headers["Authorization"], "POST", f"/api/v1/models/{name}/versions", idem)
    aged = datetime.now(UTC) - timedelta(days=2)
    assert tamper_sync(server.database_url, update(idempotency_t).where(
        idempotency_t.c.key_hash == stored).values(created_at=aged)) == [1]

    again = post(c, path, body, idem)
    assert again.status_code == 201, again.text
    assert (again.json()["version"], REPLAYED in again.headers) == (2, False)
    # The new answer replaced the old one: it is what the key replays now.
    assert_identical(again, post(c, path, body, idem))
    rows = db_rows(server, select(idempotency_t.c.created_at).where(idempotency_t.c.key_hash == stored))
    assert len(rows) == 1 and rows[0].created_at > aged + timedelta(days=1)


def test_a_key_within_its_time_to_live_is_still_replayed(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "idem-fresh")
    path, body, idem = f"/models/{seg(name)}/versions", {"source": "s3://b/m"}, key()
    first = post(c, path, body, idem)
    stored = key_hash(server.headers["Authorization"], "POST", f"/api/v1/models/{name}/versions", idem)
    assert tamper_sync(server.database_url, update(idempotency_t).where(
        idempotency_t.c.key_hash == stored).values(created_at=datetime.now(UTC) - timedelta(hours=23))) == [1]
    assert_identical(first, post(c, path, body, idem))


# -- concurrent retries -----------------------------------------------------------------------------


def test_concurrent_retries_make_one_effect(server: Server, c: httpx.Client) -> None:
    """Retries racing the first call: each gets the first call's answer or 409
    idempotency_in_progress, and one effect is made."""
    name = create_model(c, "idem-race-many")
    path, body, idem = f"/models/{seg(name)}/versions", {"source": "s3://b/m"}, key()
    start = threading.Barrier(6)

    def call(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.api, headers=server.headers, timeout=30.0) as client:
            start.wait()
            return post(client, path, body, idem)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    created = [r for r in answers if r.status_code == 201]
    originals = [r for r in created if REPLAYED not in r.headers]
    assert len(originals) == 1, [(r.status_code, r.headers.get(REPLAYED)) for r in answers]
    for r in created:
        assert r.content == originals[0].content
    for r in answers:
        if r.status_code != 201:
            assert_problem(r, 409, "idempotency_in_progress")
    versions = c.get(f"/models/{seg(name)}/versions").json()["items"]
    assert [v["version"] for v in versions] == [1]


@contextmanager
def advisory_lock(server: Server, space: int, lock: int) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock (space, lock) on a connection of its own, as a first call
    that is still running would."""
    dsn = make_url(server.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    conn = run(asyncpg.connect(dsn))
    try:
        run(conn.execute("SELECT pg_advisory_lock($1, $2)", space, lock))
        yield
    finally:
        run(conn.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_a_call_while_the_key_is_held_is_409_in_progress_and_not_stored(
        server: Server, server_backend: str, c: httpx.Client) -> None:
    if server_backend != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's (a SQLite server holds running keys in memory)")
    name = create_model(c, "idem-held")
    path, body, idem = f"/models/{seg(name)}/versions", {"source": "s3://b/m"}, key()
    stored = key_hash(server.headers["Authorization"], "POST", f"/api/v1/models/{name}/versions", idem)
    before = state(server)
    with advisory_lock(server, LOCK_SPACE, int(stored[:8], 16) - 2**31):
        held = post(c, path, body, idem)
        assert_problem(held, 409, "idempotency_in_progress")
        assert state(server) == before
    first = post(c, path, body, idem)
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    assert_identical(first, post(c, path, body, idem))
