"""The stage machine over HTTP: refused edges with `allowed`, promotion archiving the incumbent,
optimistic preconditions, rollback gates, stage history and membership, and the rows one
promotion writes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from tests.api.helpers import (
    GENESIS,
    assert_problem,
    assert_utc,
    audit,
    audit_t,
    chains_t,
    create_model,
    db_rows,
    events,
    model_id,
    move,
    outbox_t,
    register,
    versions_t,
)
from tests.support import Server

ALLOWED = {
    "none": {"staging", "archived"},
    "staging": {"production", "archived", "none"},
    "production": {"archived"},
    "archived": {"staging", "production"},
}
# How to bring a fresh version 1 into each stage.
ROUTE = {
    "none": [],
    "staging": ["staging"],
    "production": ["staging", "production"],
    "archived": ["archived"],
}


def post(c: httpx.Client, name: str, version: int, body: dict, **headers: str) -> httpx.Response:
    return c.post(f"/models/{name}/versions/{version}/transitions", json=body, headers=headers)


def stage_of(c: httpx.Client, name: str, version: int) -> str:
    return c.get(f"/models/{name}/versions/{version}").json()["stage"]


def staged(c: httpx.Client, prefix: str, count: int) -> str:
    """A model with ``count`` versions, all in staging."""
    name = create_model(c, prefix)
    register(c, name, count)
    for v in range(1, count + 1):
        move(c, name, v, "staging")
    return name


# -- the response of a transition -----------------------------------------------------------------


def test_submit_answers_200_with_the_version_and_the_transition(c: httpx.Client) -> None:
    name = create_model(c, "submit")
    register(c, name)
    before = c.get(f"/models/{name}/versions/1").json()
    r = post(c, name, 1, {"to_stage": "staging", "comment": "ready for shadow traffic"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"version", "transition"}
    v, t = body["version"], body["transition"]
    assert (v["version"], v["stage"]) == (1, "staging")
    assert {k: t[k] for k in ("from_stage", "to_stage", "trigger", "actor", "archived", "comment")} == {
        "from_stage": "none", "to_stage": "staging", "trigger": "submit", "actor": "admin",
        "archived": [], "comment": "ready for shadow traffic"}
    assert assert_utc(t["at"]) == assert_utc(v["updated_at"]) > assert_utc(before["updated_at"])
    assert r.headers["etag"] == v["etag"] != before["etag"]
    assert c.get(f"/models/{name}/versions/1").json() == v


@pytest.mark.parametrize(("route", "target", "trigger"), [
    ([], "staging", "submit"), ([], "archived", "archive"),
    (["staging"], "production", "promote"), (["staging"], "none", "withdraw"),
    (["staging"], "archived", "archive"), (["staging", "production"], "archived", "archive"),
    (["archived"], "staging", "restore"),
])
def test_each_edge_of_the_table_reports_its_trigger(c: httpx.Client, route: list[str], target: str,
                                                    trigger: str) -> None:
    name = create_model(c, "edge")
    register(c, name)
    for stage in route:
        move(c, name, 1, stage)
    source = route[-1] if route else "none"
    t = move(c, name, 1, target)["transition"]
    assert (t["from_stage"], t["to_stage"], t["trigger"]) == (source, target, trigger)
    assert stage_of(c, name, 1) == target


# -- refused edges --------------------------------------------------------------------------------


def test_none_to_production_is_409_invalid_transition_with_allowed(c: httpx.Client) -> None:
    name = create_model(c, "skip")
    register(c, name)
    n_events, n_audit = len(events(c, name)), len(audit(c, name))
    body = assert_problem(post(c, name, 1, {"to_stage": "production"}), 409, "invalid_transition")
    assert sorted(body["allowed"]) == ["archived", "staging"]
    assert (body.get("from_stage"), body.get("to_stage")) == ("none", "production")
    assert stage_of(c, name, 1) == "none"
    assert (len(events(c, name)), len(audit(c, name))) == (n_events, n_audit)


@pytest.mark.parametrize("current", list(ALLOWED))
def test_every_refused_target_lists_the_allowed_ones(c: httpx.Client, current: str) -> None:
    name = create_model(c, "refuse")
    register(c, name)
    for stage in ROUTE[current]:
        move(c, name, 1, stage)
    etag = c.get(f"/models/{name}/versions/1").headers["etag"]
    for target in sorted(set(ALLOWED) - ALLOWED[current]):  # the same stage included
        body = assert_problem(post(c, name, 1, {"to_stage": target}), 409, "invalid_transition")
        assert set(body["allowed"]) == ALLOWED[current], (current, target)
        assert len(body["allowed"]) == len(ALLOWED[current])
    assert stage_of(c, name, 1) == current
    assert c.get(f"/models/{name}/versions/1").headers["etag"] == etag


@pytest.mark.parametrize("body", [
    {"to_stage": "prod"}, {"to_stage": "Production"}, {"to_stage": ""}, {},
    {"to_stage": "staging", "bogus": 1}, {"to_stage": "staging", "expected_stage": "live"},
    {"to_stage": "staging", "expected_production_version": 0},
    {"to_stage": "staging", "expected_production_version": -3},
    {"to_stage": "staging", "comment": 5},
], ids=lambda b: ",".join(f"{k}={v!r}" for k, v in b.items()) or "empty")
def test_malformed_transition_requests_are_400(c: httpx.Client, body: dict) -> None:
    name = create_model(c, "badmove")
    register(c, name)
    assert_problem(post(c, name, 1, body), 400, "validation_error")
    assert stage_of(c, name, 1) == "none"


# -- promotion ------------------------------------------------------------------------------------


def test_promoting_v2_archives_v1_in_the_same_response(c: httpx.Client) -> None:
    name = staged(c, "promote", 3)
    first = move(c, name, 1, "production")
    assert first["transition"]["archived"] == []

    r = post(c, name, 2, {"to_stage": "production", "comment": "better auc"})
    assert r.status_code == 200, r.text
    t = r.json()["transition"]
    assert (t["from_stage"], t["to_stage"], t["trigger"], t["archived"]) == (
        "staging", "production", "promote", [1])
    assert r.json()["version"]["stage"] == "production"
    assert [stage_of(c, name, v) for v in (1, 2, 3)] == ["archived", "production", "staging"]

    production = c.get(f"/models/{name}/stages/production").json()["items"]
    assert [v["version"] for v in production] == [2]
    assert [v["version"] for v in c.get(f"/models/{name}/stages/archived").json()["items"]] == [1]
    assert [v["version"] for v in c.get(f"/models/{name}/stages/staging").json()["items"]] == [3]
    assert c.get(f"/models/{name}/stages/none").json()["items"] == []

    # The incumbent's archive is recorded in its own history, with the trigger `archive`.
    history = c.get(f"/models/{name}/versions/1/transitions").json()["items"]
    assert [(h["from_stage"], h["to_stage"], h["trigger"]) for h in history] == [
        ("none", "staging", "submit"), ("staging", "production", "promote"),
        ("production", "archived", "archive")]
    assert history[-1]["comment"] == "better auc"
    assert assert_utc(history[-1]["at"]) == assert_utc(t["at"])


def test_production_has_zero_or_one_member(c: httpx.Client) -> None:
    name = staged(c, "single", 4)
    assert c.get(f"/models/{name}/stages/production").json() == {"items": []}
    for v in (1, 2, 3, 4):
        move(c, name, v, "production")
        members = c.get(f"/models/{name}/stages/production").json()["items"]
        assert [m["version"] for m in members] == [v]
    assert [m["version"] for m in c.get(f"/models/{name}/stages/archived").json()["items"]] == [1, 2, 3]
    move(c, name, 4, "archived")
    assert c.get(f"/models/{name}/stages/production").json() == {"items": []}


@pytest.mark.parametrize("stage", ["prod", "PRODUCTION", "latest", "none "])
def test_an_unknown_stage_in_the_path_is_400(c: httpx.Client, stage: str) -> None:
    name = create_model(c, "badstage")
    assert_problem(c.get(f"/models/{name}/stages/{stage}"), 400, "validation_error")


# -- preconditions --------------------------------------------------------------------------------


def test_a_stale_expected_stage_is_412_and_changes_nothing(c: httpx.Client) -> None:
    name = staged(c, "expstage", 1)
    n_events = len(events(c, name))
    assert_problem(post(c, name, 1, {"to_stage": "production", "expected_stage": "none"}),
                   412, "precondition_failed")
    assert stage_of(c, name, 1) == "staging"
    assert len(events(c, name)) == n_events
    r = post(c, name, 1, {"to_stage": "production", "expected_stage": "staging"})
    assert r.status_code == 200, r.text


def test_a_stale_expected_production_version_is_412(c: httpx.Client) -> None:
    name = staged(c, "expprod", 3)
    # No production version yet: null is right, a number is stale.
    assert_problem(post(c, name, 1, {"to_stage": "production", "expected_production_version": 3}),
                   412, "precondition_failed")
    move(c, name, 1, "production", expected_production_version=None)

    n_events = len(events(c, name))
    for stale in (None, 2, 3):
        assert_problem(post(c, name, 2, {"to_stage": "production", "expected_production_version": stale}),
                       412, "precondition_failed")
    assert [stage_of(c, name, v) for v in (1, 2)] == ["production", "staging"]
    assert len(events(c, name)) == n_events

    t = move(c, name, 2, "production", expected_production_version=1)["transition"]
    assert t["archived"] == [1]
    # Omitting the field means "no expectation".
    assert move(c, name, 3, "production")["transition"]["archived"] == [2]


def test_a_stale_if_match_is_412_and_the_current_one_passes(c: httpx.Client) -> None:
    name = create_model(c, "ifmove")
    register(c, name)
    url = f"/models/{name}/versions/1"
    etag0 = c.get(url).headers["etag"]
    assert c.patch(url, json={"description": "changed"}).status_code == 200
    assert_problem(post(c, name, 1, {"to_stage": "staging"}, **{"If-Match": etag0}),
                   412, "precondition_failed")
    assert stage_of(c, name, 1) == "none"
    etag1 = c.get(url).headers["etag"]
    r = post(c, name, 1, {"to_stage": "staging"}, **{"If-Match": etag1})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] not in (etag0, etag1)


# -- rollback -------------------------------------------------------------------------------------


def test_rollback_needs_a_comment_and_the_most_recent_previous_production(c: httpx.Client) -> None:
    name = staged(c, "rollback", 3)
    for v in (1, 2, 3):
        move(c, name, v, "production")  # v1 and v2 are archived on the way; v2 left last
    n_events = len(events(c, name))

    body = assert_problem(post(c, name, 1, {"to_stage": "production", "comment": "v3 is broken"}),
                          422, "gate_failed")
    results = {r["gate"]: r for r in body["results"]}
    assert body["failed"] == ["previous_production"]
    assert results["previous_production"]["passed"] is False
    assert results["comment"]["passed"] is True
    assert all(isinstance(r["detail"], str) and r["detail"] for r in body["results"])

    for comment in ({}, {"comment": ""}, {"comment": "   "}, {"comment": None}):
        body = assert_problem(post(c, name, 2, {"to_stage": "production", **comment}), 422, "gate_failed")
        assert body["failed"] == ["comment"]
        assert {r["gate"]: r["passed"] for r in body["results"]} == {
            "stage_table": True, "previous_production": True, "comment": False}

    # Both gates fail at once: every result is reported, not only the first.
    body = assert_problem(post(c, name, 1, {"to_stage": "production"}), 422, "gate_failed")
    assert sorted(body["failed"]) == ["comment", "previous_production"]
    assert [r["gate"] for r in body["results"]] == ["stage_table", "previous_production", "comment"]

    assert [stage_of(c, name, v) for v in (1, 2, 3)] == ["archived", "archived", "production"]
    assert len(events(c, name)) == n_events

    r = post(c, name, 2, {"to_stage": "production", "comment": "v3 is broken"})
    assert r.status_code == 200, r.text
    t = r.json()["transition"]
    assert (t["from_stage"], t["trigger"], t["archived"], t["comment"]) == (
        "archived", "rollback", [3], "v3 is broken")
    assert [stage_of(c, name, v) for v in (1, 2, 3)] == ["archived", "production", "archived"]
    # v3 left production by a rollback: never a rollback target again; the next step back is v1.
    body = assert_problem(post(c, name, 3, {"to_stage": "production", "comment": "fixed after all"}),
                          422, "gate_failed")
    assert body["failed"] == ["previous_production"]
    assert "version 3 left production by a rollback" in body["results"][1]["detail"]
    assert move(c, name, 1, "production", comment="again")["transition"]["archived"] == [2]
    assert [stage_of(c, name, v) for v in (1, 2, 3)] == ["production", "archived", "archived"]


def test_a_version_never_in_production_cannot_be_rolled_back_to(c: httpx.Client) -> None:
    name = create_model(c, "neverprod")
    register(c, name)
    move(c, name, 1, "archived")
    body = assert_problem(post(c, name, 1, {"to_stage": "production", "comment": "why not"}),
                          422, "gate_failed")
    assert body["failed"] == ["previous_production"]
    assert stage_of(c, name, 1) == "archived"


def test_rollback_with_no_incumbent_archives_nothing(c: httpx.Client) -> None:
    name = staged(c, "noincumbent", 1)
    move(c, name, 1, "production")
    move(c, name, 1, "archived")
    t = move(c, name, 1, "production", comment="restore service")["transition"]
    assert (t["trigger"], t["archived"]) == ("rollback", [])


# -- history --------------------------------------------------------------------------------------


def test_stage_history_is_oldest_first_with_who_when_and_why(c: httpx.Client) -> None:
    name = create_model(c, "history")
    register(c, name)
    assert c.get(f"/models/{name}/versions/1/transitions").json() == {"items": []}
    steps = [("staging", "submit", "s1"), ("none", "withdraw", None), ("staging", "submit", "s2"),
             ("production", "promote", "go"), ("archived", "archive", "retire")]
    ats = []
    for stage, _, comment in steps:
        ats.append(move(c, name, 1, stage, **({"comment": comment} if comment else {}),
                        )["transition"]["at"])
    history = c.get(f"/models/{name}/versions/1/transitions").json()["items"]
    assert [(h["to_stage"], h["trigger"], h["comment"]) for h in history] == [
        (s, t, cm) for s, t, cm in steps]
    assert [h["from_stage"] for h in history] == ["none", "staging", "none", "staging", "production"]
    parsed = [assert_utc(a) for a in ats]
    assert [assert_utc(h["at"]) for h in history] == parsed == sorted(parsed)
    assert all(h["actor"] == "admin" and h["request_id"] for h in history)
    seqs = [h["audit_seq"] for h in history]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# -- rows written ---------------------------------------------------------------------------------


def test_a_promotion_writes_exactly_the_expected_rows(server: Server, c: httpx.Client) -> None:
    name = staged(c, "rows", 2)
    move(c, name, 1, "production")
    mid = model_id(server, name)
    chain = f"model:{mid}"

    r = post(c, name, 2, {"to_stage": "production", "comment": "ship"}, **{"X-Request-ID": "rows-req-1"})
    assert r.status_code == 200, r.text

    versions = db_rows(server, select(versions_t.c.version, versions_t.c.stage)
                       .where(versions_t.c.model_id == mid).order_by(versions_t.c.version))
    assert [tuple(v) for v in versions] == [(1, "archived"), (2, "production")]

    audit_rows = db_rows(server, select(audit_t).where(audit_t.c.chain == chain).order_by(audit_t.c.seq))
    assert [(a.seq, a.action, a.version) for a in audit_rows] == [
        (1, "model.created", None),
        (2, "model_version.created", 1),
        (3, "model_version.created", 2),
        (4, "model_version.stage_changed", 1),   # submit v1
        (5, "model_version.stage_changed", 2),   # submit v2
        (6, "model_version.stage_changed", 1),   # promote v1
        (7, "model_version.stage_changed", 1),   # v1 archived as the incumbent ...
        (8, "model_version.stage_changed", 2),   # ... before v2 is promoted, in one transaction
    ]
    assert audit_rows[0].prev_hash == GENESIS
    for prev, row in zip(audit_rows, audit_rows[1:], strict=False):
        assert row.prev_hash == prev.hash
    promotion = audit_rows[-2:]
    assert {a.request_id for a in promotion} == {"rows-req-1"}
    assert {a.actor for a in promotion} == {"admin"}
    assert promotion[0].at == promotion[1].at
    assert all(a.request_id != "rows-req-1" for a in audit_rows[:-2])

    outbox = db_rows(server, select(outbox_t).where(outbox_t.c.chain == chain).order_by(outbox_t.c.sequence))
    assert [(e.sequence, e.type, e.version) for e in outbox] == [
        (a.seq, a.action, a.version) for a in audit_rows]
    assert len({e.event_id for e in outbox}) == len(outbox)
    archived_event, promoted_event = outbox[-2:]
    assert {e.request_id for e in (archived_event, promoted_event)} == {"rows-req-1"}
    assert {k: archived_event.data[k] for k in ("from_stage", "to_stage", "trigger", "comment")} == {
        "from_stage": "production", "to_stage": "archived", "trigger": "archive", "comment": "ship"}
    assert {k: promoted_event.data[k] for k in ("from_stage", "to_stage", "trigger", "comment")} == {
        "from_stage": "staging", "to_stage": "production", "trigger": "promote", "comment": "ship"}

    (head,) = db_rows(server, select(chains_t).where(chains_t.c.id == chain))
    assert (head.audit_seq, head.event_seq, head.audit_hash) == (8, 8, audit_rows[-1].hash)
    assert head.model_id == mid


def test_refused_transitions_write_no_rows(server: Server, c: httpx.Client) -> None:
    name = staged(c, "norows", 2)
    move(c, name, 1, "production")
    chain = f"model:{model_id(server, name)}"

    def counts() -> tuple[int, int, list]:
        a = db_rows(server, select(audit_t.c.id).where(audit_t.c.chain == chain))
        o = db_rows(server, select(outbox_t.c.id).where(outbox_t.c.chain == chain))
        v = db_rows(server, select(versions_t.c.version, versions_t.c.stage, versions_t.c.revision)
                    .where(versions_t.c.model_id == model_id(server, name)).order_by(versions_t.c.version))
        return len(a), len(o), [tuple(r) for r in v]

    before = counts()
    assert_problem(post(c, name, 2, {"to_stage": "none", "expected_stage": "none"}), 412, "precondition_failed")
    assert_problem(post(c, name, 2, {"to_stage": "production", "expected_production_version": 2}),
                   412, "precondition_failed")
    assert_problem(post(c, name, 1, {"to_stage": "staging"}), 409, "invalid_transition")
    move(c, name, 1, "archived")
    after_archive = counts()
    assert after_archive[0] == before[0] + 1 and after_archive[1] == before[1] + 1
    assert_problem(post(c, name, 2, {"to_stage": "archived", "expected_stage": "production"}),
                   412, "precondition_failed")
    assert counts() == after_archive
