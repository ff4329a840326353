"""Concurrent writers against a real ``python -m registry serve`` process on loopback.

Each round gives every request its own connection and writes its headers, holds every body on one
``asyncio.Event`` gate, and opens the gate once all of them are parked there, so the bodies reach the
server within a few milliseconds. It then asserts that the requests really overlapped: as the client
saw them (from the last byte sent to the whole response read) and inside the server (from the access
log's end time and duration). A client with a pool of one connection, or a server that took one
connection at a time, never gets every request to the gate and fails the round.

PostgreSQL runs the server with two HTTP workers; SQLite with its one (writes serialise there).
The end state must be the same on both, and no response may be a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import audit_t, chains_t, models_t, outbox_t, versions_t
from tests.conftest import BACKENDS, unique
from tests.support import Server, max_in_flight, request_interval, server_for

STAGE_CHANGED = "model_version.stage_changed"


# ``backend`` at module scope, so each backend's server is started once for the whole module; the
# parameter keeps its name, so conftest's per-backend counters count these tests.
@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"concurrency-{backend}")
    with server_for(backend, tmp, workers=1 if backend == "sqlite" else 2) as srv:
        yield srv


# --- one round of overlapping requests --------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    body: dict[str, Any]
    request_id: str = field(default_factory=lambda: f"conc-{uuid.uuid4().hex}")
    sent: float = 0.0  # perf_counter when the whole request had been written to the socket
    done: float = 0.0  # perf_counter when the whole response had been read
    response: httpx.Response | None = None


@dataclass
class Round:
    label: str
    calls: list[Call]
    wall: float
    server_max_in_flight: int = 0

    @property
    def responses(self) -> list[httpx.Response]:
        return [c.response for c in self.calls if c.response is not None]

    @property
    def statuses(self) -> Counter[int]:
        return Counter(r.status_code for r in self.responses)

    @property
    def client_max_in_flight(self) -> int:
        """Requests fully sent and not yet answered, at the busiest instant."""
        return max_in_flight([(c.sent, c.done) for c in self.calls])

    def report(self, backend: str) -> None:
        n = len(self.calls)
        spread = max(c.sent for c in self.calls) - min(c.sent for c in self.calls)
        print(f"\n[{backend}] {self.label}: {n} requests; max in flight {self.client_max_in_flight} "
              f"(client: sent, unanswered) / {self.server_max_in_flight} (server access log); "
              f"all sent within {spread * 1000:.1f} ms; wall {self.wall * 1000:.1f} ms; "
              f"{n / self.wall:.0f} requests/s; statuses {dict(sorted(self.statuses.items()))}")


def client(server: Server, connections: int = 4) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=server.api, headers=server.headers, limits=limits,
                             timeout=httpx.Timeout(60.0))


async def fire(server: Server, label: str, calls: list[Call]) -> Round:
    """Send every call at once, on its own connection.

    Each request connects and writes its headers, then its body waits on one gate; when every
    request is parked there, the gate opens and the bodies go out together. Building an httpx
    request costs about a millisecond of client CPU, which would otherwise spread 50 requests over
    longer than the server takes to answer the first ones.
    """
    n = len(calls)
    everyone_parked = asyncio.Event()
    gate = asyncio.Event()
    parked = 0

    async def held_body(call: Call, payload: bytes) -> AsyncIterator[bytes]:
        nonlocal parked
        parked += 1
        if parked == n:
            everyone_parked.set()
        await gate.wait()
        yield payload

    async def one(http: httpx.AsyncClient, call: Call) -> None:
        async def trace(event: str, _info: dict[str, Any]) -> None:
            if event == "http11.send_request_body.complete":
                call.sent = time.perf_counter()

        payload = json.dumps(call.body).encode()
        call.response = await http.request(
            call.method, call.path, content=held_body(call, payload),
            headers={"Content-Type": "application/json", "Content-Length": str(len(payload)),
                     "X-Request-ID": call.request_id},
            extensions={"trace": trace},
        )
        call.done = time.perf_counter()

    async with client(server, n) as http:
        tasks = [asyncio.create_task(one(http, c)) for c in calls]
        ready = asyncio.create_task(everyone_parked.wait())
        await asyncio.wait([ready, *tasks], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            for t in (ready, *tasks):
                t.cancel()
            errors = [r for r in await asyncio.gather(*tasks, return_exceptions=True)
                      if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
            pytest.fail(f"{label}: only {parked} of {n} requests got their headers to the server "
                        f"(a client or server that serialises connections stops here); {errors!r}")
        started = time.perf_counter()
        gate.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    rnd = Round(label, calls, wall)
    rnd.server_max_in_flight = await server_overlap(server, {c.request_id for c in calls})
    return rnd


async def server_overlap(server: Server, request_ids: set[str]) -> int:
    """Max requests in flight inside the server (headers received to response sent), from its
    access lines: each carries its end time and duration. A line is written just after its
    response, so wait a little for the last ones."""
    deadline = time.monotonic() + 10
    while True:
        intervals = []
        for line in read_log(server):
            if line.get("event") == "request" and line.get("request_id") in request_ids:
                intervals.append(request_interval(line))
        if len(intervals) == len(request_ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(intervals) == len(request_ids), "access lines are missing from the server log"
    return max_in_flight(intervals)


def read_log(server: Server) -> list[dict[str, Any]]:
    lines = []
    for raw in server.log.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"event": raw})
    return lines


def assert_no_server_error(server: Server, *rounds: Round) -> None:
    for rnd in rounds:
        bad = [(r.status_code, r.text) for r in rnd.responses if r.status_code >= 500]
        assert not bad, f"{rnd.label}: server errors {bad}"
        assert len(rnd.responses) == len(rnd.calls)
    log = server.log.read_text(errors="replace")
    for needle in ("Traceback", "database is locked", '"level": "error"', '"status": 5'):
        assert needle not in log, f"{needle!r} in the server log:\n{log[-4000:]}"


def assert_overlapped(rnd: Round, at_least: int) -> None:
    assert rnd.client_max_in_flight >= at_least, (
        f"{rnd.label}: only {rnd.client_max_in_flight} requests were in flight at once on the wire")
    assert rnd.server_max_in_flight >= at_least, (
        f"{rnd.label}: only {rnd.server_max_in_flight} requests were in flight at once in the server")


# --- direct database reads --------------------------------------------------------------------


async def db_query(url: str, stmt: Any) -> list[Any]:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(stmt)).all())
    finally:
        await engine.dispose()


async def chain_of(url: str, name: str) -> tuple[str, int, int]:
    """The model's audit chain id and its current audit and event sequence heads."""
    stmt = (select(chains_t.c.id, chains_t.c.audit_seq, chains_t.c.event_seq)
            .join(models_t, models_t.c.id == chains_t.c.model_id).where(models_t.c.name == name))
    [(chain, audit_seq, event_seq)] = await db_query(url, stmt)
    return chain, audit_seq, event_seq


async def no_5xx(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    """A preparation or check request; a 5xx fails the test there and then."""
    r = await http.request(method, path, **kw)
    assert r.status_code < 500, r.text
    return r


# --- the scenarios ----------------------------------------------------------------------------


async def test_50_concurrent_registrations_get_versions_1_to_50(backend: str, server: Server) -> None:
    name = unique("conc-reg")
    async with client(server) as http:
        assert (await no_5xx(http, "POST", "/models", json={"name": name})).status_code == 201

    rnd = await fire(server, "50 concurrent registrations", [
        Call("POST", f"/models/{name}/versions", {"source": f"s3://b/{name}/{i}", "run_id": f"run-{i}"})
        for i in range(50)
    ])
    rnd.report(backend)

    assert_no_server_error(server, rnd)
    assert rnd.statuses == Counter({201: 50}), [r.text for r in rnd.responses if r.status_code != 201]
    assert sorted(r.json()["version"] for r in rnd.responses) == list(range(1, 51))
    assert all(r.json()["stage"] == "none" for r in rnd.responses)
    # Every request got its own version: the run ids come back one per number.
    assert len({r.json()["run_id"] for r in rnd.responses}) == 50
    assert_overlapped(rnd, at_least=10)

    rows = await db_query(server.database_url, select(versions_t.c.version)
                          .join(models_t, models_t.c.id == versions_t.c.model_id)
                          .where(models_t.c.name == name))
    assert sorted(v for (v,) in rows) == list(range(1, 51))
    [(last,)] = await db_query(server.database_url,
                               select(models_t.c.last_version).where(models_t.c.name == name))
    assert last == 50
    chain, audit_seq, event_seq = await chain_of(server.database_url, name)
    # model.created + 50 model_version.created, in both the audit chain and the event sequence.
    assert (audit_seq, event_seq) == (51, 51)
    async with client(server) as http:
        verify = (await no_5xx(http, "GET", "/audit/verify", params={"model": name})).json()
    assert verify["ok"] is True and verify["checked"] == 51, verify


async def test_20_concurrent_promotions_leave_one_production_version(backend: str,
                                                                     server: Server) -> None:
    name = unique("conc-promote")
    n = 20
    async with client(server) as http:
        assert (await no_5xx(http, "POST", "/models", json={"name": name})).status_code == 201
        for _ in range(n):
            r = await no_5xx(http, "POST", f"/models/{name}/versions", json={"source": "s3://b/m"})
            assert r.status_code == 201, r.text
        for v in range(1, n + 1):
            r = await no_5xx(http, "POST", f"/models/{name}/versions/{v}/transitions",
                             json={"to_stage": "staging"})
            assert r.status_code == 200, r.text
    url = server.database_url
    chain, audit_start, event_start = await chain_of(url, name)
    assert (audit_start, event_start) == (1 + 2 * n, 1 + 2 * n)

    rnd = await fire(server, "20 concurrent promotions", [
        Call("POST", f"/models/{name}/versions/{v}/transitions",
             {"to_stage": "production", "comment": f"promote {v}"})
        for v in range(1, n + 1)
    ])
    rnd.report(backend)

    assert_no_server_error(server, rnd)
    assert rnd.statuses == Counter({200: n}), [r.text for r in rnd.responses if r.status_code != 200]
    bodies = [r.json() for r in rnd.responses]
    assert all(b["version"]["stage"] == "production" and b["transition"]["from_stage"] == "staging"
               and b["transition"]["to_stage"] == "production" for b in bodies)
    assert_overlapped(rnd, at_least=5)

    # Exactly one production version, through the API and in the database.
    async with client(server) as http:
        prod = (await no_5xx(http, "GET", f"/models/{name}/stages/production")).json()["items"]
        verify = (await no_5xx(http, "GET", "/audit/verify", params={"model": name})).json()
    assert len(prod) == 1
    final = prod[0]["version"]
    rows = await db_query(url, select(versions_t.c.version, versions_t.c.stage)
                          .join(models_t, models_t.c.id == versions_t.c.model_id)
                          .where(models_t.c.name == name))
    others = sorted(set(range(1, n + 1)) - {final})
    stages = dict(rows)
    assert [v for v, s in stages.items() if s == "production"] == [final]
    assert sorted(v for v, s in stages.items() if s == "archived") == others

    # The archived lists chain into one succession: first promoted (displacing nobody) -> ... -> final.
    archived_by = {b["version"]["version"]: b["transition"]["archived"] for b in bodies}
    displaced = [v for lst in archived_by.values() for v in lst]
    assert all(len(lst) <= 1 for lst in archived_by.values()), archived_by
    assert sorted(displaced) == others, archived_by
    successor = {lst[0]: v for v, lst in archived_by.items() if lst}
    [first] = [v for v, lst in archived_by.items() if not lst]
    succession = [first]
    while succession[-1] in successor:
        succession.append(successor[succession[-1]])
    assert len(succession) == n and succession[-1] == final, (succession, archived_by)

    # Exactly 20 + 19 stage changes in the audit chain and in the events of this round, in the
    # order of the succession, with nothing else written.
    audit = await db_query(url, select(audit_t.c.seq, audit_t.c.action, audit_t.c.version,
                                       audit_t.c.canonical)
                           .where(audit_t.c.chain == chain, audit_t.c.seq > audit_start)
                           .order_by(audit_t.c.seq))
    assert [seq for seq, *_ in audit] == list(range(audit_start + 1, audit_start + 2 * n))
    assert {action for _, action, _, _ in audit} == {STAGE_CHANGED}
    moves = []
    for _, _, version, text in audit:
        entry = json.loads(text)
        moves.append((version, entry["before"]["stage"], entry["after"]["stage"]))
    assert Counter((f, t) for _, f, t in moves) == Counter({("staging", "production"): n,
                                                            ("production", "archived"): n - 1})
    assert [v for v, f, t in moves if t == "production"] == succession
    assert [v for v, f, t in moves if t == "archived"] == succession[:-1]

    events = await db_query(url, select(outbox_t.c.sequence, outbox_t.c.type, outbox_t.c.version,
                                        outbox_t.c.data)
                            .where(outbox_t.c.chain == chain, outbox_t.c.sequence > event_start)
                            .order_by(outbox_t.c.sequence))
    assert [seq for seq, *_ in events] == list(range(event_start + 1, event_start + 2 * n))
    assert {t for _, t, _, _ in events} == {STAGE_CHANGED}
    assert Counter((d["from_stage"], d["to_stage"]) for *_, d in events) == Counter(
        {("staging", "production"): n, ("production", "archived"): n - 1})
    assert [v for _, _, v, d in events if d["to_stage"] == "production"] == succession

    assert verify["ok"] is True and verify["checked"] == 1 + 2 * n + 2 * n - 1, verify


async def test_10_concurrent_creations_of_one_name_give_one_201(backend: str, server: Server) -> None:
    name = unique("conc-create")

    rnd = await fire(server, "10 concurrent creations of one name", [
        Call("POST", "/models", {"name": name, "description": f"attempt {i}"}) for i in range(10)
    ])
    rnd.report(backend)

    assert_no_server_error(server, rnd)
    assert rnd.statuses == Counter({201: 1, 409: 9}), [r.text for r in rnd.responses]
    assert {r.json()["code"] for r in rnd.responses if r.status_code == 409} == {"already_exists"}
    assert_overlapped(rnd, at_least=5)
    rows = await db_query(server.database_url, select(func.count()).select_from(models_t)
                          .where(models_t.c.name == name))
    assert rows == [(1,)]
    chain, audit_seq, event_seq = await chain_of(server.database_url, name)
    assert (audit_seq, event_seq) == (1, 1)
