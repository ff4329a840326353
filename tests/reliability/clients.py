"""The 32 concurrent clients: each loops until the deadline, sending one random operation at a
time to a random live ``serve`` replica, recording every request (see ``records``).

Idempotency: a share of the POSTs carry an ``Idempotency-Key``. Some of those are sent again
with the same key, either right after the answer or while the first is still in flight, and
any keyed POST that got no answer or a 5xx is retried with its key on another replica, as a
careful pipeline would. The checks compare the answers afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from tests.reliability.actions import Action, World, choose
from tests.reliability.profile import CLIENT_TIMEOUT
from tests.reliability.records import Record, Recorder

KEYED_SHARE = 0.4  # POSTs that carry an Idempotency-Key
RETRY_SHARE = 0.35  # of those, retried on purpose (half of them while the first is in flight)
KEPT_HEADERS = ("idempotent-replayed", "retry-after", "content-type", "x-request-id", "etag")


class Clients:
    def __init__(self, world: World, recorder: Recorder, tokens: dict[str, str],
                 servers: Callable[[], list[str]], seed: int) -> None:
        self.world, self.recorder, self.tokens, self.servers = world, recorder, tokens, servers
        self.seed = seed
        limits = httpx.Limits(max_connections=96, max_keepalive_connections=64)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(CLIENT_TIMEOUT), limits=limits)

    async def run(self, count: int, until: float) -> None:
        try:
            await asyncio.gather(*(self._client(i, until) for i in range(count)))
        finally:
            await self.http.aclose()

    async def _client(self, n: int, until: float) -> None:
        rng = random.Random(self.seed * 1000 + n)
        own_releaser = "rel-a" if n % 2 else "rel-b"
        while time.time() < until:
            action = choose(self.world, rng)
            token = own_releaser if action.token == "rel-a" else action.token
            await self._operation(n, action, token, rng, until)
            await asyncio.sleep(rng.uniform(0.0, 0.03))

    async def _operation(self, n: int, action: Action, token: str, rng: random.Random, until: float) -> None:
        op = self.recorder.next_op()
        key = f"chaos-{uuid.uuid4().hex}" if action.method == "POST" and rng.random() < KEYED_SHARE else None
        first = self._send(n, op, 0, action, token, key, rng)
        if key and rng.random() < RETRY_SHARE:
            if rng.random() < 0.5:  # the retry overlaps the first: one runs, the other waits or replays
                await asyncio.sleep(rng.uniform(0.0, 0.02))
                done = await asyncio.gather(first, self._send(n, op, 1, action, token, key, rng))
                record = done[0]
            else:
                record = await first
                await self._send(n, op, 1, action, token, key, rng)
        else:
            record = await first
        attempt = 1
        # Not past the end of the load: the run's length must stay bounded whatever the service does.
        while key and (record.status is None or record.status >= 500) and attempt < 4 and time.time() < until:
            attempt += 1  # no answer, or a 5xx: the key makes a retry safe
            await asyncio.sleep(0.2 * attempt)
            record = await self._send(n, op, attempt, action, token, key, rng)

    async def _send(self, n: int, op: int, attempt: int, action: Action, token: str, key: str | None,
                    rng: random.Random) -> Record:
        servers = self.servers()
        server = rng.choice(servers) if servers else ""
        request_id = f"chaos-{n}-{op}-{attempt}-{uuid.uuid4().hex[:8]}"
        record = Record(n, op, attempt, action.kind, action.legal, action.expect, action.method, action.path,
                        action.body, key, request_id, token, action.model, server=server)
        headers = {"Authorization": f"Bearer {self.tokens[token]}", "X-Request-ID": request_id}
        if key:
            headers["Idempotency-Key"] = key
        record.sent = time.time()
        try:
            response = await self.http.request(action.method, server + "/api/v1" + action.path, headers=headers,
                                               json=action.body if action.method != "GET" else None)
        except httpx.TimeoutException as exc:
            record.error = f"timeout: {type(exc).__name__}"
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        else:
            _fill(record, response)
            self.world.learn(action, record.status, record.json)
        record.answered = time.time()
        return self.recorder.add(record)


def _fill(record: Record, response: httpx.Response) -> None:
    record.status = response.status_code
    record.text = response.text
    record.headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
    body: Any = record.json
    if response.status_code >= 400 and isinstance(body, dict):
        record.code = body.get("code")
