"""``/metrics`` of a real ``python -m registry serve`` (issue 16), scraped before and after a
promotion: the counters of what happened move by what happened, and nothing else leaks in.

On PostgreSQL the server runs two HTTP processes, so a scrape answered by either one must add up
both (prometheus_client's multiprocess mode): requests spread over fresh connections are all
counted whichever process answers the scrape. The scrape needs ``REGISTRY_METRICS_TOKEN``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.api.helpers import Who, api_client, create_model, move, register
from tests.api.test_gates_api import asked, decided, set_policy, transition
from tests.conftest import BACKENDS
from tests.e2e.receivers import Endpoint, Receiver, Reply, poll
from tests.support import REPO, Server, free_port, server_for, wait_ready

METRICS_TOKEN = "metrics-" + "s3cret" * 4
POOL_SIZE = 3
ENV = {"REGISTRY_METRICS_TOKEN": METRICS_TOKEN, "REGISTRY_DB_POOL_SIZE": str(POOL_SIZE),
       "REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true", "REGISTRY_WORKER_POLL_INTERVAL": "0.2",
       "REGISTRY_WEBHOOK_RETRY_SCHEDULE": "0,60", "REGISTRY_WEBHOOK_TIMEOUT": "2"}
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def workers_of(backend: str) -> int:
    return 1 if backend == "sqlite" else 2


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_for(backend, tmp_path_factory.mktemp(f"metrics-{backend}"), workers=workers_of(backend),
                    extra_env=ENV) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with api_client(server) as c:
        yield c


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Prometheus' text format: ``name{label="value",...} number`` per sample line."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(_LABEL.findall(match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    return samples


def scrape(server: Server, url: str | None = None) -> Samples:
    r = httpx.get(url or server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                  timeout=10.0)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return parse(r.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def subscribe(http: httpx.Client, hook: Endpoint, event_type: str) -> None:
    r = http.post("/webhooks", json={"url": hook.url, "event_types": [event_type]})
    assert r.status_code == 201, r.text
    hook.secrets = [r.json()["secret"]]  # the receiver verifies every signature


def test_a_scrape_needs_the_metrics_token(server: Server) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    wrong = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer " + METRICS_TOKEN[:-1]})
    assert wrong.status_code == 401
    api_token = httpx.get(server.url + "/metrics", headers=server.headers)  # not an API token either
    assert api_token.status_code == 401
    assert "registry_http_requests_total" not in wrong.text
    assert httpx.get(server.api + "/metrics", headers=server.headers).status_code == 404  # not an API path


def test_a_promotion_moves_the_counters(server: Server, http: httpx.Client, backend: str) -> None:
    receiver = Receiver()
    try:
        hook = receiver.endpoint("promotions")
        subscribe(http, hook, "model_version.stage_changed")
        name = create_model(http, "metrics")
        register(http, name, count=2, metrics={"accuracy": 0.8})
        move(http, name, 1, "staging")
        move(http, name, 2, "staging")
        set_policy(http, name, "production", metrics={"accuracy": {"min": 0.9}})
        before = scrape(server)

        refused = transition(http, name, 1, "production")
        assert refused.status_code == 422, refused.text
        set_policy(http, name, "production", required_approvals=1, auto_apply=True)
        who = Who(server, http)
        who.add("bob", "releaser", "bob")
        request = asked(http, name, 2, "production", comment="ship it")
        assert decided(who["bob"], request["id"], "approve")["request"]["state"] == "applied"
        hook.wait_for(lambda got: len(got) >= 3)  # two moves to staging, then the promotion
        after = poll(lambda: _settled(scrape(server)), 20,
                     lambda: f"the outbox never emptied: {_outbox(scrape(server))}")
        who.close()
    finally:
        receiver.close()

    def delta(name_: str, **labels: str) -> float:
        return total(after, name_, **labels) - total(before, name_, **labels)

    assert delta("registry_transitions_total", from_stage="staging", to_stage="production") == 1
    assert delta("registry_transitions_total") == 1  # the refused move counts nowhere
    assert delta("registry_gate_refusals_total", gate="metric:accuracy:min") == 1
    assert delta("registry_gate_refusals_total") == 1
    assert delta("registry_approval_decisions_total", decision="approved") == 1
    assert delta("registry_deliveries_total", sink="webhook", outcome="delivered") >= 1
    assert delta("registry_delivery_duration_seconds_count", sink="webhook") >= 1
    route = "/api/v1/models/{name}/versions/{version}/transitions"
    assert delta("registry_http_requests_total", method="POST", route=route, status="422") == 1, sorted(
        dict(labels)["route"] for (n, labels), _ in after.items() if n == "registry_http_requests_total")
    assert delta("registry_http_request_duration_seconds_count", method="POST", route=route) == 1
    assert value(after, "registry_outbox_up") == 1
    assert value(after, "registry_outbox_backlog", kind="events") == 0
    assert value(after, "registry_db_pool_size") == (0 if backend == "sqlite" else POOL_SIZE * workers_of(backend))


def _when(samples: Samples, check: Callable[[Samples], bool]) -> Samples | None:
    return samples if check(samples) else None


def _outbox(samples: Samples) -> dict[str, float]:
    return {f"{n}{dict(labels)}": v for (n, labels), v in samples.items()
            if n.startswith(("registry_outbox", "registry_deliveries_total"))}


def _settled(samples: Samples) -> Samples | None:
    backlog = total(samples, "registry_outbox_backlog")
    return samples if backlog == 0 and total(samples, "registry_deliveries_total") > 0 else None


def test_every_process_counts_into_one_scrape(server: Server) -> None:
    """40 requests on 40 fresh connections: with two processes each answers some, and a scrape,
    answered by one of them, still counts all 40."""
    before = scrape(server)
    for _ in range(40):
        with httpx.Client() as fresh:
            assert fresh.get(server.url + "/healthz").status_code == 200
    after = scrape(server)
    key = {"method": "GET", "route": "/healthz", "status": "200"}
    counted = total(after, "registry_http_requests_total", **key) - total(before, "registry_http_requests_total", **key)
    assert counted == 40


def _server_processes(supervisor: int) -> set[int]:
    """The children of ``serve --workers N`` that serve (not multiprocessing's helpers)."""
    found = set()
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            found.add(int(child))
    return found


def _pool_size_counted(path: Path) -> bool:
    """Whether one process's live-gauge file holds its pool size (prometheus_client's format)."""
    if not path.exists():
        return False
    return any('"registry_db_pool_size"' in key and number == POOL_SIZE
               for key, number, *_ in MmapedDict.read_all_values_from_file(str(path)))


def test_a_killed_server_process_leaves_no_live_gauges_behind(tmp_path: Path) -> None:
    """kill -9 one of two server processes: uvicorn's supervisor starts another in its place,
    and the pool gauges add up the two processes that live, not the dead one's last values too;
    the requests the dead one counted are still counted."""
    with server_for("postgresql", tmp_path, workers=2, extra_env=ENV) as srv:
        first = _server_processes(srv.process.pid)
        assert len(first) == 2, first
        for _ in range(20):
            with httpx.Client() as fresh:
                assert fresh.get(srv.url + "/healthz").status_code == 200
        # both processes are up once both pools are counted (readiness needs only one)
        assert poll(lambda: value(scrape(srv), "registry_db_pool_size") == 2 * POOL_SIZE, timeout=30)
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        [started] = poll(lambda: _server_processes(srv.process.pid) - first, timeout=60,
                         describe="the supervisor started no new server process")
        # wait until the new process has counted its pool, in its own file
        folder = dict(item.split(b"=", 1) for item in Path(f"/proc/{started}/environ").read_bytes()
                      .split(b"\0") if b"=" in item)[b"PROMETHEUS_MULTIPROC_DIR"].decode()
        poll(lambda: _pool_size_counted(Path(folder) / f"gauge_livesum_{started}.db"), timeout=60)
        wait_ready(srv)
        after = [scrape(srv) for _ in range(6)]  # on fresh connections: both processes answer
    for samples in after:
        assert value(samples, "registry_db_pool_size") == 2 * POOL_SIZE
        assert total(samples, "registry_http_requests_total", route="/healthz") >= 20


def test_routes_are_templates_never_paths(server: Server, http: httpx.Client) -> None:
    secret_name = "nobody-knows-this-model-" + "x" * 20
    assert http.get(f"/models/{secret_name}").status_code == 404
    assert httpx.get(server.url + "/no/such/" + secret_name).status_code == 404
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    assert secret_name not in text
    samples = parse(text)
    assert total(samples, "registry_http_requests_total", route="/api/v1/models/{name}", status="404") >= 1
    assert total(samples, "registry_http_requests_total", route="unmatched", status="404") >= 1


def test_the_backlog_shows_a_receiver_that_is_down(server: Server, http: httpx.Client) -> None:
    receiver = Receiver()
    try:
        hook = receiver.endpoint("down")
        hook.answer(Reply(503), then=Reply(503))
        subscribe(http, hook, "model.created")
        create_model(http, "backlog")
        hook.wait_for(lambda got: len(got) >= 1)
        def waiting(s: Samples) -> bool:
            return (value(s, "registry_outbox_backlog", kind="deliveries") >= 1
                    and value(s, "registry_outbox_oldest_undelivered_age_seconds") > 0)

        samples = poll(lambda: _when(scrape(server), waiting), 20, "the failing delivery never showed")
        assert total(samples, "registry_deliveries_total", sink="webhook", outcome="retrying") >= 1
    finally:
        receiver.close()
        requests = http.get("/webhooks", params={"limit": 100}).json()["items"]
        for sub in requests:
            http.delete(f"/webhooks/{sub['id']}")


def test_deliveries_held_by_a_paused_subscription_are_counted_apart_and_age_nothing(
        server: Server, http: httpx.Client) -> None:
    """A delivery waiting for its retry, then its subscription paused: no worker claims it, so it
    is ``held``, out of the deliveries' backlog and out of the oldest age (an alert on the age
    would otherwise fire for as long as someone keeps a receiver off). Resumed, it is back."""
    receiver = Receiver()
    try:
        hook = receiver.endpoint("paused")
        hook.answer(Reply(503), then=Reply(503))  # then the next attempt is 60 s away
        subscribe(http, hook, "model.created")
        create_model(http, "held")
        hook.wait_for(lambda got: len(got) >= 1)
        [sub] = http.get("/webhooks", params={"limit": 100}).json()["items"]
        assert http.patch(f"/webhooks/{sub['id']}", json={"status": "paused"}).status_code == 200

        def held(s: Samples) -> bool:
            return (value(s, "registry_outbox_backlog", kind="held") == 1
                    and value(s, "registry_outbox_backlog", kind="deliveries") == 0
                    and value(s, "registry_outbox_backlog", kind="events") == 0
                    and value(s, "registry_outbox_oldest_undelivered_age_seconds") == 0)

        poll(lambda: _when(scrape(server), held), 20, lambda: str(_outbox(scrape(server))))
        assert http.patch(f"/webhooks/{sub['id']}", json={"status": "active"}).status_code == 200

        def waiting(s: Samples) -> bool:
            return (value(s, "registry_outbox_backlog", kind="held") == 0
                    and value(s, "registry_outbox_backlog", kind="deliveries") == 1
                    and value(s, "registry_outbox_oldest_undelivered_age_seconds") > 0)

        poll(lambda: _when(scrape(server), waiting), 20, lambda: str(_outbox(scrape(server))))
    finally:
        receiver.close()
        for sub in http.get("/webhooks", params={"limit": 100}).json()["items"]:
            http.delete(f"/webhooks/{sub['id']}")


@pytest.mark.postgresql
def test_a_worker_process_serves_its_own_metrics(tmp_path: Path) -> None:
    """``python -m registry worker --metrics-port`` beside a server without in-process workers:
    the deliveries are counted in the worker's scrape, and its liveness is answered beside them."""
    env_extra = {**ENV, "REGISTRY_RUN_WORKERS": "false"}
    with server_for("postgresql", tmp_path, extra_env=env_extra) as srv, Receiver() as receiver:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(REGISTRY_DATABASE_URL=srv.database_url, REGISTRY_DATA_DIR=str(tmp_path),
                   REGISTRY_LOG_FORMAT="json", **ENV)
        worker = subprocess.Popen([sys.executable, "-m", "registry", "worker", "--metrics-port", str(port)],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll(lambda: _listening(port), 30, "the worker's metrics port never opened")
            url = f"http://127.0.0.1:{port}/metrics"
            assert httpx.get(url).status_code == 401
            with api_client(srv) as http:
                hook = receiver.endpoint("worker")
                subscribe(http, hook, "model.created")
                create_model(http, "worker-metrics")
                hook.wait_for(lambda got: len(got) >= 1)
            samples = poll(lambda: _when(scrape(srv, url), lambda s: total(
                s, "registry_deliveries_total", outcome="delivered") >= 1), 20, "no delivery counted")
            assert value(samples, "registry_outbox_up") == 1
            server_side = scrape(srv)
            assert total(server_side, "registry_deliveries_total") == 0  # the server sent nothing itself

            # Liveness, as the manifests probe it: /healthz, no token, answered by the worker's
            # loop. A frozen worker fails it, though its port still completes a TCP connect.
            health = f"http://127.0.0.1:{port}/healthz"
            alive = httpx.get(health)
            assert (alive.status_code, alive.text) == (200, "ok\n")
            assert httpx.head(health).status_code == 200
            assert httpx.get(f"http://127.0.0.1:{port}/other").status_code == 404
            worker.send_signal(signal.SIGSTOP)
            try:
                assert _listening(port)
                with pytest.raises(httpx.TimeoutException):
                    httpx.get(health, timeout=2)
            finally:
                worker.send_signal(signal.SIGCONT)
            assert httpx.get(health, timeout=10).status_code == 200
        finally:
            worker.terminate()
            assert worker.wait(30) == 0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
