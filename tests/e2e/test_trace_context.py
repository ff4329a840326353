"""W3C trace context end to end, through real processes: a request's ``traceparent`` reaches its
log lines, the outbox, the webhook the worker sends later (on PostgreSQL from a separate
``worker`` process) and the OpenLineage event; and with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the
request and the delivery arrive as spans of that trace at a real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import events, register
from tests.conftest import unique
from tests.e2e.logged_server import Logged, environment, serve, start
from tests.e2e.receivers import Endpoint, Receiver, poll
from tests.lineage_spec import validate_run_event
from tests.support import drop_pg_database, migrated_pg_database, migrated_sqlite_url, run, stop

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE}-{PARENT}-01"
ENV = {"REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true", "REGISTRY_WORKER_POLL_INTERVAL": "0.2"}


def _trace_of(header: str | None) -> tuple[str, str]:
    assert header is not None
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and flags in ("00", "01")
    return trace_id, span_id


def _subscribe(c: httpx.Client, endpoint: Endpoint, event_type: str) -> None:
    r = c.post("/webhooks", json={"url": endpoint.url, "event_types": [event_type]})
    assert r.status_code == 201, r.text
    endpoint.secrets = [r.json()["secret"]]


def _created(received: list[Any]) -> list[Any]:
    return [r for r in received if r.event["type"] == "model_version.created"]


def _posts(logged: Logged) -> dict[str, dict[str, Any]]:
    """The access lines of POST requests, by request id."""
    return {e["request_id"]: e for e in logged.entries()
            if e["logger"] == "registry.access" and e["method"] == "POST"}


def _delivery_traces(processes: list[Logged]) -> set[str]:
    """The traces named by the webhook deliveries' log lines, across the processes delivering."""
    return {e["trace_id"] for p in processes for e in p.entries()
            if e["event"] == "delivery_attempt" and e["target"].startswith("webhook")}


@contextmanager
def _registry(backend: str, folder: Path, **extra: str) -> Iterator[tuple[Any, Logged, list[Logged]]]:
    """serve, and on PostgreSQL a separate worker process doing the deliveries."""
    url = migrated_sqlite_url(folder) if backend == "sqlite" else run(migrated_pg_database())
    env = {**ENV, "REGISTRY_LINEAGE_FILE": str(folder / "lineage.jsonl"), **extra}
    try:
        with ExitStack() as stack:
            if backend == "postgresql":
                env["REGISTRY_RUN_WORKERS"] = "false"
            server, logged = stack.enter_context(serve(url, folder, **env))
            workers = []
            if backend == "postgresql":
                worker = start(["worker"], environment(url, folder, **env), folder, "worker")
                stack.callback(stop, worker.process)
                workers.append(worker)
            yield server, logged, workers
    finally:
        if backend == "postgresql":
            run(drop_pg_database(url))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_callers_trace_reaches_logs_webhooks_and_lineage(backend: str, tmp_path: Path) -> None:
    with Receiver() as receiver, _registry(backend, tmp_path) as (server, logged, workers):
        hook = receiver.endpoint("hook")
        with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as c:
            _subscribe(c, hook, "model_version.*")
            name = unique("traced")
            assert c.post("/models", json={"name": name}).status_code == 201
            c.headers["traceparent"] = INCOMING
            c.headers["x-request-id"] = "traced-request"
            register(c, name)
            c.headers["traceparent"] = f"00-{'0' * 32}-{PARENT}-01"  # invalid: a new trace
            c.headers["x-request-id"] = "untraced-request"
            register(c, name)
            del c.headers["traceparent"], c.headers["x-request-id"]
            feed = {e["id"]: e for e in events(c, name)}
        received = hook.wait_for(lambda got: _created(got) if len(_created(got)) == 2 else None,
                                 what="two registrations")
        lineage_file = tmp_path / "lineage.jsonl"
        poll(lambda: lineage_file.exists() and len(lineage_file.read_text().splitlines()) >= 2, 20,
             "two lineage events")
        # a process logs a request or a delivery after the peer has its answer: wait for the lines
        access = poll(lambda: _posts(logged) if {"traced-request", "untraced-request"} <= _posts(logged).keys()
                      else None, 20, "the two requests' access lines")
        new_trace = access["untraced-request"]["trace_id"]
        # the delivery's own log lines carry the trace too, wherever the worker runs
        poll(lambda: _delivery_traces([logged, *workers]) >= {TRACE, new_trace}, 20,
             lambda: f"delivery lines name the traces {_delivery_traces([logged, *workers])}")

    # the request's log lines: the caller's trace, a span of ours
    assert access["traced-request"]["trace_id"] == TRACE
    assert access["traced-request"]["span_id"] not in (PARENT, None)
    assert new_trace not in (TRACE, "0" * 32) and len(new_trace) == 32

    # each webhook: the trace of the request that wrote its event, a span of its own; the body
    # is the feed's event, unchanged
    by_version = {r.event["version"]: r for r in received}
    assert _trace_of(by_version[1].headers.get("traceparent"))[0] == TRACE
    assert _trace_of(by_version[2].headers.get("traceparent"))[0] == new_trace
    for r in received:
        assert r.verified and r.event == feed[r.event["id"]] and "traceparent" not in r.event
        assert _trace_of(r.headers.get("traceparent"))[1] not in (PARENT, access["traced-request"]["span_id"])

    # the lineage events name the request's span, and stay valid OpenLineage
    runs = [json.loads(line) for line in lineage_file.read_text().splitlines()]
    facets = {run_event["run"]["facets"]["modelRegistry"]["version"]:
              run_event["run"]["facets"]["modelRegistry"] for run_event in runs}
    assert facets[1]["traceparent"] == f"00-{TRACE}-{access['traced-request']['span_id']}-01"
    assert _trace_of(facets[2]["traceparent"])[0] == new_trace
    for run_event in runs:
        validate_run_event(run_event)


# -- OpenTelemetry ----------------------------------------------------------------------------------

class OtlpReceiver:
    """An OTLP/HTTP trace receiver: decodes each POST /v1/traces (protobuf) into its spans."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans: list[Any] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with outer.lock:
                    outer.spans += [span for rs in request.resource_spans
                                    for ss in rs.scope_spans for span in ss.spans]
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_trace(self, trace_id: str) -> list[Any]:
        with self.lock:
            return [s for s in self.spans if s.trace_id.hex() == trace_id]


def test_spans_of_the_callers_trace_reach_an_otlp_endpoint(tmp_path: Path) -> None:
    # the otel extra is part of the test extra: without it this fails rather than skips
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    otlp = OtlpReceiver()
    try:
        with Receiver() as receiver, _registry("sqlite", tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
                                               OTEL_BSP_SCHEDULE_DELAY="100") as (server, logged, _):
            hook = receiver.endpoint("hook")
            with httpx.Client(base_url=server.api, headers=server.headers, timeout=30) as c:
                _subscribe(c, hook, "model.*")
                c.headers["traceparent"] = INCOMING
                assert c.post("/models", json={"name": unique("otel")}).status_code == 201
            [webhook] = hook.wait_for(lambda got: got, what="the webhook")
            # spans of the delivery come after it: wait for both
            poll(lambda: len(otlp.of_trace(TRACE)) >= 2, 20, lambda: f"spans: {otlp.spans}")
    finally:
        otlp.close()
    spans = {s.kind: s for s in otlp.of_trace(TRACE)}
    served, delivered = spans[Span.SPAN_KIND_SERVER], spans[Span.SPAN_KIND_CLIENT]
    assert served.parent_span_id.hex() == PARENT and served.name == "POST /api/v1/models"
    assert delivered.name == "deliver model.created"
    assert delivered.parent_span_id == served.span_id  # the request that wrote the event
    assert _trace_of(webhook.headers.get("traceparent")) == (TRACE, delivered.span_id.hex())
    assert not [e for e in logged.entries() if e["level"] in ("warning", "error")]
