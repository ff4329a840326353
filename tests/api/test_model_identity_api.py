"""A model's id is never reused: audit chains, events and ETags are keyed by it (DESIGN.md: "one
chain per registered model, by its immutable id, so a renamed or re-created name never mixes
chains"). On its own server, because a failure here poisons every later create."""

from __future__ import annotations

import httpx

from tests.api.helpers import audit, chain_of, create_model, events, register
from tests.conftest import unique
from tests.support import Server


def test_deleting_the_newest_model_does_not_block_the_next_create(server: Server,
                                                                 c: httpx.Client) -> None:
    create_model(c, "older")
    newest = create_model(c, "newest")
    register(c, newest, 2)
    old_chain = chain_of(server, newest)
    old_etag = c.get(f"/models/{newest}/versions/1").headers["etag"]
    assert c.delete(f"/models/{newest}").status_code == 204

    other = unique("after")
    r = c.post("/models", json={"name": other})
    assert r.status_code == 201, r.text
    assert chain_of(server, other) != old_chain
    # The newcomer's history is its own: nothing of the deleted model leaks into it.
    assert [e["type"] for e in events(c, other)] == ["model.created"]
    assert [a["action"] for a in audit(c, other)] == ["model.created"]
    register(c, other)
    assert c.get(f"/models/{other}/versions/1").headers["etag"] != old_etag


def test_re_creating_the_newest_name_gets_a_new_chain(server: Server, c: httpx.Client) -> None:
    name = create_model(c, "again")
    register(c, name)
    old_chain = chain_of(server, name)
    assert c.delete(f"/models/{name}").status_code == 204

    r = c.post("/models", json={"name": name})
    assert r.status_code == 201, r.text
    assert chain_of(server, name) != old_chain
    assert [e["sequence"] for e in events(c, name)] == [1]
    assert c.get("/audit/verify", params={"model": name}).json()["ok"] is True
