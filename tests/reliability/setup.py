"""Before the load: tokens for the clients, the webhook subscriptions, the models (one with a
production policy that needs two approvals), and a few versions so clients have something to move."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from tests.e2e.receivers import Endpoint, Receiver
from tests.reliability.actions import World, seg
from tests.reliability.checks_webhooks import Sub
from tests.reliability.fault_receiver import FaultReceiver
from tests.support import asyncpg_dsn

TOKENS = {"rel-a": "releaser", "rel-b": "releaser", "editor": "editor"}  # name (= principal): role


def admin(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30.0)


def _ok(r: httpx.Response, status: int) -> Any:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    return r.json() if r.content else None


def make_tokens(c: httpx.Client, admin_token: str) -> dict[str, str]:
    tokens = {"admin": admin_token}
    for name, role in TOKENS.items():
        tokens[name] = _ok(c.post("/tokens", json={"name": name, "role": role, "principal": name}), 201)["token"]
    return tokens


def subscribe(c: httpx.Client, good: Receiver, faulty: FaultReceiver, models: list[str]) -> list[Sub]:
    plan: list[tuple[Endpoint, list[str], list[str] | None]] = [
        (good.endpoint("all"), ["*"], None),
        (good.endpoint("versions"), ["model_version.*"], None),
        (good.endpoint("some"), ["*"], models[1:3]),
        (good.endpoint("gone"), ["*"], None),
        (faulty.endpoint("flaky"), ["*"], None),
    ]
    subs = []
    for endpoint, types, only in plan:
        made = _ok(c.post("/webhooks", json={"url": endpoint.url, "event_types": types, "models": only,
                                             "description": endpoint.name}), 201)
        endpoint.secrets = [made["secret"]]
        subs.append(Sub(endpoint, made["id"], types, only, baseline=0, gone=endpoint.name == "gone"))
    return subs


async def outbox_head(database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox_events")
    finally:
        await conn.close()


def model_names(count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"chaos-{tag}-m{i}" for i in range(count)]


def make_models(c: httpx.Client, names: list[str], versions: int = 3) -> World:
    world = World(models=names, approvals_model=names[0])
    for name in names:
        _ok(c.post("/models", json={"name": name, "description": "chaos"}), 201)
        for _ in range(versions):
            world.learn_version(name, _ok(c.post(f"/models/{seg(name)}/versions",
                                                 json={"source": f"s3://chaos/{name}"}), 201))
    # Production on the first model needs two approvals (applied by the second one).
    _ok(c.put(f"/models/{seg(names[0])}/policies/production",
              json={"required_approvals": 2, "auto_apply": True}), 200)
    return world
