"""OpenLineage events reach an HTTP lineage endpoint (a Marquez-like receiver on loopback) through
the outbox: with the operator's API key, retried after failures, each event valid under the
2-0-2 schemas, and the same events in the JSON-lines file sink and in GET …/lineage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, unique
from tests.lineage_spec import validate_run_event
from tests.support import Server, server_for

API_KEY = "lineage-key-0123456789"


class Marquez:
    """Answers 500 to the first ``fail_first`` posts, then 201; keeps what it accepted."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.accepted: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with outer.lock:
                    outer.posts.append((self.path, dict(self.headers.items()), body))
                    failing = len(outer.posts) <= outer.fail_first
                    if not failing:
                        outer.accepted.append(body)
                self.send_response(500 if failing else 201)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def marquez(backend: str) -> Iterator[Marquez]:
    m = Marquez(fail_first=2)  # one receiver per backend
    yield m
    m.server.shutdown()


@pytest.fixture(scope="module")
def server(backend: str, marquez: Marquez, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"lineage-{backend}")
    env = {"REGISTRY_LINEAGE_URL": marquez.url, "REGISTRY_LINEAGE_API_KEY": API_KEY,
           "REGISTRY_LINEAGE_FILE": str(tmp / "lineage.jsonl"), "REGISTRY_LINEAGE_NAMESPACE": "ml-prod",
           "REGISTRY_WEBHOOK_RETRY_SCHEDULE": "0,0.2,0.2,0.5", "REGISTRY_WORKER_POLL_INTERVAL": "0.2"}
    with server_for(backend, tmp, extra_env=env) as srv:
        yield srv


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _run_ids(events: list[dict[str, Any]], model: str) -> list[str]:
    return [e["run"]["runId"] for e in events if e["job"]["name"].startswith(f"{model}.")]


def test_every_registration_and_stage_change_reaches_the_endpoint_once_retried_and_valid(
        server: Server, marquez: Marquez) -> None:
    model = unique("lin")
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=10) as c:
        c.post("/models", json={"name": model}).raise_for_status()
        for _ in range(2):
            c.post(f"/models/{model}/versions", json={
                "source": "s3://m/1", "run_id": "not-a-uuid",
                "inputs": [{"namespace": "s3://data", "name": "train.parquet"}]}).raise_for_status()
        for v, stage in ((1, "staging"), (1, "production"), (2, "staging"), (2, "production")):
            c.post(f"/models/{model}/versions/{v}/transitions",
                   json={"to_stage": stage}).raise_for_status()
        # 2 registrations + 4 stage changes; v1's archiving is an output of v2's promotion.
        _wait(lambda: len(_run_ids(marquez.accepted, model)) == 6)
        lineage = c.get(f"/models/{model}/versions/2/lineage").json()

    mine = [e for e in marquez.accepted if e["job"]["name"].startswith(f"{model}.")]
    assert len({e["run"]["runId"] for e in mine}) == 6
    for event in mine:
        validate_run_event(event)
        assert event["job"]["namespace"] == "ml-prod"
    paths_and_keys = {(p, h.get("Authorization") or h.get("authorization")) for p, h, _ in marquez.posts}
    assert paths_and_keys == {("/api/v1/lineage", f"Bearer {API_KEY}")}
    promotion = next(e for e in mine if e["job"]["name"] == f"{model}.transition"
                     and e["run"]["facets"]["modelRegistry"]["version"] == 2
                     and e["run"]["facets"]["modelRegistry"]["toStage"] == "production")
    outputs = {(o["name"], o["facets"]["tags"]["tags"][0]["value"]) for o in promotion["outputs"]}
    assert outputs == {(f"{model}/2", "production"), (f"{model}/1", "archived")}
    # The version's lineage lists exactly the events the endpoint received for it.
    assert [e["run"]["runId"] for e in lineage["events"]] == [
        e["run"]["runId"] for e in mine if e["run"]["facets"]["modelRegistry"]["version"] == 2]


def test_the_first_failures_are_retried_and_logged_as_attempts(server: Server, marquez: Marquez) -> None:
    _wait(lambda: len(marquez.posts) > marquez.fail_first)
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=10) as c:
        items = c.get("/lineage/sinks/http/deliveries", params={"limit": 1000}).json()["items"]
    retried = [d for d in items if len(d["attempts"]) > 1]
    assert retried, "the endpoint failed twice; some delivery must show more than one attempt"
    for d in retried:
        assert [a["status_code"] for a in d["attempts"]][:1] == [500]
        assert d["attempts"][-1]["status_code"] == 201 and d["state"] == "delivered"


def test_the_file_sink_holds_the_same_events(server: Server, marquez: Marquez) -> None:
    path = Path(server.log).parent / "lineage.jsonl"
    _wait(lambda: path.exists() and len(path.read_text().splitlines()) >= len(marquez.accepted))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for event in lines:
        validate_run_event(event)
    assert {e["run"]["runId"] for e in lines} == {e["run"]["runId"] for e in marquez.accepted}
