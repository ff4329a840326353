"""Helpers the API test modules share: a client for the live server, problem-body checks,
a few scenario steps, and direct reads and writes of the server's database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import aliases_t, audit_t, chains_t, models_t, outbox_t, versions_t
from tests.conftest import unique
from tests.support import Server

PROBLEM = "application/problem+json"
GENESIS = "0" * 64


@contextmanager
def api_client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=30.0) as client:
        yield client


def seg(name: str) -> str:
    """A model name (or alias) as one percent-encoded path segment."""
    return quote(name, safe="")


def media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def assert_problem(response: httpx.Response, status: int, code: str, **members: Any) -> dict[str, Any]:
    """An RFC 9457 problem response with our stable ``code``; ``members`` are extension members
    expected at the top level of the body."""
    assert response.status_code == status, response.text
    assert media_type(response) == PROBLEM, response.headers
    body = response.json()
    assert isinstance(body.get("type"), str) and body["type"], body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert body.get("status") == status, body
    assert body.get("code") == code, body
    for key, value in members.items():
        assert body.get(key) == value, (key, body)
    return body


def assert_utc(stamp: str) -> datetime:
    """An RFC 3339 timestamp with an explicit UTC offset."""
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0), stamp
    assert stamp.endswith("Z") or stamp.endswith("+00:00"), stamp
    return parsed.astimezone(UTC)


# -- scenario steps -------------------------------------------------------------------------------


def create_model(c: httpx.Client, prefix: str = "m", **body: Any) -> str:
    name = body.pop("name", None) or unique(prefix)
    r = c.post("/models", json={"name": name, **body})
    assert r.status_code == 201, r.text
    return name


def register(c: httpx.Client, name: str, count: int = 1, **body: Any) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        r = c.post(f"/models/{seg(name)}/versions", json={"source": "s3://bucket/model", **body})
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def move(c: httpx.Client, name: str, version: int, stage: str, **body: Any) -> dict[str, Any]:
    r = c.post(f"/models/{seg(name)}/versions/{version}/transitions", json={"to_stage": stage, **body})
    assert r.status_code == 200, r.text
    return r.json()


def events(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    r = c.get("/events", params={"model": name, "limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def audit(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    r = c.get("/audit", params={"model": name, "limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def pages(c: httpx.Client, path: str, *, limit: int, max_pages: int = 1000,
          **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following ``next_cursor`` to the end; each page must be a 200 of at
    most ``limit`` items, and the paging must end."""
    found: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        r = c.get(path, params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= limit
        found.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found
        assert len(found) < max_pages, "paging does not end"


# -- the database behind the server ----------------------------------------------------------------


def in_db(server: Server, work: Any) -> Any:
    """Run ``await work(conn)`` in one committed transaction on the server's database, from a
    thread of its own so no event loop of the test session is touched."""

    async def go() -> Any:
        engine = create_engine(server.database_url, null_pool=True)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def db_rows(server: Server, stmt: Any) -> list[Any]:
    async def work(conn: Any) -> list[Any]:
        return list((await conn.execute(stmt)).all())

    return in_db(server, work)


def db_execute(server: Server, stmt: Any) -> int:
    async def work(conn: Any) -> int:
        return (await conn.execute(stmt)).rowcount

    return in_db(server, work)


def model_id(server: Server, name: str) -> int:
    rows = db_rows(server, select(models_t.c.id).where(models_t.c.name == name))
    assert len(rows) == 1, rows
    return rows[0].id


def chain_of(server: Server, name: str) -> str:
    return f"model:{model_id(server, name)}"


__all__ = [
    "GENESIS", "PROBLEM", "aliases_t", "api_client", "assert_problem", "assert_utc", "audit", "audit_t",
    "chain_of", "chains_t", "create_model", "db_execute", "db_rows", "events", "in_db", "media_type",
    "model_id", "models_t", "move", "outbox_t", "register", "seg", "versions_t",
]


class Who:
    """Clients for tokens of each kind; ``principal[label]`` is the principal behind each."""

    def __init__(self, server: Server, admin: httpx.Client) -> None:
        self.server, self.admin = server, admin
        self.clients: dict[str, httpx.Client] = {}
        self.principal: dict[str, str] = {}
        self.token_name: dict[str, str] = {}

    def add(self, label: str, role: str, principal: str, models: list[str] | None = None) -> None:
        name = f"{label}-{uuid.uuid4().hex[:6]}"
        body: dict[str, Any] = {"name": name, "role": role, "principal": principal}
        if models is not None:
            body["models"] = models
        r = self.admin.post("/tokens", json=body)
        assert r.status_code == 201, r.text
        self.clients[label] = httpx.Client(base_url=self.server.api, timeout=30.0,
                                           headers={"Authorization": f"Bearer {r.json()['token']}"})
        self.principal[label], self.token_name[label] = principal, name

    def __getitem__(self, label: str) -> httpx.Client:
        return self.clients[label]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
