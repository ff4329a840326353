"""Webhook subscriptions over HTTP: the secret shown once, URL and filter validation, paging,
PATCH, DELETE, secret rotation, ping, who may manage them, the audit trail in the system chain,
and the delivery log (real deliveries to a receiver on loopback, retries, recover, redeliver),
plus the lineage sinks' delivery log.

Two servers per backend: the suite's default one (private targets refused, as in production) for
the URL checks, and one with ``REGISTRY_WEBHOOK_ALLOW_PRIVATE=true``, a short retry schedule and a
lineage file sink, whose webhooks point at a receiver thread of this module.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.api.helpers import api_client, assert_problem, assert_utc, create_model, move, pages, register
from tests.support import Server, server_for

T = TypeVar("T")
RETRY_SCHEDULE = "0,0.2"   # two attempts per round, the second 0.2 s after the first
OVERLAP = 86400            # REGISTRY_WEBHOOK_SECRET_OVERLAP's default
# Global by IANA's registry (so it passes the save-time check with private targets refused), and
# only used for subscriptions that no event ever reaches.
PUBLIC_URL = "https://192.0.0.9/hook"
NEVER_SENT = ["webhook.disabled"]   # nothing in these tests disables a subscription made with this


# -- a webhook receiver on loopback -----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """Records every POST; answers 200 unless ``answers[path]`` says otherwise."""

    def __init__(self) -> None:
        self.answers: dict[str, int] = {}
        self._received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver._received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.answers.get(self.path, 200)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self._received if r.path == path]

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def until(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hook_server(server_backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that may send to loopback, retries quickly and writes lineage to a file."""
    data = tmp_path_factory.mktemp(f"hooks-{server_backend}")
    env = {"REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true", "REGISTRY_WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
           "REGISTRY_WEBHOOK_TIMEOUT": "5", "REGISTRY_WORKER_POLL_INTERVAL": "0.1",
           "REGISTRY_LINEAGE_FILE": str(data / "lineage.jsonl")}
    with server_for(server_backend, data, extra_env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def h(hook_server: Server) -> Iterator[httpx.Client]:
    with api_client(hook_server) as client:
        yield client


def lineage_file(server: Server) -> Path:
    return server.log.parent / "lineage.jsonl"


# -- steps ------------------------------------------------------------------------------------------


def create_hook(c: httpx.Client, url: str, event_types: list[str] | None = None, **body: Any) -> dict[str, Any]:
    r = c.post("/webhooks", json={"url": url, "event_types": event_types or ["*"], **body})
    assert r.status_code == 201, r.text
    return r.json()


def path_for(prefix: str) -> str:
    """A receiver path of its own for one subscription."""
    return f"/{prefix}-{uuid.uuid4().hex[:8]}"


def unique_model(c: httpx.Client) -> str:
    return create_model(c, "wh")


def deliveries(c: httpx.Client, hook_id: int, **params: Any) -> list[dict[str, Any]]:
    r = c.get(f"/webhooks/{hook_id}/deliveries", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def settled(c: httpx.Client, hook_id: int, count: int, state: str) -> list[dict[str, Any]]:
    """Wait until the subscription has ``count`` deliveries, all in ``state`` and none in flight."""
    def probe() -> list[dict[str, Any]] | None:
        items = deliveries(c, hook_id)
        done = len(items) == count and all(d["state"] == state and not d["in_flight"] for d in items)
        return items if done else None
    return until(f"{count} {state} deliveries of webhook {hook_id}", probe)


def system_entries(c: httpx.Client, action: str, hook_id: int) -> list[dict[str, Any]]:
    entries = [e for page in pages(c, "/audit", limit=1000, action=action) for e in page]
    return [e for e in entries
            if hook_id in ((e["after"] or {}).get("id"), (e["before"] or {}).get("id"))]


def system_head(c: httpx.Client) -> tuple[int, str]:
    (head,) = [x for x in c.get("/audit/head").json()["items"] if x["chain"] == "system"]
    return head["seq"], head["hash"]


def verify(secret: str, received: Received) -> dict[str, Any]:
    """The Standard Webhooks check a subscriber makes; returns the parsed body."""
    return Webhook(secret).verify(received.body, received.headers)


def signed_only_by(secret: str, received: Received) -> bool:
    try:
        verify(secret, received)
    except WebhookVerificationError:
        return False
    return True


# -- create: the secret, once -----------------------------------------------------------------------


def test_create_returns_201_with_a_whsec_secret_shown_only_there(hook_server: Server, h: httpx.Client,
                                                                 receiver: Receiver) -> None:
    url = receiver.url(path_for("create"))
    r = h.post("/webhooks", json={"url": url, "event_types": ["model_version.*", "model.created"],
                                  "models": ["wh-*"], "description": "deployer"})
    assert r.status_code == 201, r.text
    made = r.json()
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert (made["url"], made["event_types"], made["models"], made["description"], made["status"]) == (
        url, ["model_version.*", "model.created"], ["wh-*"], "deployer", "active")
    assert (made["disabled_reason"], made["failing_since"], made["previous_secret_expires_at"]) == (
        None, None, None)
    assert made["created_by"] == "admin"
    assert assert_utc(made["created_at"]) == assert_utc(made["updated_at"])
    # A second subscription gets a secret of its own.
    assert create_hook(h, url)["secret"] != secret

    hook = made["id"]
    fetched = h.get(f"/webhooks/{hook}")
    listed = [w for page in pages(h, "/webhooks", limit=1000) for w in page]
    patched = h.patch(f"/webhooks/{hook}", json={"description": "deployer v2"})
    assert (fetched.status_code, patched.status_code) == (200, 200)
    assert {k: v for k, v in made.items() if k != "secret"} == fetched.json()
    assert [w for w in listed if w["id"] == hook] == [fetched.json()]
    everything = [e for page in pages(h, "/audit", limit=1000) for e in page]
    assert system_entries(h, "webhook.created", hook), "the creation was not audited"
    for shown in (fetched.json(), *listed, patched.json()):
        assert "secret" not in shown, shown
    key = secret.removeprefix("whsec_")
    for text in (fetched.text, json.dumps(listed), patched.text, json.dumps(everything),
                 hook_server.log.read_text()):
        assert key not in text


# -- validation --------------------------------------------------------------------------------------


def _create(url: str = PUBLIC_URL, **body: Any) -> dict[str, Any]:
    return {"url": url, "event_types": ["model.*"], **body}


# Not what the document allows: 400, as for any malformed request.
MALFORMED = {
    "empty event_types": _create(event_types=[]),
    "event type with capitals": _create(event_types=["Model.*"]),
    "empty models": _create(models=[]),
    "model glob with a slash": _create(models=["team/*"]),
    "ftp scheme": _create("ftp://example.com/hook"),
    "no scheme": _create("example.com/hook"),
    "unknown field": _create(secret="whsec_mine"),
    "description too long": _create(description="d" * 1001),
    "no url": {"event_types": ["model.*"]},
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_subscription_is_400(c: httpx.Client, body: dict[str, Any]) -> None:
    before = system_head(c)
    assert_problem(c.post("/webhooks", json=body), 400, "validation_error")
    assert system_head(c) == before


# Well-formed, but refused by the service's own checks: 400 too, with a detail saying why.
REFUSED = {
    "unknown event type": (_create(event_types=["model.renamed"]), "model.renamed"),
    "glob matching no type": (_create(event_types=["model.created", "deploy.*"]), "deploy.*"),
    "plain http": (_create("http://192.0.0.9/hook"), "https://"),
    "plain http to loopback": (_create("http://127.0.0.1:8080/hook"), "https://"),
    "loopback": (_create("https://127.0.0.1/hook"), "127.0.0.1"),
    "loopback, other form": (_create("https://127.1.2.3:8443/hook"), "127.1.2.3"),
    "localhost": (_create("https://localhost/hook"), "localhost"),
    "IPv6 loopback": (_create("https://[::1]/hook"), "::1"),
    "IPv4-mapped loopback": (_create("https://[::ffff:127.0.0.1]/hook"), "127.0.0.1"),
    "cloud metadata address": (_create("https://169.254.169.254/latest/meta-data"), "169.254.169.254"),
    "cloud metadata name": (_create("https://metadata.google.internal/x"), "metadata"),
    "private network": (_create("https://10.1.2.3/hook"), "10.1.2.3"),
    "carrier-grade NAT": (_create("https://100.64.0.1/hook"), "100.64.0.1"),
    "unspecified": (_create("https://0.0.0.0/hook"), "0.0.0.0"),
    "credentials in the URL": (_create("https://user:pw@192.0.0.9/hook"), "credentials"),
    "a name that does not resolve": (_create("https://no-such-host.invalid/hook"), "no-such-host.invalid"),
}


@pytest.mark.parametrize(("body", "named"), REFUSED.values(), ids=list(REFUSED))
def test_a_refused_subscription_is_400_saying_why(c: httpx.Client, body: dict[str, Any], named: str) -> None:
    before = system_head(c)
    problem = assert_problem(c.post("/webhooks", json=body), 400, "validation_error")
    assert named in problem["detail"], problem
    assert "errors" not in problem   # the service's check, not the schema's
    assert system_head(c) == before


def test_a_public_https_url_is_accepted_where_private_ones_are_refused(c: httpx.Client) -> None:
    made = create_hook(c, PUBLIC_URL, NEVER_SENT)
    assert made["url"] == PUBLIC_URL and made["secret"].startswith("whsec_")


def test_with_private_targets_allowed_http_goes_only_to_private_addresses(h: httpx.Client,
                                                                         receiver: Receiver) -> None:
    assert create_hook(h, receiver.url("/private"), NEVER_SENT)["url"] == receiver.url("/private")
    assert create_hook(h, "https://10.1.2.3/hook", NEVER_SENT)["status"] == "active"
    problem = assert_problem(h.post("/webhooks", json=_create("http://192.0.0.9/hook")), 400,
                             "validation_error")
    assert "https://" in problem["detail"]


# -- list, get, patch, delete ------------------------------------------------------------------------


def test_the_list_pages_by_id_and_visits_every_subscription_once(h: httpx.Client, receiver: Receiver) -> None:
    made = [create_hook(h, receiver.url(path_for("page")), NEVER_SENT)["id"] for _ in range(5)]
    whole = [w["id"] for page in pages(h, "/webhooks", limit=1000) for w in page]
    assert whole == sorted(whole) and len(set(whole)) == len(whole)
    assert set(made) <= set(whole)
    for limit in (1, 2, 3):
        walked = pages(h, "/webhooks", limit=limit)
        assert [w["id"] for page in walked for w in page] == whole
        assert all(len(page) == limit for page in walked[:-1])
    assert_problem(h.get("/webhooks", params={"cursor": "garbage!!"}), 400, "validation_error")
    assert_problem(h.get("/webhooks", params={"limit": 0}), 400, "validation_error")


def test_patch_changes_only_the_fields_given(h: httpx.Client, receiver: Receiver) -> None:
    made = create_hook(h, receiver.url(path_for("patch")), ["model.*"], models=["a-*"], description="d")
    hook = made["id"]
    fields = ("url", "event_types", "models", "description", "status")

    def patch(body: dict[str, Any]) -> dict[str, Any]:
        r = h.patch(f"/webhooks/{hook}", json=body)
        assert r.status_code == 200, r.text
        assert r.json() == h.get(f"/webhooks/{hook}").json()
        return r.json()

    now = patch({"description": "e"})
    assert {f: now[f] for f in fields} == {**{f: made[f] for f in fields}, "description": "e"}
    assert assert_utc(now["updated_at"]) > assert_utc(made["updated_at"])
    assert now["created_at"] == made["created_at"]
    now = patch({"event_types": ["model_version.stage_changed"], "models": ["b-*", "c"]})
    assert (now["event_types"], now["models"], now["description"]) == (
        ["model_version.stage_changed"], ["b-*", "c"], "e")
    assert patch({"models": None})["models"] is None   # null: every model
    assert patch({"description": "f"})["models"] is None
    new_url = receiver.url(path_for("moved"))
    assert patch({"url": new_url})["url"] == new_url
    assert patch({"status": "paused"})["status"] == "paused"
    assert patch({"description": "g"})["status"] == "paused"
    assert patch({"status": "active"})["status"] == "active"


def test_an_empty_patch_changes_nothing(h: httpx.Client, receiver: Receiver) -> None:
    made = create_hook(h, receiver.url(path_for("empty")), NEVER_SENT)
    before = system_head(h)
    r = h.patch(f"/webhooks/{made['id']}", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {k: v for k, v in made.items() if k != "secret"}
    assert system_head(h) == before


BAD_PATCHES = {
    "status disabled": ({"status": "disabled"}, None),
    "status unknown": ({"status": "bogus"}, None),
    "status null": ({"status": None}, None),
    "unknown field": ({"secret": "whsec_x"}, None),
    "event_types empty": ({"event_types": []}, None),
    "event_types null": ({"event_types": None}, None),
    "url null": ({"url": None}, None),
    "models empty": ({"models": []}, None),
    "unknown event type": ({"event_types": ["model.renamed"]}, "model.renamed"),
    "loopback url": ({"url": "https://127.0.0.1/hook"}, "127.0.0.1"),
    "metadata url": ({"url": "https://169.254.169.254/"}, "169.254.169.254"),
    "plain http": ({"url": "http://192.0.0.9/hook"}, "https://"),
}


@pytest.mark.parametrize(("body", "named"), BAD_PATCHES.values(), ids=list(BAD_PATCHES))
def test_a_bad_patch_is_400_and_changes_nothing(c: httpx.Client, body: dict[str, Any], named: str | None) -> None:
    made = create_hook(c, PUBLIC_URL, NEVER_SENT)
    before = c.get(f"/webhooks/{made['id']}").json()
    head = system_head(c)
    problem = assert_problem(c.patch(f"/webhooks/{made['id']}", json=body), 400, "validation_error")
    if named is not None:
        assert named in problem["detail"], problem
    assert c.get(f"/webhooks/{made['id']}").json() == before
    assert system_head(c) == head


def test_delete_removes_the_subscription_and_its_log(h: httpx.Client, receiver: Receiver) -> None:
    name = unique_model(h)
    made = create_hook(h, receiver.url(path_for("delete")), ["model_version.created"], models=[name])
    hook = made["id"]
    register(h, name)
    (delivered,) = settled(h, hook, 1, "delivered")
    r = h.delete(f"/webhooks/{hook}")
    assert r.status_code == 204 and r.content == b""
    for method, path, body in (("GET", "", None), ("PATCH", "", {"description": "x"}), ("DELETE", "", None),
                               ("POST", "/rotate-secret", {}), ("POST", "/ping", None),
                               ("GET", "/deliveries", None),
                               ("POST", f"/deliveries/{delivered['id']}/redeliver", None),
                               ("POST", "/recover", {"since": "2020-01-01T00:00:00Z"})):
        assert_problem(h.request(method, f"/webhooks/{hook}{path}", json=body), 404, "not_found")
    assert hook not in [w["id"] for page in pages(h, "/webhooks", limit=1000) for w in page]


UNKNOWN = 2**31 - 1


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "", None), ("PATCH", "", {"description": "x"}), ("DELETE", "", None),
    ("POST", "/rotate-secret", None), ("POST", "/ping", None), ("GET", "/deliveries", None),
    ("POST", "/deliveries/1/redeliver", None), ("POST", "/recover", {"since": "2020-01-01T00:00:00Z"}),
], ids=["get", "patch", "delete", "rotate", "ping", "deliveries", "redeliver", "recover"])
def test_an_unknown_webhook_is_404(c: httpx.Client, method: str, path: str, body: Any) -> None:
    r = c.request(method, f"/webhooks/{UNKNOWN}{path}", json=body)
    problem = assert_problem(r, 404, "not_found")
    assert str(UNKNOWN) in problem["detail"]


# -- rotation ----------------------------------------------------------------------------------------


def test_rotate_returns_a_new_secret_and_keeps_the_old_one_signing_for_the_overlap(
        h: httpx.Client, receiver: Receiver) -> None:
    path = path_for("rotate")
    made = create_hook(h, receiver.url(path), ["webhook.ping"])
    hook, old = made["id"], made["secret"]

    asked = datetime.now(UTC)
    r = h.post(f"/webhooks/{hook}/rotate-secret", json={"overlap_seconds": 3600})
    answered = datetime.now(UTC)
    assert r.status_code == 200, r.text
    rotated = r.json()
    new = rotated["secret"]
    assert new.startswith("whsec_") and new not in (old,)
    expires = assert_utc(rotated["previous_secret_expires_at"])
    assert asked + timedelta(seconds=3600 - 2) <= expires <= answered + timedelta(seconds=3600 + 2)
    fetched = h.get(f"/webhooks/{hook}").json()
    assert fetched == {k: v for k, v in rotated.items() if k != "secret"}
    assert "secret" not in fetched

    # During the overlap every request carries two signatures: one per secret.
    assert h.post(f"/webhooks/{hook}/ping").status_code == 202
    (ping,) = until("the ping", lambda: receiver.at(path))
    assert len(ping.headers["webhook-signature"].split(" ")) == 2
    assert signed_only_by(new, ping) and signed_only_by(old, ping)


def test_rotate_without_overlap_stops_the_old_secret_at_once(h: httpx.Client, receiver: Receiver) -> None:
    path = path_for("rotate0")
    made = create_hook(h, receiver.url(path), ["webhook.ping"])
    hook, old = made["id"], made["secret"]
    first = h.post(f"/webhooks/{hook}/rotate-secret", json={"overlap_seconds": 600}).json()
    r = h.post(f"/webhooks/{hook}/rotate-secret", json={"overlap_seconds": 0})
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert len({old, first["secret"], new}) == 3
    assert r.json()["previous_secret_expires_at"] is None
    assert h.get(f"/webhooks/{hook}").json()["previous_secret_expires_at"] is None

    assert h.post(f"/webhooks/{hook}/ping").status_code == 202
    (ping,) = until("the ping", lambda: receiver.at(path))
    assert len(ping.headers["webhook-signature"].split(" ")) == 1
    assert signed_only_by(new, ping)
    assert not signed_only_by(first["secret"], ping) and not signed_only_by(old, ping)


def test_rotate_without_a_body_uses_the_configured_overlap(h: httpx.Client, receiver: Receiver) -> None:
    hook = create_hook(h, receiver.url(path_for("rotated")), NEVER_SENT)["id"]
    asked = datetime.now(UTC)
    r = h.post(f"/webhooks/{hook}/rotate-secret")
    assert r.status_code == 200, r.text
    expires = assert_utc(r.json()["previous_secret_expires_at"])
    assert abs((expires - asked).total_seconds() - OVERLAP) < 5


@pytest.mark.parametrize("overlap", [-1, 604801, 1.5, "forever"])
def test_rotate_with_a_bad_overlap_is_400(c: httpx.Client, overlap: Any) -> None:
    hook = create_hook(c, PUBLIC_URL, NEVER_SENT)["id"]
    head = system_head(c)
    assert_problem(c.post(f"/webhooks/{hook}/rotate-secret", json={"overlap_seconds": overlap}), 400,
                   "validation_error")
    assert system_head(c) == head


# -- ping ---------------------------------------------------------------------------------------------


def test_ping_is_202_and_delivers_a_signed_webhook_ping(h: httpx.Client, receiver: Receiver) -> None:
    path = path_for("ping")
    made = create_hook(h, receiver.url(path), ["model.*"])   # a ping reaches it whatever it asked for
    r = h.post(f"/webhooks/{made['id']}/ping", headers={"X-Request-ID": "ping-" + path[1:]})
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "queued", "request_id": "ping-" + path[1:], "count": None}
    (got,) = until("the ping", lambda: receiver.at(path))
    body = verify(made["secret"], got)
    assert body["type"] == "webhook.ping"
    assert body["data"]["type"] == "webhook.ping" and body["data"]["request_id"] == "ping-" + path[1:]
    assert body["data"]["data"]["webhook"] == made["id"]
    assert got.headers["webhook-id"] == body["data"]["id"]
    assert got.headers["content-type"] == "application/json"
    (delivery,) = settled(h, made["id"], 1, "delivered")
    assert (delivery["event_type"], delivery["event_id"], delivery["model"]) == (
        "webhook.ping", got.headers["webhook-id"], None)


def test_a_ping_goes_to_that_subscription_alone(h: httpx.Client, receiver: Receiver) -> None:
    pinged, other = path_for("pinged"), path_for("bystander")
    hook = create_hook(h, receiver.url(pinged), ["webhook.ping"])["id"]
    bystander = create_hook(h, receiver.url(other), ["webhook.ping"])["id"]   # pings, but not this one
    assert h.post(f"/webhooks/{hook}/ping").status_code == 202
    settled(h, hook, 1, "delivered")
    assert deliveries(h, bystander) == [] and receiver.at(other) == []


def test_ping_is_409_unless_the_subscription_is_active(h: httpx.Client, receiver: Receiver) -> None:
    path = path_for("paused")
    hook = create_hook(h, receiver.url(path), NEVER_SENT)["id"]
    assert h.patch(f"/webhooks/{hook}", json={"status": "paused"}).status_code == 200
    head = system_head(h)
    problem = assert_problem(h.post(f"/webhooks/{hook}/ping"), 409, "conflict")
    assert "paused" in problem["detail"]
    assert system_head(h) == head
    assert h.patch(f"/webhooks/{hook}", json={"status": "active"}).status_code == 200
    assert h.post(f"/webhooks/{hook}/ping").status_code == 202
    until("the ping after resuming", lambda: receiver.at(path))


def test_a_paused_subscription_gets_nothing_of_what_happens_meanwhile(h: httpx.Client,
                                                                       receiver: Receiver) -> None:
    path = path_for("pause")
    name = unique_model(h)
    hook = create_hook(h, receiver.url(path), ["model_version.created"], models=[name])["id"]
    assert h.patch(f"/webhooks/{hook}", json={"status": "paused"}).status_code == 200
    register(h, name)                                     # while paused: never queued
    # Subscriptions are matched when the relay takes the event (it writes the version's lineage
    # event in the same transaction): resume only after that.
    until("the relay", lambda: h.get(f"/models/{name}/versions/1/lineage").json()["events"])
    assert h.patch(f"/webhooks/{hook}", json={"status": "active"}).status_code == 200
    register(h, name)
    (delivery,) = settled(h, hook, 1, "delivered")
    assert until("the delivery", lambda: receiver.at(path))[0].json["data"]["version"] == 2
    assert delivery["event_type"] == "model_version.created"


def test_410_disables_and_active_re_enables(h: httpx.Client, receiver: Receiver) -> None:
    path = path_for("gone")
    receiver.answers[path] = 410
    hook = create_hook(h, receiver.url(path), ["webhook.ping"])["id"]
    assert h.post(f"/webhooks/{hook}/ping").status_code == 202
    disabled = until("the subscription to be disabled",
                     lambda: (w := h.get(f"/webhooks/{hook}").json())["status"] == "disabled" and w)
    assert "410" in disabled["disabled_reason"]
    assert disabled["failing_since"] is not None
    (delivery,) = deliveries(h, hook)
    assert (delivery["state"], [a["status_code"] for a in delivery["attempts"]]) == ("failed", [410])
    assert system_entries(h, "webhook.disabled", hook)[0]["actor"] == "worker"
    assert_problem(h.post(f"/webhooks/{hook}/ping"), 409, "conflict")

    receiver.answers[path] = 200
    r = h.patch(f"/webhooks/{hook}", json={"status": "active"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["disabled_reason"], r.json()["failing_since"]) == ("active", None, None)
    assert h.post(f"/webhooks/{hook}/ping").status_code == 202
    until("the ping after re-enabling", lambda: [x for x in deliveries(h, hook) if x["state"] == "delivered"])


# -- the audit trail -----------------------------------------------------------------------------------


def test_every_change_is_audited_in_the_system_chain_without_secrets(h: httpx.Client,
                                                                     receiver: Receiver) -> None:
    path = path_for("audited")
    url = receiver.url(path)
    made = create_hook(h, url, ["webhook.ping"], description="a")
    hook = made["id"]
    described = {"id": hook, "url": url, "description": "a", "event_types": ["webhook.ping"],
                 "models": None, "status": "active"}
    patched = h.patch(f"/webhooks/{hook}", json={"description": "b", "models": ["x-*"]}, headers={
        "X-Request-ID": f"audit-{hook}"})
    assert patched.status_code == 200
    rotated = h.post(f"/webhooks/{hook}/rotate-secret", json={"overlap_seconds": 60}).json()
    assert h.post(f"/webhooks/{hook}/ping").status_code == 202
    (delivery,) = settled(h, hook, 1, "delivered")
    assert h.post(f"/webhooks/{hook}/deliveries/{delivery['id']}/redeliver").status_code == 202
    settled(h, hook, 1, "delivered")
    recovered = h.post(f"/webhooks/{hook}/recover", json={"since": "2020-01-01T00:00:00Z"})
    assert recovered.status_code == 202 and recovered.json()["count"] == 0
    assert h.delete(f"/webhooks/{hook}").status_code == 204

    def one(action: str) -> dict[str, Any]:
        found = system_entries(h, action, hook)
        if action.startswith("delivery."):
            found = [e for e in (e for p in pages(h, "/audit", limit=1000, action=action) for e in p)
                     if e["after"]["target"] == f"webhook:{hook}"]
        assert len(found) == 1, (action, found)
        entry = found[0]
        assert (entry["chain"], entry["model"], entry["version"], entry["actor"]) == (
            "system", None, None, "admin"), entry
        return entry

    created = one("webhook.created")
    assert (created["before"], created["after"]) == (None, described)
    updated = one("webhook.updated")
    assert updated["before"] == described
    assert updated["after"] == {**described, "description": "b", "models": ["x-*"]}
    assert updated["request_id"] == f"audit-{hook}"
    secret_rotated = one("webhook.secret_rotated")
    assert secret_rotated["after"] == {
        "id": hook, "previous_secret_until": secret_rotated["after"]["previous_secret_until"]}
    assert assert_utc(secret_rotated["after"]["previous_secret_until"]) == assert_utc(
        rotated["previous_secret_expires_at"])
    assert one("webhook.ping")["after"] == {"id": hook}
    requeued = one("delivery.requeued")["after"]
    assert requeued == {"target": f"webhook:{hook}", "delivery": delivery["id"],
                        "event_id": delivery["event_id"]}
    recovery = one("delivery.recovered")["after"]
    assert (recovery["target"], recovery["count"]) == (f"webhook:{hook}", 0)
    assert assert_utc(recovery["since"]) == datetime(2020, 1, 1, tzinfo=UTC)
    deleted = one("webhook.deleted")
    assert (deleted["before"], deleted["after"]) == (
        {**described, "description": "b", "models": ["x-*"]}, None)

    text = json.dumps([e for page in pages(h, "/audit", limit=1000) for e in page])
    for secret in (made["secret"], rotated["secret"]):
        assert secret.removeprefix("whsec_") not in text
    assert h.get("/audit/verify").json()["ok"] is True


# -- who may manage subscriptions ----------------------------------------------------------------------


OPERATIONS = [
    ("POST", "/webhooks", {"url": PUBLIC_URL, "event_types": ["*"]}),
    ("GET", "/webhooks", None),
    ("GET", "/webhooks/{hook}", None),
    ("PATCH", "/webhooks/{hook}", {"status": "paused"}),
    ("DELETE", "/webhooks/{hook}", None),
    ("POST", "/webhooks/{hook}/rotate-secret", None),
    ("POST", "/webhooks/{hook}/ping", None),
    ("GET", "/webhooks/{hook}/deliveries", None),
    ("POST", "/webhooks/{hook}/deliveries/{delivery}/redeliver", None),
    ("POST", "/webhooks/{hook}/recover", {"since": "2020-01-01T00:00:00Z"}),
    ("GET", "/lineage/sinks/file/deliveries", None),
    ("POST", "/lineage/sinks/file/deliveries/{lineage}/redeliver", None),
    ("POST", "/lineage/sinks/file/recover", {"since": "2020-01-01T00:00:00Z"}),
]


@pytest.fixture(scope="module")
def outsiders(hook_server: Server, h: httpx.Client, receiver: Receiver) -> Iterator[dict[str, Any]]:
    """Tokens that may not manage subscriptions (a scoped admin, every lesser role) and a
    subscription with a delivery, and a lineage delivery, for them to try."""
    name = unique_model(h)
    hook = create_hook(h, receiver.url(path_for("outsiders")), ["model_version.created"], models=[name])
    register(h, name)
    (delivery,) = settled(h, hook["id"], 1, "delivered")
    lineage = until("the lineage delivery", lambda: [d for d in h.get(
        "/lineage/sinks/file/deliveries", params={"limit": 1000}).json()["items"] if d["model"] == name])
    clients = {}
    for label, role, models in (("scoped admin", "admin", ["*"]), ("releaser", "releaser", None),
                                ("viewer", "viewer", None)):
        body = {"name": f"outsider-{label}", "role": role, **({"models": models} if models else {})}
        r = h.post("/tokens", json=body)
        assert r.status_code == 201, r.text
        clients[label] = httpx.Client(base_url=hook_server.api, timeout=30.0,
                                      headers={"Authorization": f"Bearer {r.json()['token']}"})
    yield {"clients": clients, "ids": {"hook": hook["id"], "delivery": delivery["id"],
                                       "lineage": lineage[0]["id"]}}
    for client in clients.values():
        client.close()


@pytest.mark.parametrize("who", ["scoped admin", "releaser", "viewer"])
@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_only_an_unscoped_admin_manages_webhooks(h: httpx.Client, outsiders: dict[str, Any], who: str,
                                                 method: str, path: str, body: Any) -> None:
    ids = outsiders["ids"]
    before, head = h.get(f"/webhooks/{ids['hook']}").json(), system_head(h)
    r = outsiders["clients"][who].request(method, path.format(**ids), json=body)
    assert_problem(r, 403, "forbidden")
    assert h.get(f"/webhooks/{ids['hook']}").json() == before
    assert system_head(h) == head


# -- the delivery log -----------------------------------------------------------------------------------


def test_a_registration_is_delivered_signed_with_one_attempt_logged(h: httpx.Client,
                                                                    receiver: Receiver) -> None:
    path = path_for("delivered")
    name = unique_model(h)
    made = create_hook(h, receiver.url(path), ["model_version.created"], models=[name])
    (version,) = register(h, name, run_id="run-7")
    (delivery,) = settled(h, made["id"], 1, "delivered")
    assert (delivery["target"], delivery["event_type"], delivery["model"], delivery["state"],
            delivery["in_flight"], delivery["next_attempt_at"], delivery["last_status"],
            delivery["last_error"]) == (f"webhook:{made['id']}", "model_version.created", name,
                                        "delivered", False, None, 200, None)
    (attempt,) = delivery["attempts"]
    assert (attempt["number"], attempt["status_code"], attempt["error"], attempt["outcome"]) == (
        1, 200, None, "delivered")
    assert attempt["latency_ms"] > 0
    assert assert_utc(delivery["created_at"]) <= assert_utc(attempt["at"]) <= assert_utc(
        delivery["finished_at"])

    (got,) = receiver.at(path)
    body = verify(made["secret"], got)
    assert got.headers["webhook-id"] == delivery["event_id"] == body["data"]["id"]
    assert body["type"] == "model_version.created"
    event = body["data"]
    assert (event["model"], event["version"], event["sequence"], event["actor"]) == (
        name, 1, delivery["sequence"], "admin")
    assert body["timestamp"] == event["at"]
    assert event["data"]["after"]["run_id"] == "run-7" == version["run_id"]
    # The same event as the pull feed gives it.
    (fed,) = [e for e in h.get("/events", params={"model": name}).json()["items"] if e["id"] == event["id"]]
    assert fed == event


def test_only_matching_events_and_models_are_delivered(h: httpx.Client, receiver: Receiver) -> None:
    path = path_for("filtered")
    name, other = unique_model(h), unique_model(h)
    hook = create_hook(h, receiver.url(path), ["model_version.stage_changed"], models=[name])["id"]
    register(h, name)
    register(h, other)
    move(h, other, 1, "staging")
    move(h, name, 1, "staging")
    (delivery,) = settled(h, hook, 1, "delivered")
    assert (delivery["event_type"], delivery["model"]) == ("model_version.stage_changed", name)
    assert [r.json["data"]["data"]["to_stage"] for r in receiver.at(path)] == ["staging"]


def test_a_failing_endpoint_is_retried_then_failed_then_recovered(h: httpx.Client, receiver: Receiver) -> None:
    path = path_for("failing")
    receiver.answers[path] = 500
    name = unique_model(h)
    made = create_hook(h, receiver.url(path), ["model_version.created"], models=[name])
    hook = made["id"]
    register(h, name)
    (failed,) = settled(h, hook, 1, "failed")
    assert [(a["number"], a["status_code"], a["outcome"]) for a in failed["attempts"]] == [
        (1, 500, "retrying"), (2, 500, "failed")]
    assert (failed["last_status"], failed["last_error"]) == (500, "HTTP 500")
    assert failed["finished_at"] is not None and failed["next_attempt_at"] is None
    first, second = (assert_utc(a["at"]) for a in failed["attempts"])
    assert second - first >= timedelta(seconds=0.2)   # the schedule's second delay
    assert h.get(f"/webhooks/{hook}").json()["failing_since"] is not None

    # The state filter.
    assert [d["id"] for d in deliveries(h, hook, state="failed")] == [failed["id"]]
    assert deliveries(h, hook, state="delivered") == deliveries(h, hook, state="pending") == []

    # Recover: only what failed since the given time.
    later = assert_utc(failed["created_at"]) + timedelta(seconds=1)
    r = h.post(f"/webhooks/{hook}/recover", json={"since": later.isoformat().replace("+00:00", "Z")})
    assert r.status_code == 202 and r.json()["count"] == 0, r.text
    receiver.answers[path] = 200
    r = h.post(f"/webhooks/{hook}/recover", json={"since": failed["created_at"]})
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "queued", "count": 1, "request_id": None}
    (recovered,) = settled(h, hook, 1, "delivered")
    assert recovered["id"] == failed["id"]
    assert [(a["number"], a["status_code"], a["outcome"]) for a in recovered["attempts"]] == [
        (1, 500, "retrying"), (2, 500, "failed"), (3, 200, "delivered")]
    sent = receiver.at(path)
    assert len(sent) == 3
    assert {r.headers["webhook-id"] for r in sent} == {failed["event_id"]}
    assert len({r.body for r in sent}) == 1            # the same bytes every time
    for got in sent:
        verify(made["secret"], got)
    assert h.get(f"/webhooks/{hook}").json()["failing_since"] is None


def test_redeliver_sends_a_delivered_event_again_with_the_same_webhook_id(h: httpx.Client,
                                                                          receiver: Receiver) -> None:
    path = path_for("redeliver")
    name = unique_model(h)
    made = create_hook(h, receiver.url(path), ["model_version.created"], models=[name])
    hook = made["id"]
    register(h, name)
    (delivered,) = settled(h, hook, 1, "delivered")
    r = h.post(f"/webhooks/{hook}/deliveries/{delivered['id']}/redeliver")
    assert r.status_code == 202, r.text
    again = r.json()
    assert (again["id"], again["event_id"], again["state"], again["finished_at"]) == (
        delivered["id"], delivered["event_id"], "pending", None)
    (done,) = settled(h, hook, 1, "delivered")
    assert [(a["number"], a["status_code"]) for a in done["attempts"]] == [(1, 200), (2, 200)]
    first, second = until("the second request", lambda: len(receiver.at(path)) == 2 and receiver.at(path))
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivered["event_id"]
    assert first.body == second.body
    verify(made["secret"], second)


def test_redeliver_of_an_unknown_or_foreign_delivery_is_404(h: httpx.Client, receiver: Receiver) -> None:
    name = unique_model(h)
    mine = create_hook(h, receiver.url(path_for("mine")), ["model_version.created"], models=[name])["id"]
    theirs = create_hook(h, receiver.url(path_for("theirs")), NEVER_SENT)["id"]
    register(h, name)
    (delivery,) = settled(h, mine, 1, "delivered")
    assert_problem(h.post(f"/webhooks/{theirs}/deliveries/{delivery['id']}/redeliver"), 404, "not_found")
    assert_problem(h.post(f"/webhooks/{mine}/deliveries/{2**53 - 1}/redeliver"), 404, "not_found")
    assert_problem(h.post(f"/lineage/sinks/file/deliveries/{delivery['id']}/redeliver"), 404, "not_found")


def test_deliveries_are_listed_newest_first_and_paged(h: httpx.Client, receiver: Receiver) -> None:
    name = unique_model(h)
    hook = create_hook(h, receiver.url(path_for("paged")), ["model_version.created"], models=[name])["id"]
    register(h, name, 5)
    whole = settled(h, hook, 5, "delivered")
    assert [d["sequence"] for d in whole] == sorted((d["sequence"] for d in whole), reverse=True)
    assert [d["id"] for d in whole] == sorted((d["id"] for d in whole), reverse=True)
    walked = pages(h, f"/webhooks/{hook}/deliveries", limit=2)
    assert [d["id"] for page in walked for d in page] == [d["id"] for d in whole]
    assert [len(p) for p in walked] == [2, 2, 1]
    assert [d["id"] for page in pages(h, f"/webhooks/{hook}/deliveries", limit=2, state="delivered")
            for d in page] == [d["id"] for d in whole]


@pytest.mark.parametrize("params", [{"state": "done"}, {"limit": 0}, {"limit": 1001}, {"cursor": "x!"}])
def test_bad_delivery_queries_are_400(h: httpx.Client, receiver: Receiver, params: dict[str, Any]) -> None:
    hook = create_hook(h, receiver.url(path_for("query")), NEVER_SENT)["id"]
    assert_problem(h.get(f"/webhooks/{hook}/deliveries", params=params), 400, "validation_error")
    assert_problem(h.get("/lineage/sinks/file/deliveries", params=params), 400, "validation_error")


@pytest.mark.parametrize("since", ["yesterday", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z"])
def test_recover_needs_an_rfc3339_time_with_a_zone(h: httpx.Client, receiver: Receiver, since: str) -> None:
    hook = create_hook(h, receiver.url(path_for("since")), NEVER_SENT)["id"]
    head = system_head(h)
    assert_problem(h.post(f"/webhooks/{hook}/recover", json={"since": since}), 400, "validation_error")
    assert_problem(h.post("/lineage/sinks/file/recover", json={"since": since}), 400, "validation_error")
    assert system_head(h) == head


# -- the lineage sinks' log -------------------------------------------------------------------------------


def lineage_deliveries(c: httpx.Client, sink: str, name: str, **params: Any) -> list[dict[str, Any]]:
    items = [d for page in pages(c, f"/lineage/sinks/{sink}/deliveries", limit=1000, **params) for d in page]
    return [d for d in items if d["model"] == name]


def test_the_file_sink_gets_registrations_and_stage_changes(hook_server: Server, h: httpx.Client) -> None:
    name = unique_model(h)
    register(h, name, 2)
    move(h, name, 1, "staging")
    move(h, name, 1, "production")
    move(h, name, 2, "staging")
    move(h, name, 2, "production")   # archives v1: an output of this event, not an event of its own
    h.patch(f"/models/{name}", json={"description": "not lineage"})

    expected = [("model_version.created", 1), ("model_version.created", 2)] + [
        ("model_version.stage_changed", v) for v in (1, 1, 2, 2)]

    def probe() -> list[dict[str, Any]] | None:
        found = lineage_deliveries(h, "file", name)
        return found if len(found) >= len(expected) and all(d["state"] == "delivered" for d in found) else None

    found = until("the lineage deliveries", probe)
    assert [d["target"] for d in found] == ["lineage:file"] * len(expected)
    oldest_first = found[::-1]
    events = {e["id"]: e for e in h.get("/events", params={"model": name, "limit": 1000}).json()["items"]}
    assert [(d["event_type"], events[d["event_id"]]["version"]) for d in oldest_first] == expected
    assert all([a["status_code"] for a in d["attempts"]] == [200] for d in found)

    lines = [json.loads(line) for line in lineage_file(hook_server).read_text().splitlines()]
    mine = [e for e in lines if e["job"]["name"].startswith(f"{name}.")]
    assert [e["run"]["runId"] for e in mine] == [d["event_id"] for d in oldest_first]
    assert [e["job"]["name"] for e in mine] == [f"{name}.register"] * 2 + [f"{name}.transition"] * 4
    assert lineage_deliveries(h, "file", name, state="failed") == []
    assert lineage_deliveries(h, "http", name) == []   # no HTTP sink configured


def test_a_lineage_delivery_can_be_sent_again(hook_server: Server, h: httpx.Client) -> None:
    name = unique_model(h)
    register(h, name)
    (delivery,) = until("the lineage delivery", lambda: [
        d for d in lineage_deliveries(h, "file", name) if d["state"] == "delivered"])
    r = h.post(f"/lineage/sinks/file/deliveries/{delivery['id']}/redeliver")
    assert r.status_code == 202, r.text
    assert (r.json()["id"], r.json()["state"], r.json()["target"]) == (delivery["id"], "pending", "lineage:file")
    again = until("the second attempt", lambda: [
        d for d in lineage_deliveries(h, "file", name)
        if d["state"] == "delivered" and len(d["attempts"]) == 2])
    assert [a["number"] for a in again[0]["attempts"]] == [1, 2]
    lines = [json.loads(line) for line in lineage_file(hook_server).read_text().splitlines()]
    assert [e["run"]["runId"] for e in lines].count(delivery["event_id"]) == 2

    r = h.post("/lineage/sinks/file/recover", json={"since": "2020-01-01T00:00:00Z"})
    assert r.status_code == 202 and r.json()["count"] == 0, r.text   # nothing failed
    assert_problem(h.post(f"/lineage/sinks/http/deliveries/{delivery['id']}/redeliver"), 404, "not_found")


@pytest.mark.parametrize("path", ["/lineage/sinks/ftp/deliveries", "/lineage/sinks/FILE/deliveries"])
def test_an_unknown_sink_is_400(h: httpx.Client, path: str) -> None:
    assert_problem(h.get(path), 400, "validation_error")
