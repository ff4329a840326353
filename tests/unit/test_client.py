"""The typed client against httpx.MockTransport: what it sends (headers, bodies, encoded paths),
the Idempotency-Key reused by its own retries and only by them, how answers and problems come
back, paging, and the async client behaving exactly as the sync one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from registry.client import (
    UNSET,
    AsyncRegistryClient,
    Op,
    RegistryClient,
    RegistryClientError,
    Retry,
)

BASE = "http://registry.test"
NO_WAIT = Retry(backoff=0.0)
PROBLEM = {"content-type": "application/problem+json"}
VERSION = {"model": "fraud", "version": 3, "stage": "none", "source": "s3://b/m", "etag": '"e3"'}


def problem(status: int, code: str, **members: Any) -> httpx.Response:
    return httpx.Response(status, json={"type": "about:blank", "title": code, "status": status,
                                        "code": code, "detail": f"{code} happened", **members},
                          headers=PROBLEM)


@dataclass
class Server:
    """Answers each request with the next scripted outcome (a Response, an exception, or a
    function of the request), and records what was sent."""

    script: list[Any] = field(default_factory=list)
    default: Any = field(default_factory=lambda: httpx.Response(200, json={}))
    seen: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.seen.append(request)
        outcome = self.script.pop(0) if self.script else self.default
        if isinstance(outcome, Exception):
            raise outcome
        return outcome(request) if callable(outcome) else outcome

    def sync(self, retry: Retry = NO_WAIT) -> RegistryClient:
        return RegistryClient(BASE + "/", "t0k", transport=httpx.MockTransport(self), retry=retry)

    def aio(self, retry: Retry = NO_WAIT) -> AsyncRegistryClient:
        return AsyncRegistryClient(BASE, "t0k", transport=httpx.MockTransport(self), retry=retry)

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.seen]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


# -- what is sent -----------------------------------------------------------------------------------


def test_every_post_carries_a_fresh_uuid4_key_and_gets_carry_none() -> None:
    server = Server(default=httpx.Response(201, json=VERSION))
    with server.sync() as c:
        c.register_version("fraud", "s3://b/m")
        c.register_version("fraud", "s3://b/m")
        c.get_version("fraud", 3)
        c.report_check("fraud", 3, "unit", "success")
    first, second, get, check = server.keys
    assert get is None
    assert len({first, second, check}) == 3, "one key per logical call"
    for key in (first, second, check):
        assert key is not None and uuid.UUID(key).version == 4
    assert all(r.headers["authorization"] == "Bearer t0k" for r in server.seen)


def test_a_given_key_is_sent_as_is() -> None:
    server = Server(default=httpx.Response(200, json={}))
    with server.sync() as c:
        c.decide_request(7, "approve", comment="ok", idempotency_key="deploy-42.approve")
    (sent,) = server.seen
    assert (sent.method, sent.url.path) == ("POST", "/api/v1/transition-requests/7/approve")
    assert sent.headers["idempotency-key"] == "deploy-42.approve"
    assert body(sent) == {"comment": "ok"}


def test_model_names_are_one_percent_encoded_path_segment() -> None:
    server = Server(default=httpx.Response(200, json=VERSION))
    with server.sync() as c:
        c.get_version("a b/c?d#e%", 3)
        c.get_policy("ünï", "production")
    assert server.seen[0].url.raw_path == b"/api/v1/models/a%20b%2Fc%3Fd%23e%25/versions/3"
    assert server.seen[1].url.raw_path == b"/api/v1/models/%C3%BCn%C3%AF/policies/production"


def test_a_transition_sends_only_the_preconditions_it_was_given() -> None:
    server = Server(default=httpx.Response(200, json={"version": VERSION, "transition": {}}))
    with server.sync() as c:
        c.transition("fraud", 3, "production")
        c.transition("fraud", 3, "production", expected_production_version=None)
        c.transition("fraud", 3, "production", comment="go", expected_stage="staging",
                     expected_production_version=2, if_match='"e3"')
    plain, expect_none, guarded = server.seen
    assert body(plain) == {"to_stage": "production"} and "if-match" not in plain.headers
    assert body(expect_none) == {"to_stage": "production", "expected_production_version": None}
    assert body(guarded) == {"to_stage": "production", "comment": "go", "expected_stage": "staging",
                             "expected_production_version": 2}
    assert guarded.headers["if-match"] == '"e3"'
    assert guarded.url.path == "/api/v1/models/fraud/versions/3/transitions"


def test_a_rollback_sends_the_production_precondition_only_when_given() -> None:
    server = Server(default=httpx.Response(200, json={"version": VERSION, "transition": {}}))
    with server.sync() as c:
        c.rollback("fraud", "regressed")
        c.rollback("fraud", "regressed", expected_production_version=4)
    assert [(r.url.path, body(r)) for r in server.seen] == [
        ("/api/v1/models/fraud/rollback", {"comment": "regressed"}),
        ("/api/v1/models/fraud/rollback", {"comment": "regressed", "expected_production_version": 4})]


def test_gates_is_a_get_with_its_query() -> None:
    report = {"allowed": False, "transition": {}, "results": [{"gate": "approvals", "passed": False,
                                                               "detail": "0 of 2"}]}
    server = Server(default=httpx.Response(200, json=report))
    with server.sync() as c:
        assert c.gates("fraud", 3, "production") == report
        c.gates("fraud", 3, "production", comment="why")
    assert [dict(r.url.params) for r in server.seen] == [
        {"to_stage": "production"}, {"to_stage": "production", "comment": "why"}]
    assert {r.method for r in server.seen} == {"GET"} and server.keys == [None, None]


# -- retries ----------------------------------------------------------------------------------------


def test_retries_reuse_the_key_through_network_errors_timeouts_503_and_in_progress() -> None:
    server = Server(script=[httpx.ConnectError("refused"), problem(503, "unavailable"),
                            httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("closed"),
                            problem(409, "idempotency_in_progress"), httpx.Response(201, json=VERSION)])
    with server.sync(Retry(attempts=6, backoff=0)) as c:
        assert c.register_version("fraud", "s3://b/m", metrics={"auc": 0.9}) == VERSION
    assert len(server.seen) == 6
    assert len(set(server.keys)) == 1 and server.keys[0] is not None
    assert {r.content for r in server.seen} == {b'{"source":"s3://b/m","metrics":{"auc":0.9}}'}


@pytest.mark.parametrize("refusal", [
    problem(409, "conflict", request_id=4), problem(409, "already_exists"),
    problem(422, "gate_failed", results=[], failed=[]), problem(500, "internal"), problem(412, "precondition_failed"),
])
def test_refusals_are_not_retried(refusal: httpx.Response) -> None:
    server = Server(script=[refusal, httpx.Response(201, json=VERSION)])
    with server.sync() as c, pytest.raises(RegistryClientError):
        c.transition("fraud", 3, "production")
    assert len(server.seen) == 1


def test_the_last_failure_is_raised_once_the_attempts_are_spent() -> None:
    server = Server(default=problem(503, "unavailable"))
    with server.sync(Retry(attempts=3, backoff=0)) as c, pytest.raises(RegistryClientError) as err:
        c.get_request(5)
    assert (len(server.seen), err.value.status, err.value.code) == (3, 503, "unavailable")

    down = Server(script=[httpx.ConnectError("refused")] * 2)
    with down.sync(Retry(attempts=2, backoff=0)) as c, pytest.raises(httpx.ConnectError):
        c.create_model("fraud")
    assert len(down.seen) == 2 and len(set(down.keys)) == 1


def test_a_url_the_client_cannot_use_is_not_retried() -> None:
    server = Server(script=[httpx.UnsupportedProtocol("ftp"), httpx.Response(200, json=VERSION)])
    with server.sync() as c, pytest.raises(httpx.UnsupportedProtocol):
        c.get_version("fraud", 3)
    assert len(server.seen) == 1


def test_one_attempt_means_no_retry_and_deletes_are_never_retried() -> None:
    server = Server(default=problem(503, "unavailable"))
    with server.sync(Retry(attempts=1)) as c, pytest.raises(RegistryClientError):
        c.create_model("fraud")
    with server.sync() as c, pytest.raises(RegistryClientError):
        c.revoke_token(3)
    assert [r.method for r in server.seen] == ["POST", "DELETE"]


def test_backoff_doubles_honours_retry_after_and_is_capped() -> None:
    retry = Retry(attempts=6, backoff=0.5, max_delay=3.0)
    op: Op[Any] = Op("POST", "/models")
    busy = problem(503, "unavailable")
    assert [retry.delay(op, n, busy) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, None]
    later = httpx.Response(503, headers={"Retry-After": "2"})
    assert retry.delay(op, 1, later) == 2.0
    assert retry.delay(op, 1, httpx.Response(503, headers={"Retry-After": "120"})) == 3.0
    assert retry.delay(op, 1, httpx.Response(503, headers={"Retry-After": "soon"})) == 0.5
    assert retry.delay(op, 1, httpx.Response(502)) is None


# -- answers and problems ---------------------------------------------------------------------------


def test_a_problem_keeps_its_code_detail_and_extension_members() -> None:
    results = [{"gate": "stage_table", "passed": True, "detail": "staging -> production"},
               {"gate": "metric:auc:min", "passed": False, "detail": "0.8 < 0.9"}]
    server = Server(script=[problem(422, "gate_failed", results=results, failed=["metric:auc:min"])])
    with server.sync() as c, pytest.raises(RegistryClientError) as err:
        c.transition("fraud", 3, "production")
    assert (err.value.status, err.value.code, err.value.detail) == (422, "gate_failed", "gate_failed happened")
    assert err.value.problem["results"] == results and err.value.problem["failed"] == ["metric:auc:min"]


def test_an_answer_that_is_not_a_problem_still_maps_to_an_error() -> None:
    server = Server(script=[httpx.Response(502, text="<html>bad gateway</html>")])
    with server.sync() as c, pytest.raises(RegistryClientError) as err:
        c.get_version("fraud", 1)
    assert (err.value.status, err.value.code, err.value.detail) == (502, "http_502", "<html>bad gateway</html>")


def test_lists_follow_every_cursor_with_their_filters() -> None:
    pages = {None: ([1, 2], "c1"), "c1": ([3], "c2"), "c2": ([], None)}

    def page(request: httpx.Request) -> httpx.Response:
        items, cursor = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": [{"id": i} for i in items], "next_cursor": cursor})

    server = Server(default=page)
    with server.sync() as c:
        assert [r["id"] for r in c.list_requests(model="fraud", state="pending")] == [1, 2, 3]
    assert [dict(r.url.params) for r in server.seen] == [
        {"model": "fraud", "state": "pending", "limit": "1000"},
        {"model": "fraud", "state": "pending", "limit": "1000", "cursor": "c1"},
        {"model": "fraud", "state": "pending", "limit": "1000", "cursor": "c2"}]


def test_from_env_reads_the_url_and_token() -> None:
    server = Server(default=httpx.Response(200, json={"items": []}))
    env = {"REGISTRY_URL": "http://elsewhere.test:9000/", "REGISTRY_TOKEN": "mrt_env"}
    with RegistryClient.from_env(env, transport=httpx.MockTransport(server)) as c:
        assert c.list_checks("fraud", 1) == []
    (sent,) = server.seen
    assert str(sent.url) == "http://elsewhere.test:9000/api/v1/models/fraud/versions/1/checks"
    assert sent.headers["authorization"] == "Bearer mrt_env"
    assert UNSET is not None and repr(UNSET) == "UNSET"


# -- the async client is the same client ------------------------------------------------------------

CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("create_model", ("fraud",), {"description": "d", "idempotency_key": "k1"}),
    ("register_version", ("fraud", "s3://b/m"), {"inputs": [{"namespace": "s3://b", "name": "d"}]}),
    ("transition", ("fraud", 3, "production"), {"expected_production_version": None, "if_match": '"e"'}),
    ("rollback", ("fraud", "bad"), {"expected_production_version": 3}),
    ("report_check", ("fraud", 3, "unit", "failure"), {"details_url": "https://ci/1"}),
    ("list_checks", ("fraud", 3), {}),
    ("set_policy", ("fraud", "production", {"required_approvals": 2}), {}),
    ("gates", ("fraud", 3, "production"), {}),
    ("request_transition", ("fraud", 3, "production"), {"comment": "please"}),
    ("get_request", (7,), {}),
    ("decide_request", (7, "reject"), {}),
    ("list_requests", (), {"model": "fraud"}),
    ("audit_entries", ("fraud",), {"action": "model.created"}),
]
LISTS = {"list_requests", "audit_entries"}


def scripted() -> list[Any]:
    """Per call: a connection error first for the POSTs, then an answer; one refusal."""
    script: list[Any] = []
    for name, _, _ in CALLS:
        if name in {"create_model", "transition", "report_check"}:
            script.append(httpx.ConnectError("reset"))
        if name == "decide_request":
            script.append(problem(403, "forbidden"))
        elif name in LISTS or name == "list_checks":
            script.append(httpx.Response(200, json={"items": [{"call": name}], "next_cursor": None}))
        else:
            script.append(httpx.Response(200, json={"call": name}))
    return script


def shape(server: Server) -> list[tuple[str, str, dict[str, str], Any, str | None, bool]]:
    """What was sent, with each key replaced by whether it repeats the previous request's."""
    out, previous = [], None
    for request, key in zip(server.seen, server.keys, strict=True):
        out.append((request.method, request.url.raw_path.decode(), dict(request.url.params), body(request),
                    request.headers.get("if-match"), key is not None and key == previous))
        previous = key
    return out


def run_sync(server: Server) -> list[Any]:
    results: list[Any] = []
    with server.sync() as c:
        for name, args, kwargs in CALLS:
            results.append(attempt(lambda n=name, a=args, k=kwargs: getattr(c, n)(*a, **k), name))
    return results


def attempt(call: Callable[[], Any], name: str) -> Any:
    try:
        result = call()
        return list(result) if name in LISTS else result
    except RegistryClientError as exc:
        return ("error", exc.status, exc.code, exc.problem)


async def run_async(server: Server) -> list[Any]:
    results: list[Any] = []
    async with server.aio() as c:
        for name, args, kwargs in CALLS:
            try:
                if name in LISTS:
                    results.append([item async for item in getattr(c, name)(*args, **kwargs)])
                else:
                    results.append(await getattr(c, name)(*args, **kwargs))
            except RegistryClientError as exc:
                results.append(("error", exc.status, exc.code, exc.problem))
    return results


async def test_the_async_client_sends_and_answers_exactly_as_the_sync_one() -> None:
    sync_server, async_server = Server(script=scripted()), Server(script=scripted())
    sync_results = run_sync(sync_server)
    async_results = await run_async(async_server)
    assert async_results == sync_results
    assert shape(async_server) == shape(sync_server)
    assert sync_results[10][:3] == ("error", 403, "forbidden")
    retried = [s for s in shape(sync_server) if s[-1]]
    assert [(m, p) for m, p, *_ in retried] == [
        ("POST", "/api/v1/models"), ("POST", "/api/v1/models/fraud/versions/3/transitions"),
        ("POST", "/api/v1/models/fraud/versions/3/checks")]
    assert sync_server.keys[0] == sync_server.keys[1] == "k1"


async def test_the_async_client_retries_with_the_same_key() -> None:
    server = Server(script=[problem(409, "idempotency_in_progress"), problem(503, "unavailable"),
                            httpx.Response(200, json={"request": {}, "applied": True})])
    async with server.aio() as c:
        assert (await c.decide_request(3, "approve"))["applied"] is True
    assert len(server.seen) == 3 and len(set(server.keys)) == 1
