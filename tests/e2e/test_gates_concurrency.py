"""Gates, approvals and Idempotency-Key under requests that truly overlap, against real
``python -m registry serve`` processes on loopback (two HTTP workers on PostgreSQL, one on SQLite).

Each overlapping request runs on a thread of its own with its own httpx client, whose connection
is opened before a barrier releases every thread at once. A test that needs one request to be
stuck inside its transaction holds the model's lock from a connection of its own: the row lock
(``SELECT ... FOR UPDATE``) on PostgreSQL, the database's write lock (``BEGIN IMMEDIATE``) on
SQLite. Every test ends with no 5xx answered and no traceback in the server's log.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.engine import create_engine, is_sqlite
from registry.adapters.db.idempotency import LOCK_SPACE
from tests.api.helpers import assert_problem, audit, create_model, register, seg
from tests.conftest import BACKENDS
from tests.support import Server, server_for

STAGE_CHANGED = "model_version.stage_changed"
REPLAYED = "idempotent-replayed"
PEOPLE = {"ci-a": "releaser", "ci-b": "releaser", "alice": "releaser", "bob": "releaser",
          "carol": "releaser", "dev": "editor"}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_for(backend, tmp_path_factory.mktemp(f"gates-conc-{backend}"),
                    workers=1 if backend == "sqlite" else 2) as s:
        yield s
    log = s.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def tokens(srv: Server) -> dict[str, str]:
    """A token per person: its own principal, with the role in PEOPLE."""
    secrets = {}
    with client(srv) as c:
        for name, role in PEOPLE.items():
            r = c.post("/tokens", json={"name": name, "role": role, "principal": name})
            assert r.status_code == 201, r.text
            secrets[name] = r.json()["token"]
    return secrets


def client(srv: Server, secret: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=srv.api, timeout=60,
                        headers={"Authorization": f"Bearer {secret or srv.token}"})


# -- requests at the same instant ---------------------------------------------------------------


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    secret: str | None = None
    key: str | None = None


@dataclass
class Answer:
    response: httpx.Response
    started: float
    ended: float

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def replayed(self) -> bool:
        return self.response.headers.get(REPLAYED) == "true"


def post(c: httpx.Client, call: Call) -> Answer:
    headers = {"Idempotency-Key": call.key} if call.key else {}
    started = time.perf_counter()
    r = c.post(call.path, json=call.body, headers=headers)
    return Answer(r, started, time.perf_counter())


def at_once(srv: Server, calls: list[Call]) -> list[Answer]:
    """POST every call at the same instant: one thread and one connection each, opened before a
    barrier lets them all go. Answers in the order of ``calls``; a 5xx fails the test."""
    barrier = threading.Barrier(len(calls))

    def one(call: Call) -> Answer:
        with client(srv, call.secret) as c:
            assert c.get(srv.url + "/healthz").status_code == 200  # the connection is open
            barrier.wait(10)
            return post(c, call)

    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(one, calls))
    assert_no_5xx(answers)
    return answers


def in_background(srv: Server, call: Call) -> Future[Answer]:
    """POST ``call`` on a thread of its own; the future holds its answer."""
    pool = ThreadPoolExecutor(1)
    c = client(srv, call.secret)

    def go() -> Answer:
        with c:
            return post(c, call)

    future = pool.submit(go)
    pool.shutdown(wait=False)
    return future


def assert_no_5xx(answers: list[Answer]) -> None:
    bad = [(a.status, a.response.text) for a in answers if a.status >= 500]
    assert not bad, f"server errors: {bad}"


def overlapped(answers: list[Answer]) -> bool:
    """Whether every request was in flight at one instant, as the client saw it."""
    return max(a.started for a in answers) < min(a.ended for a in answers)


# -- holding the model's lock from outside the server ----------------------------------------------


class HeldLock:
    """The model's write lock, held by a connection of the test's own in an open transaction
    until :meth:`release`: ``SELECT ... FOR UPDATE`` of its row on PostgreSQL, ``BEGIN
    IMMEDIATE`` (the database's one writer) on SQLite. The connections live on an event loop
    in a thread of their own, so the test's threads can go on sending requests."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.engine = create_engine(url, null_pool=True)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.conn: AsyncConnection | None = None

    def _do(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> HeldLock:
        self.thread.start()
        self._do(self._take())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
        self._do(self.engine.dispose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _take(self) -> None:
        self.conn = await self.engine.connect()
        await self.conn.begin()  # BEGIN IMMEDIATE on SQLite: the write lock is ours
        if not is_sqlite(self.url):
            locked = await self.conn.execute(text(
                "SELECT id FROM registered_models WHERE name = :name FOR UPDATE"), {"name": self.model})
            assert locked.first() is not None

    def release(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            self._do(conn.close())  # rolls back: the lock is free

    def scalar(self, sql: str) -> Any:
        """One value read on another connection, in autocommit (PostgreSQL)."""
        async def read() -> Any:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return (await conn.execute(text(sql))).scalar()
        return self._do(read())

    def wait_until_blocked_holding_a_key(self, timeout: float = 10.0) -> None:
        """PostgreSQL: until a server transaction waits for a row lock while holding an
        Idempotency-Key's advisory lock, i.e. it claimed the key and is stuck inside."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = self.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE '%registered_models%'")
            keys = self.scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                f"AND classid = {LOCK_SPACE} AND objsubid = 2 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())")
            if waiting >= 1 and keys >= 1:
                return
            time.sleep(0.02)
        pytest.fail("the keyed request never got stuck behind the model's lock")


# -- scenario steps --------------------------------------------------------------------------------


def transitions_path(name: str, version: int) -> str:
    return f"/models/{seg(name)}/versions/{version}/transitions"


def model_with(srv: Server, staging: int, production: bool = False,
               policy: dict[str, Any] | None = None) -> str:
    """A model whose version 1 is in production (when asked), and ``staging`` more in staging."""
    with client(srv) as c:
        name = create_model(c, "gc")
        if policy is not None:
            r = c.put(f"/models/{seg(name)}/policies/production", json=policy)
            assert r.status_code == 200, r.text
        register(c, name, count=staging + int(production))
        for v in range(1, staging + int(production) + 1):
            r = c.post(transitions_path(name, v), json={"to_stage": "staging"})
            assert r.status_code == 200, r.text
        if production:
            r = c.post(transitions_path(name, 1), json={"to_stage": "production"})
            assert r.status_code == 200, r.text
    return name


def stages(srv: Server, name: str) -> dict[int, str]:
    with client(srv) as c:
        r = c.get(f"/models/{seg(name)}/versions", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return {v["version"]: v["stage"] for v in r.json()["items"]}


def stage_changes(srv: Server, name: str) -> list[tuple[int, str, str]]:
    """(version, from, to) of every stage change in the model's audit chain, oldest first."""
    with client(srv) as c:
        return [(e["version"], e["before"]["stage"], e["after"]["stage"])
                for e in audit(c, name) if e["action"] == STAGE_CHANGED]


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


# -- 1, 2: a keyed retry while the first attempt is stuck inside its transaction -------------------


def test_a_retry_while_the_first_attempt_is_stuck_gets_409_at_once_then_replays(
    backend: str, srv: Server,
) -> None:
    """PostgreSQL: the first attempt claimed the key (its advisory lock) and waits for the
    model's row lock. SQLite: it waits for the database's write lock. Either way a retry is
    refused at once, not queued, and is not stored: once the first commits, it replays."""
    name = model_with(srv, staging=0)
    with client(srv) as c:
        register(c, name)
    call = Call(transitions_path(name, 1), {"to_stage": "staging", "comment": "ship"}, key=key())

    with HeldLock(srv.database_url, name) as lock:
        first = in_background(srv, call)
        if backend == "postgresql":
            lock.wait_until_blocked_holding_a_key()
        else:
            time.sleep(0.5)  # nothing outside the process shows where it waits
        assert not first.done(), "the first attempt must be stuck behind the lock"
        with client(srv) as c:
            c.timeout = httpx.Timeout(5.0)  # a retry that waited for the lock would hang here
            try:
                retry = post(c, call)
            except httpx.TimeoutException:
                pytest.fail("the retry waited for the first attempt instead of answering 409")
        assert not first.done(), "the first attempt must still be stuck behind the lock"
        held_for = time.perf_counter() - retry.started
        lock.release()
    assert retry.ended - retry.started < 2.0, "the retry waited instead of answering at once"
    assert_problem(retry.response, 409, "idempotency_in_progress")
    assert not retry.replayed

    original = first.result(30)
    assert original.status == 200, original.response.text
    assert original.ended - original.started >= held_for, "the first did wait for the lock"
    assert not original.replayed
    assert original.response.json()["version"]["stage"] == "staging"

    with client(srv) as c:
        third = post(c, call)
    assert third.status == 200 and third.replayed, third.response.text
    assert third.response.content == original.response.content
    assert third.response.headers["etag"] == original.response.headers["etag"]
    assert stage_changes(srv, name) == [(1, "none", "staging")]
    assert stages(srv, name) == {1: "staging"}


# -- 3: two pipelines promote different versions at the same instant -------------------------------


ROUNDS = 20


def test_conditional_promotions_of_two_versions_at_once_one_wins_the_other_gets_412(
    srv: Server, tokens: dict[str, str],
) -> None:
    overlaps = 0
    for _ in range(ROUNDS):
        name = model_with(srv, staging=2, production=True)  # 1 production; 2, 3 staging
        answers = at_once(srv, [
            Call(transitions_path(name, v), {"to_stage": "production",
                                             "expected_production_version": 1}, tokens[who])
            for v, who in ((2, "ci-a"), (3, "ci-b"))])
        overlaps += overlapped(answers)

        assert sorted(a.status for a in answers) == [200, 412], [a.response.text for a in answers]
        [won] = [a for a in answers if a.status == 200]
        [lost] = [a for a in answers if a.status == 412]
        assert_problem(lost.response, 412, "precondition_failed")
        winner = won.response.json()["version"]["version"]
        loser = 5 - winner
        assert won.response.json()["transition"]["archived"] == [1]
        assert stages(srv, name) == {1: "archived", winner: "production", loser: "staging"}
        moves = stage_changes(srv, name)[4:]  # after the setup's 3 stagings and 1 promotion
        assert moves == [(1, "production", "archived"), (winner, "staging", "production")]
    print(f"\n{overlaps} of {ROUNDS} rounds overlapped")
    assert overlaps >= ROUNDS // 2, f"only {overlaps} of {ROUNDS} rounds overlapped"


def test_unconditional_promotions_of_two_versions_at_once_both_succeed_in_turn(
    srv: Server, tokens: dict[str, str],
) -> None:
    for _ in range(ROUNDS // 2):
        name = model_with(srv, staging=2, production=True)
        answers = at_once(srv, [
            Call(transitions_path(name, v), {"to_stage": "production"}, tokens[who])
            for v, who in ((2, "ci-a"), (3, "ci-b"))])

        assert [a.status for a in answers] == [200, 200], [a.response.text for a in answers]
        archived = {a.response.json()["version"]["version"]: a.response.json()["transition"]["archived"]
                    for a in answers}
        [first] = [v for v, lst in archived.items() if lst == [1]]
        last = 5 - first
        assert archived[last] == [first], archived
        assert stages(srv, name) == {1: "archived", first: "archived", last: "production"}
        assert stage_changes(srv, name)[4:] == [
            (1, "production", "archived"), (first, "staging", "production"),
            (first, "production", "archived"), (last, "staging", "production")]


# -- 4: releasers approving one request at the same instant -----------------------------------------


def _requested(srv: Server, tokens: dict[str, str]) -> tuple[str, int]:
    """A staging version of a model whose production policy needs two approvals, and the
    editor's open request to promote it."""
    name = model_with(srv, staging=1, policy={"required_approvals": 2})
    with client(srv, tokens["dev"]) as c:
        r = c.post(f"/models/{seg(name)}/versions/1/transition-requests",
                   json={"to_stage": "production", "comment": "please"})
        assert r.status_code == 201, r.text
        return name, r.json()["id"]


def _request(srv: Server, request_id: int) -> dict[str, Any]:
    with client(srv) as c:
        r = c.get("/transition-requests", params={"limit": 1000})
        assert r.status_code == 200, r.text
        [found] = [q for q in r.json()["items"] if q["id"] == request_id]
        return found


def _approve(tokens: dict[str, str], who: str, request_id: int) -> Call:
    return Call(f"/transition-requests/{request_id}/approve", {"comment": f"ok from {who}"},
                tokens[who])


def test_two_releasers_approving_at_once_apply_the_move_exactly_once(
    srv: Server, tokens: dict[str, str],
) -> None:
    for _ in range(5):
        name, request_id = _requested(srv, tokens)
        answers = at_once(srv, [_approve(tokens, who, request_id) for who in ("alice", "bob")])

        assert [a.status for a in answers] == [200, 200], [a.response.text for a in answers]
        bodies = [a.response.json() for a in answers]
        assert sorted(b["applied"] for b in bodies) == [False, True], bodies
        [applied] = [b for b in bodies if b["applied"]]
        assert applied["version"]["stage"] == "production"
        assert applied["request"]["state"] == "applied"
        request = _request(srv, request_id)
        assert request["state"] == "applied"
        assert sorted(a["principal"] for a in request["approvals"]) == ["alice", "bob"]
        assert stages(srv, name) == {1: "production"}
        assert stage_changes(srv, name)[1:] == [(1, "staging", "production")]
        with client(srv) as c:
            [promoted] = [e for e in audit(c, name) if e["action"] == STAGE_CHANGED][1:]
        assert promoted["after"]["requested_by"] == "dev"
        assert sorted(promoted["after"]["approved_by"]) == ["alice", "bob"]


def test_three_releasers_approving_a_two_approver_request_at_once(
    srv: Server, tokens: dict[str, str],
) -> None:
    name, request_id = _requested(srv, tokens)
    answers = at_once(srv, [_approve(tokens, who, request_id) for who in ("alice", "bob", "carol")])

    assert Counter(a.status for a in answers) == Counter({200: 2, 409: 1}), \
        [a.response.text for a in answers]
    [late] = [a for a in answers if a.status == 409]
    assert_problem(late.response, 409, "conflict")
    assert sorted(a.response.json()["applied"] for a in answers if a.status == 200) == [False, True]
    assert _request(srv, request_id)["state"] == "applied"
    assert len(_request(srv, request_id)["approvals"]) == 2
    assert stage_changes(srv, name)[1:] == [(1, "staging", "production")]


# -- 5: many keyed retries of one POST at once -------------------------------------------------------


def test_eight_keyed_retries_at_once_make_one_effect(backend: str, srv: Server) -> None:
    """Each answer is the one 200 (the first, or replayed) or 409 idempotency_in_progress."""
    for _ in range(3):
        name = model_with(srv, staging=0)
        with client(srv) as c:
            register(c, name)
        call = Call(transitions_path(name, 1), {"to_stage": "staging"}, key=key())
        answers = at_once(srv, [call] * 8)

        ok = [a for a in answers if a.status == 200]
        print(f"\n[{backend}] 8 keyed retries: {Counter((a.status, a.replayed) for a in answers)}; "
              f"overlapped: {overlapped(answers)}")
        for a in answers:
            if a.status != 200:
                assert_problem(a.response, 409, "idempotency_in_progress")
        assert [a.replayed for a in ok].count(False) == 1, "exactly one answer is the original"
        assert len({a.response.content for a in ok}) == 1, "every 200 is the same answer"
        assert stage_changes(srv, name) == [(1, "none", "staging")]

        with client(srv) as c:  # afterwards, the key only replays
            later = post(c, call)
        assert later.status == 200 and later.replayed
        assert later.response.content == ok[0].response.content
        assert stage_changes(srv, name) == [(1, "none", "staging")]
