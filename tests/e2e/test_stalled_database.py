"""A database that stalls (its host stops answering, sockets stay open) under a running server:
every request is answered 503 ``unavailable`` with ``Retry-After`` within the documented bound,
``/readyz`` within 2 s, and the server recovers by itself once the database answers again.

The stall is a TCP proxy the test freezes (tests/freeze_proxy.py); the shared cluster is never
stopped or signalled.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest

from tests.freeze_proxy import FreezeProxy
from tests.support import drop_pg_database, migrated_pg_database, run, run_server

# Small bounds so the test is quick; the defaults are larger and documented in the README.
TIMEOUTS = {"REGISTRY_DB_CONNECT_TIMEOUT": "1", "REGISTRY_DB_POOL_TIMEOUT": "1",
            "REGISTRY_DB_COMMAND_TIMEOUT": "2", "REGISTRY_DB_STATEMENT_TIMEOUT": "1.5",
            "REGISTRY_DB_POOL_SIZE": "4", "REGISTRY_RUN_WORKERS": "false"}
BOUND = 1 + 2  # pool wait + one answer's wait: the most a request may wait on a stalled database
SLACK = 1.5  # process scheduling on a loaded two-core machine


def _request(server_url: str, headers: dict[str, str], i: int) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with httpx.Client(base_url=server_url, headers=headers, timeout=60) as c:
        if i % 3 == 0:
            r = c.post("/api/v1/models", json={"name": f"stalled-{i}"})
        elif i % 3 == 1:
            r = c.get("/api/v1/models")
        else:
            r = c.get("/api/v1/models/warm/versions/1")
    return r, time.monotonic() - started


@pytest.mark.postgresql
def test_a_stalled_database_gives_503_with_retry_after_within_the_bound(tmp_path: Path) -> None:
    url = run(migrated_pg_database())
    try:
        with FreezeProxy.for_url(url) as proxy, \
                run_server(proxy.url_for(url), tmp_path, extra_env=TIMEOUTS, migrated=True) as server:
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c:
                assert c.post("/api/v1/models", json={"name": "warm"}).status_code == 201
                assert c.post("/api/v1/models/warm/versions", json={"source": "s3://b/w"}).status_code == 201
            time.sleep(1.2)  # past the token cache: authentication needs the database too
            proxy.freeze()
            try:
                started = time.monotonic()
                ready = httpx.get(server.url + "/readyz", timeout=30)
                ready_took = time.monotonic() - started
                # 40 overlapping requests: ten times the pool, as in the report that found this.
                with concurrent.futures.ThreadPoolExecutor(40) as pool:
                    answers = list(pool.map(lambda i: _request(server.url, server.headers, i), range(40)))
            finally:
                proxy.release()
            assert ready.status_code == 503 and ready.json()["code"] == "unavailable"
            assert ready_took < 2.0, ready_took
            for response, took in answers:
                assert response.status_code == 503, (response.request.url, response.status_code, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["code"] == "unavailable"
                assert int(response.headers["retry-after"]) >= 1
                assert took < BOUND + SLACK, (response.request.url, took)
            _recovers(server.url, server.headers)
            log = server.log.read_text()
            assert '"status": 500' not in log and "Traceback" not in log
    finally:
        run(drop_pg_database(url))


def _recovers(server_url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 15
    with httpx.Client(base_url=server_url, headers=headers, timeout=30) as c:
        while time.monotonic() < deadline:
            if c.get("/readyz").status_code == 200 and c.get("/api/v1/models").status_code == 200:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the server did not recover after the database answered again")
        assert c.post("/api/v1/models", json={"name": "after-the-stall"}).status_code == 201
        assert c.get("/api/v1/models/warm/versions/1").status_code == 200
