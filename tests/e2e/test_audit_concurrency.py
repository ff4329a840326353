"""The audit log under concurrent writers, against a real server on both backends: verify never
reports a false break, the audit feed never leaves a hole in a chain, and token writes serialise
on the system chain (one revocation is recorded once; one principal's tokens never conflict)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import BACKENDS, unique
from tests.support import Server, server_for


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def srv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_for(backend, tmp_path_factory.mktemp(f"audit-conc-{backend}"),
                    workers=1 if backend == "sqlite" else 2) as s:
        yield s


def overlapping(*jobs: Callable[[], None]) -> None:
    """Run the jobs at once on threads (each with its own connections), re-raising failures."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], None]) -> None:
        try:
            start.wait()
            job()
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]


def client(srv: Server) -> httpx.Client:
    return httpx.Client(base_url=srv.api, headers=srv.headers, timeout=60)


def test_verify_never_reports_a_false_break_while_the_chain_grows(srv: Server) -> None:
    name = unique("busy")
    with client(srv) as c:
        assert c.post("/models", json={"name": name}).status_code == 201
    verdicts: list[dict] = []

    def writer(i: int) -> Callable[[], None]:
        def job() -> None:
            with client(srv) as c:
                for n in range(15):
                    r = c.patch(f"/models/{name}", json={"description": f"{i}-{n}"})
                    assert r.status_code == 200, r.text
        return job

    def verifier() -> None:
        with client(srv) as c:
            for _ in range(40):
                verdicts.append(c.get("/audit/verify", params={"model": name}).json())

    overlapping(writer(1), writer(2), writer(3), verifier, verifier)
    bad = [v for v in verdicts if not v["ok"]]
    assert len(verdicts) == 80 and bad == [], bad[:3]


def test_the_audit_feed_never_leaves_a_hole_in_a_chain(srv: Server) -> None:
    names = [unique("feed") for _ in range(4)]
    with client(srv) as c:
        for n in names:
            assert c.post("/models", json={"name": n}).status_code == 201
    seen: dict[str, list[int]] = defaultdict(list)
    writing = threading.Event()
    writing.set()

    def writer(name: str) -> Callable[[], None]:
        def job() -> None:
            with client(srv) as c:
                for n in range(20):
                    assert c.patch(f"/models/{name}", json={"description": str(n)}).status_code == 200
        return job

    def follower() -> None:
        with client(srv) as c:
            cursor = None
            for _ in range(200):  # page through while the writers write
                params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
                body = c.get("/audit", params=params).json()
                for e in body["items"]:
                    seen[e["chain"]].append(e["seq"])
                cursor = body["next_cursor"] or cursor
                if not body["next_cursor"] and not any(t.is_alive() for t in writers):
                    break

    writers = [threading.Thread(target=writer(n)) for n in names]
    for t in writers:
        t.start()
    overlapping(follower)
    for t in writers:
        t.join(120)
    assert seen, "the follower saw nothing"
    for chain, seqs in seen.items():
        # Re-reading the last page repeats entries; what must never happen is a hole.
        assert set(seqs) == set(range(1, max(seqs) + 1)), f"{chain}: a hole in {sorted(set(seqs))}"


def test_one_revocation_is_recorded_once_and_one_principals_tokens_never_conflict(srv: Server) -> None:
    principal = unique("team")
    statuses: list[int] = []

    def create(i: int) -> Callable[[], None]:
        def job() -> None:
            with client(srv) as c:
                statuses.append(c.post("/tokens", json={"name": f"t{i}", "role": "viewer",
                                                        "principal": principal}).status_code)
        return job

    overlapping(*(create(i) for i in range(8)))
    assert statuses == [201] * 8

    with client(srv) as c:
        victim = c.post("/tokens", json={"name": "victim", "role": "viewer"}).json()["id"]
    revokes: list[int] = []

    def revoke() -> None:
        with client(srv) as c:
            revokes.append(c.delete(f"/tokens/{victim}").status_code)

    overlapping(*([revoke] * 8))
    assert revokes == [204] * 8
    with client(srv) as c:
        entries = c.get("/audit", params={"action": "token.revoked", "limit": 1000}).json()["items"]
        system = [e for e in c.get("/audit", params={"limit": 1000}).json()["items"]
                  if e["chain"] == "system"]
    assert [e["before"]["id"] for e in entries].count(victim) == 1
    ats = [e["at"] for e in sorted(system, key=lambda e: e["seq"])]
    assert ats == sorted(ats), "system entries' times go backwards against their seq"
