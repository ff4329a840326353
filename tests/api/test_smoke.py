"""The walk-through of README on a real server: register, submit, promote, verify."""

from __future__ import annotations

import httpx

from tests.conftest import unique
from tests.support import Server


def test_promoting_v2_archives_v1_in_the_same_response(server: Server) -> None:
    name = unique("fraud")
    with httpx.Client(base_url=server.api, headers=server.headers) as c:
        assert c.post("/models", json={"name": name}).status_code == 201
        for _ in range(2):
            assert c.post(f"/models/{name}/versions", json={"source": "s3://b/m"}).status_code == 201
        for v in (1, 2):
            assert c.post(f"/models/{name}/versions/{v}/transitions",
                          json={"to_stage": "staging"}).status_code == 200
        assert c.post(f"/models/{name}/versions/1/transitions",
                      json={"to_stage": "production"}).status_code == 200
        r = c.post(f"/models/{name}/versions/2/transitions", json={"to_stage": "production"})
        assert r.status_code == 200, r.text
        assert r.json()["transition"]["archived"] == [1]
        assert r.json()["version"]["stage"] == "production"
        assert c.get(f"/models/{name}/versions/1").json()["stage"] == "archived"
        verify = c.get("/audit/verify", params={"model": name}).json()
        assert verify == {"ok": True, "checked": 8, "first_bad_seq": None, "first_bad_chain": None}
