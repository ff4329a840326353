"""Rollbacks against a real ``python -m registry serve`` (issue 13): concurrent rollbacks end where
the production history says, never flip-flopping; ``python -m registry rollback --from N`` is safe
to rerun in a pipeline (exit 3, nothing changed); and any command's output piped into a reader that
closes early ends quietly with 141, without a traceback.

Rounds of eight rollbacks really overlap (every request parked at one gate, then released at once,
as in test_concurrency.py); PostgreSQL runs the server with two HTTP workers, SQLite with its one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.api.helpers import api_client, create_model, events, move, register
from tests.conftest import BACKENDS
from tests.e2e.test_concurrency import Call, assert_no_server_error, assert_overlapped, fire
from tests.e2e.test_pipeline_cli import cli_env, registry
from tests.support import REPO, Server, server_for

ROLLBACKS = 8
STAGE_CHANGED = "model_version.stage_changed"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_for(backend, tmp_path_factory.mktemp(f"rollback-{backend}"),
                    workers=1 if backend == "sqlite" else 2) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with api_client(server) as c:
        yield c


def ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json()


def promoted_in_turn(http: httpx.Client, prefix: str, n: int = 3) -> str:
    """Versions 1..n each promoted in turn: n in production, n-1 the last to leave it."""
    name = create_model(http, prefix)
    for v in range(1, n + 1):
        [registered] = register(http, name, source=f"s3://b/{name}/{v}")
        assert registered["version"] == v, registered
        for stage in ("staging", "production"):
            move(http, name, v, stage)
    return name


def stages(http: httpx.Client, name: str) -> dict[int, str]:
    return {v["version"]: v["stage"] for v in ok(http.get(f"/models/{name}/versions"))["items"]}


def production_steps(http: httpx.Client, name: str) -> list[tuple[int, str, str]]:
    """Every stage change into or out of production, in event order: (version, to, trigger)."""
    return [(e["version"], e["data"]["to_stage"], e["data"]["trigger"]) for e in events(http, name)
            if e["type"] == STAGE_CHANGED and "production" in (e["data"]["from_stage"], e["data"]["to_stage"])]


def rollbacks(name: str, **body: object) -> list[Call]:
    return [Call("POST", f"/models/{name}/rollback", {"comment": f"rollback {i}", **body})
            for i in range(ROLLBACKS)]


# -- concurrent rollbacks -------------------------------------------------------------------------


async def test_concurrent_rollbacks_from_the_same_version_apply_once(backend: str, server: Server,
                                                                     http: httpx.Client) -> None:
    name = promoted_in_turn(http, "rb-once")
    history = production_steps(http, name)

    rnd = await fire(server, f"{ROLLBACKS} rollbacks from v3", rollbacks(name, expected_production_version=3))
    rnd.report(backend)

    assert_no_server_error(server, rnd)
    assert rnd.statuses == Counter({200: 1, 412: ROLLBACKS - 1}), [r.text for r in rnd.responses]
    [applied] = [r.json() for r in rnd.responses if r.status_code == 200]
    assert (applied["version"]["version"], applied["transition"]["archived"]) == (2, [3])
    assert all(r.json()["code"] == "precondition_failed" for r in rnd.responses if r.status_code == 412)
    assert stages(http, name) == {1: "archived", 2: "production", 3: "archived"}
    assert production_steps(http, name) == [*history, (3, "archived", "archive"), (2, "production", "rollback")]
    assert_overlapped(rnd, at_least=2)


async def test_concurrent_rollbacks_walk_back_once_per_step_then_are_refused(
    backend: str, server: Server, http: httpx.Client,
) -> None:
    name = promoted_in_turn(http, "rb-walk")
    history = production_steps(http, name)

    rnd = await fire(server, f"{ROLLBACKS} rollbacks", rollbacks(name))
    rnd.report(backend)

    assert_no_server_error(server, rnd)
    # v3 -> v2 -> v1, then nothing is left: a version a rollback archived is never a target again.
    assert rnd.statuses == Counter({200: 2, 422: ROLLBACKS - 2}), [r.text for r in rnd.responses]
    moves = sorted((r.json()["version"]["version"], r.json()["transition"]["archived"])
                   for r in rnd.responses if r.status_code == 200)
    assert moves == [(1, [2]), (2, [3])]
    for refused in (r.json() for r in rnd.responses if r.status_code == 422):
        assert (refused["code"], refused["failed"]) == ("gate_failed", ["previous_production"])
    assert stages(http, name) == {1: "production", 2: "archived", 3: "archived"}
    assert production_steps(http, name) == [*history, (3, "archived", "archive"), (2, "production", "rollback"),
                                             (2, "archived", "archive"), (1, "production", "rollback")]
    assert_overlapped(rnd, at_least=2)

    # The versions rolled back return only through staging and a promotion, with their gates.
    for v, to in ((3, "production"), (2, "production")):
        r = http.post(f"/models/{name}/versions/{v}/transitions", json={"to_stage": to, "comment": "back"})
        assert r.status_code == 422 and r.json()["failed"] == ["previous_production"], r.text
    move(http, name, 3, "staging")
    moved = move(http, name, 3, "production")
    assert (moved["transition"]["trigger"], moved["transition"]["archived"]) == ("promote", [1])
    # v1 left production normally, so it is the rollback target again.
    back = ok(http.post(f"/models/{name}/rollback", json={"comment": "v3 again", "expected_production_version": 3}))
    assert (back["version"]["version"], back["transition"]["archived"]) == (1, [3])


# -- min_staging_time of a version that never entered staging --------------------------------------


def test_min_staging_time_tells_a_version_in_none_it_has_not_entered_staging(http: httpx.Client) -> None:
    name = create_model(http, "rb-min-staging")
    register(http, name, source="s3://b/1")
    ok(http.put(f"/models/{name}/policies/production", json={"min_staging_seconds": 3}))
    # Registered a while ago: the seconds since then are no time in staging.
    report = ok(http.get(f"/models/{name}/versions/1/gates", params={"to_stage": "production"}))
    [result] = [r for r in report["results"] if r["gate"] == "min_staging_time"]
    assert result == {"gate": "min_staging_time", "passed": False,
                      "detail": "the version has not entered staging: 3 s in staging are required"}


# -- the CLI: rerunnable rollback -----------------------------------------------------------------


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return registry(*args, url=server.url, token=server.token)


def test_cli_rollback_from_a_version_is_safe_to_rerun(server: Server, http: httpx.Client) -> None:
    name = promoted_in_turn(http, "rb-cli")

    first = cli(server, "rollback", name, "--comment", "v3 misfires", "--from", "3")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{name} v2: archived -> production (rollback); archived v3"
    events = production_steps(http, name)

    for _ in range(2):  # the pipeline step runs again: nothing changes, and it says so
        again = cli(server, "rollback", name, "--comment", "v3 misfires", "--from", "3")
        assert again.returncode == 3, (again.stdout, again.stderr)
        assert again.stdout.strip() == (f"nothing to do: {name} v3 is no longer in production (now: v2); "
                                        "nothing was changed")
        assert again.stderr == ""
    as_json = cli(server, "rollback", name, "--comment", "v3 misfires", "--from", "3", "--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["code"] == "precondition_failed"
    assert stages(http, name) == {1: "archived", 2: "production", 3: "archived"}
    assert production_steps(http, name) == events

    second = cli(server, "rollback", name, "--comment", "v2 too", "--from", "2")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"{name} v1: archived -> production (rollback); archived v2"
    last = cli(server, "rollback", name, "--comment", "and again", "--from", "1")
    assert last.returncode == 1, "no step back is left: refused, not 'nothing to do'"
    assert "gate_failed (422)" in last.stderr and "FAIL previous_production: " in last.stderr
    assert stages(http, name) == {1: "production", 2: "archived", 3: "archived"}


def test_cli_rollback_help_tells_the_exit_code_3(server: Server) -> None:
    # A missing --from exiting 2 is test_pipeline_cli.test_usage_errors_exit_2.
    shown = cli(server, "rollback", "--help")
    assert shown.returncode == 0, shown.stderr
    help_text = " ".join(shown.stdout.split())  # argparse wraps it to the terminal's width
    assert "--from N|none" in help_text
    assert "When it is no longer in production nothing is done and the exit code is 3" in help_text, help_text


# -- a reader that closes early --------------------------------------------------------------------


@pytest.mark.parametrize("command", [["checks", "list", "{model}", "1", "--json"], ["token", "list"],
                                     ["gate", "check", "{model}", "1", "--to", "staging", "--json"]],
                         ids=["pipeline", "cli", "gate"])
def test_output_into_a_reader_that_closed_ends_quietly_with_141(
    server: Server, http: httpx.Client, command: list[str],
) -> None:
    """``--json | head`` where head has already gone: no traceback, no "error:", exit 141 (what the
    shell reports for a process killed by SIGPIPE)."""
    name = promoted_in_turn(http, "rb-pipe", 1)
    ok(http.post(f"/models/{name}/versions/1/checks", json={"name": "unit", "status": "success"}), 201)
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(["head", "-c", "0"], stdin=read_end)  # reads nothing, exits
    os.close(read_end)
    assert reader.wait(timeout=10) == 0
    try:
        done = subprocess.run([sys.executable, "-m", "registry", *(a.format(model=name) for a in command)],
                              cwd=REPO, env=cli_env(server.url, server.token), stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.stderr == "", done.stderr
    assert done.returncode == 141
