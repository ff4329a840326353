"""Webhook delivery end to end: real ``python -m registry serve`` / ``worker`` processes, a real
receiver on loopback (``tests.e2e.receivers``) that verifies every signature with
``standardwebhooks``, real sockets throughout.

What is proved, on SQLite and PostgreSQL unless marked:

- fan-out: 200 transitions on 5 models, driven concurrently, reach 3 subscribers (``*``,
  ``model_version.*``, ``*`` for some models) each exactly once, per model in sequence order, with
  the pull feed's event as the body; commit-to-receipt latency is printed (p50, p99);
- a receiver whose port is closed for a while gets everything once it is back;
- a worker process killed with SIGKILL mid-delivery loses nothing when restarted, and whatever
  it sends twice goes under the same ``webhook-id`` (only what was in flight at the kill);
- (PostgreSQL) two worker processes at once never deliver an event twice, nor a model's events
  out of order; a relay stalled on one event (another worker's, played by the test) does not let
  the model's later events overtake it;
- 410 disables the subscription (and says so to a ``webhook.*`` subscriber), 429 honours
  ``Retry-After``, a 302 is a failure that is not followed, a slow receiver times out without
  holding up the others;
- a rotated secret signs alongside the new one during the overlap, and not at all without one;
- without ``REGISTRY_WEBHOOK_ALLOW_PRIVATE`` loopback, private, link-local and metadata targets
  are refused when saved.

Timings are shortened through the environment (``WEBHOOK_ENV``); every wait is a poll with a
deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import outbox_t
from tests.api.helpers import api_client, create_model, events, media_type, move, pages, register
from tests.conftest import BACKENDS, unique
from tests.e2e.receivers import OK, Endpoint, Received, Receiver, Reply, poll
from tests.support import REPO, Server, server_for

log = logging.getLogger("tests.e2e.webhooks")

TIMEOUT = 2.0  # REGISTRY_WEBHOOK_TIMEOUT
LEASE = 4.0  # REGISTRY_WEBHOOK_LEASE
# Long enough (about 8 s of retries) to ride out a receiver that is down for a couple of seconds.
SCHEDULE = "0,0.2,0.5,1,1,1,1,1,1,1"
WEBHOOK_ENV = {
    "REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true",
    "REGISTRY_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
    "REGISTRY_WEBHOOK_TIMEOUT": str(TIMEOUT),
    "REGISTRY_WEBHOOK_LEASE": str(LEASE),
    "REGISTRY_WORKER_POLL_INTERVAL": "0.2",
}
API_ONLY = {**WEBHOOK_ENV, "REGISTRY_RUN_WORKERS": "false"}
# What URL checks refuse: 400 validation_error, like every other refused input (DESIGN.md).
UNSAFE_URL_STATUS = 400


# ``backend`` at module scope, so each backend's shared server starts once; the parameter keeps
# its name, so conftest's per-backend counters count these tests.
@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API and workers in one process, loopback targets allowed, short timings."""
    with server_for(backend, tmp_path_factory.mktemp(f"webhooks-{backend}"), extra_env=WEBHOOK_ENV) as srv:
        yield srv


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


class Hooks:
    """Subscriptions on one server, deleted when the test ends (so later tests see none)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.c = httpx.Client(base_url=server.api, headers=server.headers, timeout=30.0)
        self.ids: list[int] = []

    def subscribe(self, endpoint: Endpoint, event_types: list[str],
                  models: list[str] | None = None) -> dict[str, Any]:
        r = self.c.post("/webhooks", json={"url": endpoint.url, "event_types": event_types,
                                           "models": models, "description": endpoint.name})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["secret"].startswith("whsec_") and made["status"] == "active", made
        endpoint.secrets = [made["secret"]]
        self.ids.append(made["id"])
        return made

    def get(self, sub_id: int) -> dict[str, Any]:
        r = self.c.get(f"/webhooks/{sub_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def deliveries(self, sub_id: int, **params: Any) -> list[dict[str, Any]]:
        """Every delivery to the subscription, oldest first."""
        found = [d for page in pages(self.c, f"/webhooks/{sub_id}/deliveries", limit=1000, **params)
                 for d in page]
        return sorted(found, key=lambda d: d["id"])

    def settled(self, sub_id: int, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The deliveries once there are ``count`` and none is pending (the receiver has a request
        a moment before the worker records its outcome)."""
        def done() -> list[dict[str, Any]]:
            found = self.deliveries(sub_id)
            return found if len(found) == count and all(d["state"] != "pending" for d in found) else []

        return poll(done, timeout, lambda: f"{count} finished deliveries: {self.deliveries(sub_id)[-3:]}")

    def close(self) -> None:
        for sub_id in self.ids:
            r = self.c.delete(f"/webhooks/{sub_id}")
            assert r.status_code in (204, 404), r.text
        self.c.close()


@pytest.fixture
def hooks(server: Server) -> Iterator[Hooks]:
    h = Hooks(server)
    yield h
    h.close()


# -- worker processes -----------------------------------------------------------------------------


class Worker:
    """A ``python -m registry worker`` process on the server's database and data directory (so it
    has the same secret key), with the environment ``run_server`` gives ``serve``."""

    def __init__(self, server: Server, extra_env: dict[str, str], label: str) -> None:
        data_dir = server.log.parent
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.env.update(REGISTRY_DATABASE_URL=server.database_url, REGISTRY_DATA_DIR=str(data_dir),
                        REGISTRY_LOG_FORMAT="json", **extra_env)
        self.label = label
        self.starts = 0
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        path = Path(self.env["REGISTRY_DATA_DIR"]) / f"{self.label}-{self.starts}.log"
        self.logs.append(path)
        with path.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "registry", "worker"], cwd=REPO,
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT)
        process = self.process
        poll(lambda: process.poll() is not None or "workers_started" in path.read_text(errors="replace"),
             60, lambda: path.read_text(errors="replace"))
        assert process.poll() is None, f"worker exited early:\n{path.read_text(errors='replace')}"

    def kill(self) -> None:
        """SIGKILL: no chance to finish or release anything."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)

    def attempts(self) -> int:
        """Delivery attempts this worker logged (every start)."""
        return self.text().count('"event": "delivery_attempt"')


@contextmanager
def workers(server: Server, count: int, extra_env: dict[str, str] = API_ONLY) -> Iterator[list[Worker]]:
    started = [Worker(server, extra_env, f"worker{i}") for i in range(count)]
    try:
        for w in started:
            w.start()
        yield started
    finally:
        for w in started:
            w.stop()


class StalledRelay:
    """What a relay in another worker does to one outbox event while it is slow: holds the row
    locked (``FOR UPDATE``) in an open transaction, here until :meth:`release`."""

    def __init__(self, database_url: str, model: str, sequence: int) -> None:
        self._url, self._model, self._sequence = database_url, model, sequence
        self._locked, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    def __enter__(self) -> StalledRelay:
        self._thread.start()
        assert self._locked.wait(15), "could not lock the outbox row"
        return self

    def release(self) -> None:
        self._release.set()
        self._thread.join(15)

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def _hold(self) -> None:
        engine = create_engine(self._url, null_pool=True)
        try:
            async with engine.begin() as conn:
                rows = (await conn.execute(select(outbox_t.c.id).where(
                    outbox_t.c.model == self._model, outbox_t.c.sequence == self._sequence,
                    outbox_t.c.relayed_at.is_(None)).with_for_update())).all()
                assert len(rows) == 1, rows
                self._locked.set()
                await asyncio.to_thread(self._release.wait, 30)
        finally:
            await engine.dispose()


# -- driving changes and reading what was sent --------------------------------------------------


def lifecycle(server: Server, name: str, versions: int) -> None:
    """Create ``name`` and take each of ``versions`` new versions through four transitions:
    staging, back to none, staging, production (which archives the previous one)."""
    with api_client(server) as c:
        create_model(c, name=name)
        for v in range(1, versions + 1):
            [made] = register(c, name)
            assert made["version"] == v
            for stage in ("staging", "none", "staging", "production"):
                move(c, name, v, stage)


def drive_concurrently(server: Server, names: list[str], versions: int) -> None:
    """One thread per model, each with its own connection, all at once."""
    with ThreadPoolExecutor(len(names)) as pool:
        for done in [pool.submit(lifecycle, server, n, versions) for n in names]:
            done.result()


def feed(server: Server, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each model's events from the pull feed, by sequence."""
    with api_client(server) as c:
        return {n: events(c, n) for n in names}


def wanted(feeds: dict[str, list[dict[str, Any]]], event_types: list[str],
           models: list[str] | None = None) -> list[dict[str, Any]]:
    """The events a subscription with these globs must get."""
    return [e for evs in feeds.values() for e in evs
            if any(fnmatchcase(e["type"], p) for p in event_types)
            and (models is None or any(fnmatchcase(e["model"], p) for p in models))]


def arrived_all(endpoint: Endpoint, expected: list[dict[str, Any]], timeout: float) -> list[Received]:
    want = {e["id"] for e in expected}
    return endpoint.wait_for(lambda got: want <= {r.webhook_id for r in got} and got, timeout,
                             f"all {len(want)} events")


def assert_received_once_in_order(endpoint: Endpoint, expected: list[dict[str, Any]]) -> None:
    """Each expected event exactly once, nothing else, every signature good, the body built from
    the event as the feed shows it, and per model in sequence order as received."""
    assert_received_once(endpoint, expected)
    assert_in_sequence_order(endpoint)


def assert_received_once(endpoint: Endpoint, expected: list[dict[str, Any]]) -> None:
    got = endpoint.received
    assert not endpoint.unverified, [(r.webhook_id, r.error) for r in endpoint.unverified][:5]
    counts = Counter(r.webhook_id for r in got)
    assert [i for i, n in counts.items() if n > 1] == [], f"{endpoint.name}: delivered more than once"
    assert set(counts) == {e["id"] for e in expected}, (
        f"{endpoint.name}: missing {len({e['id'] for e in expected} - set(counts))}, "
        f"unexpected {len(set(counts) - {e['id'] for e in expected})}")
    by_id = {e["id"]: e for e in expected}
    for r in got:
        event = by_id[r.webhook_id]
        assert r.body == {"type": event["type"], "timestamp": event["at"], "data": event}, r.body
        assert r.headers["content-type"] == "application/json"


def assert_in_sequence_order(endpoint: Endpoint) -> None:
    order: dict[str, list[int]] = defaultdict(list)
    for r in sorted(endpoint.received, key=lambda r: r.index):
        order[r.event["model"]].append(r.event["sequence"])
    for model, seqs in order.items():
        assert seqs == sorted(seqs), f"{endpoint.name}: {model} arrived out of order: {seqs}"


def at_of(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(ms: list[float]) -> str:
    return (f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
            f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms")


# -- the scenarios -------------------------------------------------------------------------------


def test_fan_out_of_200_transitions_reaches_every_subscriber_once_in_order(
        backend: str, server: Server, hooks: Hooks, receiver: Receiver,
        caplog: pytest.LogCaptureFixture, record_property: Any) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    tag = unique("fan")
    names = [f"{tag}-a{i}" for i in range(3)] + [f"{tag}-b{i}" for i in range(2)]
    everything, versions, some = (receiver.endpoint(n) for n in ("everything", "versions", "some"))
    subs = [(everything, ["*"], None), (versions, ["model_version.*"], None),
            (some, ["*"], [f"{tag}-a*"])]
    sub_ids = {endpoint.name: hooks.subscribe(endpoint, types, models)["id"] for endpoint, types, models in subs}

    started = time.monotonic()
    drive_concurrently(server, names, versions=10)  # 5 models x 10 versions x 4 = 200 transitions
    driven = time.monotonic() - started
    feeds = feed(server, names)
    # Per model: model.created, 10 x model_version.created, 40 stage changes, 9 archived incumbents.
    assert [len(feeds[n]) for n in names] == [60] * 5
    assert all([e["sequence"] for e in evs] == list(range(1, 61)) for evs in feeds.values())

    for endpoint, types, models in subs:
        arrived_all(endpoint, wanted(feeds, types, models), timeout=60)
    drained = time.monotonic() - started
    for endpoint, types, models in subs:
        expected = wanted(feeds, types, models)
        assert_received_once_in_order(endpoint, expected)
        # The server agrees: one delivery per event, delivered at the first attempt.
        found = hooks.settled(sub_ids[endpoint.name], len(expected))
        assert sorted(d["event_id"] for d in found) == sorted(e["id"] for e in expected)
        assert {(d["state"], len(d["attempts"]), d["attempts"][0]["status_code"]) for d in found} == {
            ("delivered", 1, 200)}
    assert [len(wanted(feeds, t, m)) for _, t, m in subs] == [300, 295, 180]

    at = {e["id"]: at_of(e["at"]) for evs in feeds.values() for e in evs}
    latencies = [(r.at - at[r.webhook_id]) * 1000 for r in receiver.log]
    # The same, one event at a time on an idle server: what a subscriber waits without a backlog.
    idle = []
    with api_client(server) as c:
        for _ in range(10):
            seen = len(everything.received)
            register(c, names[-1])
            r = everything.wait_for(lambda got, seen=seen: len(got) > seen and got[-1], 10, "the next event")
            idle.append((r.at - at_of(r.event["at"])) * 1000)
    report = [f"[{backend}] webhook commit-to-receipt latency (receipt minus the event's `at`):",
              f"  burst: {len(latencies)} deliveries of 300 events to 3 subscribers, 200 transitions driven "
              f"in {driven:.1f} s, all received {drained:.1f} s after the start: {summary(latencies)}",
              f"  idle:  10 single events, one at a time: {summary(idle)}"]
    print("\n" + "\n".join(report))
    for line in report:
        log.info(line)
    for label, values in (("burst", latencies), ("idle", idle)):
        record_property(f"{backend}_{label}_latency_p50_ms", round(percentile(values, 50), 1))
        record_property(f"{backend}_{label}_latency_p99_ms", round(percentile(values, 99), 1))
    # The receipt is after the commit; a negative latency would mean a clock or `at` that lies.
    assert min(latencies + idle) > 0


def test_a_receiver_that_is_down_for_a_while_gets_everything_once_it_is_back(
        server: Server, hooks: Hooks, receiver: Receiver) -> None:
    tag = unique("down")
    names = [f"{tag}-{i}" for i in range(3)]
    hook = receiver.endpoint("flaky")
    sub = hooks.subscribe(hook, ["*"], [f"{tag}-*"])
    with api_client(server) as c:
        create_model(c, name=names[0])
    hook.wait_for(lambda got: len(got) == 1, 10, "the first event while up")

    receiver.down()
    went_down = time.monotonic()
    drive_concurrently(server, names[1:], versions=2)
    with api_client(server) as c:
        register(c, names[0], count=2)

    def refused_attempts() -> list[dict[str, Any]]:
        return [a for d in hooks.deliveries(sub["id"]) for a in d["attempts"] if a["status_code"] is None]

    # Down long enough for every model's head event to be refused more than once.
    refused = poll(lambda: len(refused_attempts()) >= 6 and time.monotonic() - went_down > 1.5 and
                   refused_attempts(), 15, "refused attempts while the receiver is down")
    # No response (status None); httpx words a refused connect "ConnectError: All connection attempts failed".
    assert all(a["outcome"] == "retrying" and "connect" in (a["error"] or "").lower() for a in refused), [
        a["error"] for a in refused]
    assert len(hook.received) == 1
    receiver.up()

    feeds = feed(server, names)
    expected = wanted(feeds, ["*"])
    assert len(expected) == (1 + 2) + 2 * (1 + 2 * 5 + 1)
    arrived_all(hook, expected, timeout=20)
    assert_received_once_in_order(hook, expected)
    found = hooks.settled(sub["id"], len(expected))
    assert {d["state"] for d in found} == {"delivered"}
    retried = [d for d in found if len(d["attempts"]) > 1]
    assert retried, "no delivery was retried: the receiver was not really down"
    for d in retried:
        assert [a["outcome"] for a in d["attempts"]] == ["retrying"] * (len(d["attempts"]) - 1) + ["delivered"]
        assert all(a["status_code"] is None for a in d["attempts"][:-1])


def test_a_worker_killed_mid_delivery_loses_nothing_and_resends_under_the_same_id(
        backend: str, tmp_path: Path, receiver: Receiver) -> None:
    slow = 1.5  # each answer takes this long (within the timeout), so requests are in flight
    tag = unique("kill")
    names = [f"{tag}-{i}" for i in range(4)]
    hook = receiver.endpoint("patient")
    hook.answer(then=Reply(200, delay=slow))
    with server_for(backend, tmp_path, extra_env=API_ONLY) as srv, workers(srv, 1) as [worker]:
        h = Hooks(srv)
        try:
            sub = h.subscribe(hook, ["*"], [f"{tag}-*"])
            with ThreadPoolExecutor(len(names)) as pool:
                list(pool.map(lambda n: _register_and_stage(srv, n, versions=4), names))

            def mid_delivery() -> set[str]:
                now = time.time()
                done = [r for r in hook.received if r.status == 200]
                # In flight with most of the wait still to come: the worker will not hear back.
                doomed = {r.webhook_id for r in receiver.in_flight if r.at + slow - now > 0.6}
                return doomed if done and len(doomed) >= 2 else set()

            doomed = poll(mid_delivery, 20, lambda: f"in flight: {len(receiver.in_flight)}")
            answered_long_before = {r.webhook_id for r in hook.received
                                    if r.answered_at is not None and r.answered_at < time.time() - 1.2}
            worker.kill()
            killed_at = time.time()
            before_kill = {r.webhook_id for r in hook.received}
            hook.answer(then=OK)
            worker.start()

            expected = wanted(feed(srv, names), ["*"])
            assert len(expected) == 4 * (1 + 4 * 2)
            arrived_all(hook, expected, timeout=30)
            assert {d["state"] for d in h.settled(sub["id"], len(expected))} == {"delivered"}
        finally:
            h.close()

    got = hook.received
    assert not hook.unverified
    # Every receipt is under its event's id, with the same bytes each time.
    by_event: dict[str, list[Received]] = defaultdict(list)
    for r in got:
        by_event[r.event["id"]].append(r)
    assert {e["id"] for e in expected} == set(by_event)
    for event_id, receipts in by_event.items():
        assert {r.webhook_id for r in receipts} == {event_id}
        assert len({r.raw for r in receipts}) == 1
    counts = Counter(r.webhook_id for r in got)
    twice = {i for i, n in counts.items() if n > 1}
    # What was cut off is sent again after the restart; what had long been acknowledged is not.
    assert doomed <= twice, (doomed, twice)
    assert all(r.at > killed_at for i in doomed for r in by_event[i][1:])
    assert twice <= before_kill - answered_long_before, (twice, answered_long_before)
    assert all(n == 2 for n in counts.values() if n > 1), counts
    print(f"\n[{backend}] SIGKILL mid-delivery: {len(expected)} events, {len(doomed)} cut off in flight, "
          f"{len(twice)} received twice (same webhook-id), none lost")


def _register_and_stage(server: Server, name: str, versions: int) -> None:
    with api_client(server) as c:
        create_model(c, name=name)
        for v in range(1, versions + 1):
            register(c, name)
            move(c, name, v, "staging")


@pytest.mark.postgresql
def test_two_workers_at_once_deliver_each_event_once(tmp_path: Path, receiver: Receiver) -> None:
    tag = unique("pair")
    names = [f"{tag}-{i}" for i in range(5)]
    everything, versions = receiver.endpoint("everything"), receiver.endpoint("versions")
    with server_for("postgresql", tmp_path, extra_env=API_ONLY) as srv, workers(srv, 2) as pair:
        h = Hooks(srv)
        try:
            subs = [(everything, ["*"], h.subscribe(everything, ["*"])),
                    (versions, ["model_version.*"], h.subscribe(versions, ["model_version.*"]))]
            drive_concurrently(srv, names, versions=6)
            feeds = feed(srv, names)
            for endpoint, types, _ in subs:
                arrived_all(endpoint, wanted(feeds, types), timeout=60)
            for endpoint, types, sub in subs:
                assert_received_once(endpoint, wanted(feeds, types))
                found = h.settled(sub["id"], len(wanted(feeds, types)))
                assert {(d["state"], len(d["attempts"])) for d in found} == {("delivered", 1)}
        finally:
            h.close()
    split = [w.attempts() for w in pair]
    n_events = sum(len(evs) for evs in feeds.values())
    print(f"\n[postgresql] two workers: {n_events} events, {len(receiver.log)} deliveries, "
          f"attempts per worker {split}, none twice")
    assert sum(split) == len(receiver.log)
    assert all(split), f"one worker did nothing, so nothing was shared: {split}"
    # Two relays must not hand out one model's events out of order either.
    for endpoint, _, _ in subs:
        assert_in_sequence_order(endpoint)


@pytest.mark.postgresql
def test_a_stalled_relay_does_not_let_later_events_of_the_model_overtake(tmp_path: Path,
                                                                          receiver: Receiver) -> None:
    """Two workers' relays at once, made deterministic: one (played by the test) has claimed a
    model's event 2 and is slow to commit; the worker's relay must not hand out events 3.. first."""
    name = unique("stall")
    hook = receiver.endpoint("ordered")
    with server_for("postgresql", tmp_path, extra_env=API_ONLY) as srv:
        h = Hooks(srv)
        worker = Worker(srv, API_ONLY, "worker")
        try:
            h.subscribe(hook, ["*"], [name])
            _register_and_stage(srv, name, versions=3)  # events 1..7; no worker yet, none relayed
            with StalledRelay(srv.database_url, name, sequence=2) as stalled:
                worker.start()
                # As long as another relay would need to pass the stalled one and deliver event 3.
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline and not any(r.event["sequence"] > 2 for r in hook.received):
                    time.sleep(0.05)
                stalled.release()
            expected = wanted(feed(srv, [name]), ["*"])
            assert len(expected) == 7
            arrived_all(hook, expected, timeout=15)
        finally:
            worker.stop()
            h.close()
    assert_received_once(hook, expected)
    assert [r.event["sequence"] for r in hook.received] == list(range(1, 8)), "a later event overtook event 2"


def test_410_disables_the_subscription_and_announces_it(server: Server, hooks: Hooks,
                                                       receiver: Receiver) -> None:
    with api_client(server) as c:
        name = create_model(c, "gone")
    gone, watcher, control = (receiver.endpoint(n) for n in ("gone", "watcher", "control"))
    gone.answer(then=Reply(410))
    sub = hooks.subscribe(gone, ["model_version.*"], [name])
    watching = hooks.subscribe(watcher, ["webhook.*"])
    hooks.subscribe(control, ["model_version.*"], [name])

    with api_client(server) as c:
        register(c, name)
    disabled = poll(lambda: (s := hooks.get(sub["id"]))["status"] == "disabled" and s, 15,
                    lambda: str(hooks.get(sub["id"])))
    assert "410" in disabled["disabled_reason"], disabled
    [announced] = watcher.wait_for(lambda got: got, 15, "webhook.disabled")
    assert announced.verified and announced.body["type"] == "webhook.disabled"
    assert announced.event["model"] is None and announced.webhook_id == announced.event["id"]
    assert announced.event["data"]["webhook"] == sub["id"]
    # The URL may carry credentials: it is in the audit entry, never sent to other subscribers.
    assert "url" not in announced.event["data"] and "410" in announced.event["data"]["reason"]
    assert gone.url not in announced.raw.decode()

    # Later events go to the others, not to the disabled one.
    with api_client(server) as c:
        register(c, name)
        move(c, name, 2, "staging")
    control.wait_for(lambda got: len(got) == 3, 15, "three events")
    assert len(gone.received) == 1 and gone.received[0].status == 410
    [only] = hooks.deliveries(sub["id"])
    assert only["state"] == "failed" and [(a["status_code"], a["outcome"]) for a in only["attempts"]] == [
        (410, "failed")]
    assert [r.body["type"] for r in watcher.received] == ["webhook.disabled"]
    assert [d["state"] for d in hooks.settled(watching["id"], 1)] == ["delivered"]


def test_429_retry_after_is_honoured(server: Server, hooks: Hooks, receiver: Receiver) -> None:
    with api_client(server) as c:
        name = create_model(c, "busy")
    busy = receiver.endpoint("busy")
    busy.answer(Reply(429, {"Retry-After": "2"}))
    sub = hooks.subscribe(busy, ["model_version.created"], [name])
    with api_client(server) as c:
        register(c, name)
    first, second = busy.wait_for(lambda got: len(got) >= 2 and got, 15, "a retry")
    assert first.status == 429 and first.answered_at is not None
    # The schedule would have retried after 0.2 s; Retry-After says 2.
    waited = second.at - first.answered_at
    assert 1.95 <= waited < 2 + 3, waited
    assert second.webhook_id == first.webhook_id and second.raw == first.raw
    [d] = poll(lambda: (found := hooks.deliveries(sub["id"]))[0]["state"] == "delivered" and found, 10,
               "the delivery to be recorded")
    assert [(a["status_code"], a["outcome"]) for a in d["attempts"]] == [(429, "retrying"), (200, "delivered")]
    gap = at_of(d["attempts"][1]["at"]) - at_of(d["attempts"][0]["at"])
    assert gap >= 1.95, d["attempts"]
    assert len(busy.received) == 2


def test_a_redirect_is_a_failure_and_is_not_followed(server: Server, hooks: Hooks,
                                                     receiver: Receiver) -> None:
    with api_client(server) as c:
        name = create_model(c, "moved")
    moved, elsewhere = receiver.endpoint("moved"), receiver.endpoint("elsewhere")
    sub = hooks.subscribe(moved, ["model_version.created"], [name])
    elsewhere.secrets = moved.secrets  # a followed redirect would even verify there
    moved.answer(then=Reply(302, {"Location": elsewhere.url}))
    with api_client(server) as c:
        register(c, name)

    def two_attempts() -> dict[str, Any] | None:
        found = hooks.deliveries(sub["id"])
        return found[0] if found and len(found[0]["attempts"]) >= 2 else None

    d = poll(two_attempts, 15, "two attempts")
    assert d["state"] == "pending"
    for a in d["attempts"][:2]:
        assert a["status_code"] == 302 and a["outcome"] == "retrying", a
        assert "redirect" in a["error"], a
    assert len(moved.received) >= 2 and all(r.verified for r in moved.received)
    assert elsewhere.received == [] and receiver.stray == []


def test_a_slow_receiver_times_out_without_holding_up_the_others(server: Server, hooks: Hooks,
                                                                 receiver: Receiver) -> None:
    with api_client(server) as c:
        name = create_model(c, "slow")
    slow, fast = receiver.endpoint("slow"), receiver.endpoint("fast")
    slow.answer(Reply(200, delay=TIMEOUT + 1.5))
    sub = hooks.subscribe(slow, ["model_version.*"], [name])
    hooks.subscribe(fast, ["model_version.*"], [name])
    with api_client(server) as c:
        register(c, name, count=3)
        move(c, name, 1, "staging")

    fast_got = fast.wait_for(lambda got: len(got) == 4 and got, 15, "four events")
    hanging = slow.wait_for(lambda got: got, 5, "the first attempt")[0]
    # All four reached the fast one while the slow one was still waiting on its first.
    assert max(r.at for r in fast_got) < hanging.at + TIMEOUT, (
        [r.at - hanging.at for r in fast_got])

    def timed_out() -> list[dict[str, Any]]:
        return [a for d in hooks.deliveries(sub["id"]) for a in d["attempts"]
                if a["status_code"] is None and "timed out" in (a["error"] or "")]

    [attempt] = poll(timed_out, 10, "a timed-out attempt")
    assert attempt["outcome"] == "retrying" and attempt["latency_ms"] >= TIMEOUT * 1000 * 0.95, attempt
    # It is then sent again (same id) and the rest follow, in order.
    expected = wanted(feed(server, [name]), ["model_version.*"])
    arrived_all(slow, expected, timeout=20)
    ids = slow.ids()
    assert ids.count(hanging.webhook_id) == 2 and len(ids) == 5
    assert [i for i in dict.fromkeys(ids)] == [e["id"] for e in expected]


def test_a_rotated_secret_signs_alongside_the_new_one_during_the_overlap(
        server: Server, hooks: Hooks, receiver: Receiver) -> None:
    with api_client(server) as c:
        name = create_model(c, "rotate")
    hook = receiver.endpoint("rotating")
    sub = hooks.subscribe(hook, ["model_version.created"], [name])
    [first_secret] = hook.secrets

    def deliver_one() -> Received:
        count = len(hook.received)
        with api_client(server) as c:
            register(c, name)
        return hook.wait_for(lambda got: len(got) > count and got[-1], 15, "the next delivery")

    before = deliver_one()
    assert len(before.signatures) == 1 and before.verifies_with(first_secret)

    r = hooks.c.post(f"/webhooks/{sub['id']}/rotate-secret", json={"overlap_seconds": 60})
    assert r.status_code == 200, r.text
    second_secret = r.json()["secret"]
    assert second_secret != first_secret
    expires = at_of(r.json()["previous_secret_expires_at"])
    assert 50 < expires - time.time() < 70, r.json()
    hook.secrets = [first_secret, second_secret]
    during = deliver_one()
    assert len(during.signatures) == 2, during.headers
    assert during.verifies_with(first_secret) and during.verifies_with(second_secret)

    r = hooks.c.post(f"/webhooks/{sub['id']}/rotate-secret", json={"overlap_seconds": 0})
    assert r.status_code == 200, r.text
    third_secret = r.json()["secret"]
    assert r.json()["previous_secret_expires_at"] is None
    hook.secrets = [first_secret, second_secret, third_secret]
    after = deliver_one()
    assert len(after.signatures) == 1, after.headers
    assert after.verifies_with(third_secret)
    assert not after.verifies_with(second_secret) and not after.verifies_with(first_secret)
    assert not hook.unverified
    assert hooks.get(sub["id"])["previous_secret_expires_at"] is None


UNSAFE_URLS = [
    "http://127.0.0.1:9/hook",
    "https://127.0.0.1/hook",
    "https://localhost/hook",  # a name that resolves to loopback
    "https://[::1]/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://10.0.0.1/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",  # CGNAT
    "https://[fd00::1]/hook",  # ULA
    "https://[::ffff:169.254.169.254]/hook",  # IPv4-mapped
    "https://0.0.0.0/hook",
    "http://93.184.215.14/hook",  # public, but plain http
]
PUBLIC_URL = "https://93.184.215.14/hook"  # a global address literal: no DNS needed


def test_private_targets_are_refused_unless_allowed(backend: str, tmp_path: Path) -> None:
    env = {k: v for k, v in WEBHOOK_ENV.items() if k != "REGISTRY_WEBHOOK_ALLOW_PRIVATE"}
    with server_for(backend, tmp_path, extra_env=env) as srv, api_client(srv) as c:
        answers = {url: c.post("/webhooks", json={"url": url, "event_types": ["*"]}) for url in UNSAFE_URLS}
        statuses = {url: r.status_code for url, r in answers.items()}
        assert statuses == dict.fromkeys(UNSAFE_URLS, UNSAFE_URL_STATUS), {
            url: (r.status_code, r.json().get("detail")) for url, r in answers.items()}
        assert all(media_type(r) == "application/problem+json" and r.json()["code"] == "validation_error"
                   and r.json()["detail"] for r in answers.values())

        # The same request to a public address is accepted, and cannot be moved to a private one.
        ok = c.post("/webhooks", json={"url": PUBLIC_URL, "event_types": ["*"]})
        assert ok.status_code == 201, ok.text
        moved = c.patch(f"/webhooks/{ok.json()['id']}", json={"url": "https://169.254.169.254/"})
        assert moved.status_code == UNSAFE_URL_STATUS, moved.text
        [only] = c.get("/webhooks").json()["items"]
        assert only["url"] == PUBLIC_URL
