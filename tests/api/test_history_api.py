"""``GET /models/{name}/history?at=``: what held production, staging and each alias at a moment,
against a real server on both backends.

Moments are the server's own times, read from the audit entries each step wrote (and, for a
transition, checked against the ``transition.at`` of its response), never the client's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, assert_utc, audit, create_model, move, register, seg
from tests.conftest import unique
from tests.support import Server

US = timedelta(microseconds=1)

State = tuple[int | None, list[int], dict[str, int]]   # production, staging, aliases
EMPTY: State = (None, [], {})


def stamp(at: datetime, tz: timezone = UTC) -> str:
    """RFC 3339 with microseconds, e.g. '2026-11-26T12:00:00.123456Z'."""
    return at.astimezone(tz).isoformat(timespec="microseconds").replace("+00:00", "Z")


def get_history(c: httpx.Client, name: str, at: str) -> httpx.Response:
    return c.get(f"/models/{seg(name)}/history", params={"at": at})


def history_at(c: httpx.Client, name: str, at: datetime) -> State:
    """The answer at ``at`` as (production, staging, aliases), after checking its shape."""
    r = get_history(c, name, stamp(at))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"at", "stages", "aliases"}, body
    assert assert_utc(body["at"]) == at, body
    assert set(body["stages"]) == {"production", "staging"}, body
    production, staging = body["stages"]["production"], body["stages"]["staging"]
    assert production is None or set(production) == {"version"}, body
    assert all(set(s) == {"version"} for s in staging), body
    return (None if production is None else production["version"], [s["version"] for s in staging],
            body["aliases"])


def last_at(c: httpx.Client, name: str, action: str | None = None) -> datetime:
    """The server time of the model's latest audit entry (checking its action)."""
    entry = audit(c, name)[-1]
    if action is not None:
        assert entry["action"] == action, entry
    return assert_utc(entry["at"])


def set_alias(c: httpx.Client, name: str, alias: str, version: int) -> None:
    r = c.put(f"/models/{seg(name)}/aliases/{alias}", json={"version": version})
    assert r.status_code == 200, r.text


def transition(c: httpx.Client, name: str, version: int, stage: str, **body: Any) -> datetime:
    """Move the version; the moment is the audit entry's, which the response must agree with."""
    result = move(c, name, version, stage, **body)
    at = last_at(c, name, "model_version.stage_changed")
    assert assert_utc(result["transition"]["at"]) == at, result
    assert assert_utc(result["version"]["updated_at"]) == at, result
    return at


@dataclass
class Step:
    label: str
    at: datetime       # the server time of the step's (last) audit entry
    state: State       # what history must answer from that moment on


def scripted_sequence(c: httpx.Client) -> tuple[str, list[Step]]:
    """The issue's sequence of promotions and alias moves, with the state after each step."""
    name = create_model(c, "hist")
    steps = [Step("created", last_at(c, name, "model.created"), EMPTY)]
    register(c, name, 3)
    steps.append(Step("3 versions registered", last_at(c, name, "model_version.created"), EMPTY))
    steps.append(Step("submit v1", transition(c, name, 1, "staging"), (None, [1], {})))
    steps.append(Step("promote v1", transition(c, name, 1, "production"), (1, [], {})))
    set_alias(c, name, "champion", 1)
    steps.append(Step("champion -> 1", last_at(c, name, "model_version.alias_set"), (1, [], {"champion": 1})))
    steps.append(Step("submit v2", transition(c, name, 2, "staging"), (1, [2], {"champion": 1})))
    steps.append(Step("promote v2, v1 archived", transition(c, name, 2, "production"), (2, [], {"champion": 1})))
    set_alias(c, name, "champion", 2)
    steps.append(Step("champion -> 2", last_at(c, name, "model_version.alias_set"), (2, [], {"champion": 2})))
    steps.append(Step("submit v3", transition(c, name, 3, "staging"), (2, [3], {"champion": 2})))
    set_alias(c, name, "challenger", 3)
    steps.append(Step("challenger -> 3", last_at(c, name, "model_version.alias_set"),
                      (2, [3], {"champion": 2, "challenger": 3})))
    steps.append(Step("rollback to v1", transition(c, name, 1, "production", comment="v2 misbehaves"),
                      (1, [3], {"champion": 2, "challenger": 3})))
    assert c.delete(f"/models/{seg(name)}/aliases/challenger").status_code == 204
    steps.append(Step("delete challenger", last_at(c, name, "model_version.alias_deleted"),
                      (1, [3], {"champion": 2})))
    # Each step is a moment of its own, later than the one before.
    assert all(a.at < b.at for a, b in zip(steps, steps[1:], strict=False)), steps
    return name, steps


@pytest.fixture(scope="module")
def scripted(c: httpx.Client) -> tuple[str, list[Step]]:
    return scripted_sequence(c)


# -- the scripted sequence --------------------------------------------------------------------------


def test_five_moments_of_the_scripted_sequence(c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    """The issue's acceptance check: the right answer at moments spread over the sequence."""
    name, steps = scripted
    by_label = {s.label: s for s in steps}
    created = by_label["created"].at
    assert history_at(c, name, created - US) == EMPTY   # before the model existed
    assert history_at(c, name, by_label["champion -> 1"].at) == (1, [], {"champion": 1})
    assert history_at(c, name, by_label["promote v2, v1 archived"].at) == (2, [], {"champion": 1})
    assert history_at(c, name, by_label["challenger -> 3"].at) == (2, [3], {"champion": 2, "challenger": 3})
    assert history_at(c, name, by_label["rollback to v1"].at) == (1, [3], {"champion": 2, "challenger": 3})
    assert history_at(c, name, by_label["delete challenger"].at) == (1, [3], {"champion": 2})


def test_every_step_from_its_own_moment_and_not_a_microsecond_before(
        c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    """``at`` is inclusive: a step is seen at its own time; one microsecond earlier the state is the
    previous step's."""
    name, steps = scripted
    previous = EMPTY
    for step in steps:
        assert history_at(c, name, step.at) == step.state, step.label
        assert history_at(c, name, step.at - US) == previous, step.label
        previous = step.state


def test_between_steps_the_earlier_state_holds(c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    name, steps = scripted
    for a, b in zip(steps, steps[1:], strict=False):
        assert history_at(c, name, a.at + (b.at - a.at) / 2) == a.state, a.label


def test_long_before_the_model_existed_nothing_held_any_stage(
        c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    """The name is known, so 200; nothing had happened yet, so every stage and alias is empty."""
    name, _ = scripted
    r = get_history(c, name, "2000-01-01T00:00:00Z")
    assert r.status_code == 200, r.text
    assert r.json() == {"at": "2000-01-01T00:00:00Z", "stages": {"production": None, "staging": []},
                        "aliases": {}}


def test_the_answer_now_agrees_with_the_current_state(c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    name, steps = scripted
    later = steps[-1].at + timedelta(days=365)
    assert history_at(c, name, later) == steps[-1].state
    production = c.get(f"/models/{seg(name)}/stages/production").json()["items"]
    staging = c.get(f"/models/{seg(name)}/stages/staging").json()["items"]
    assert [v["version"] for v in production] == [1]
    assert [v["version"] for v in staging] == [3]
    assert c.get(f"/models/{seg(name)}/aliases/champion").json()["version"] == 2
    assert c.get(f"/models/{seg(name)}/aliases/challenger").status_code == 404


def test_the_body_for_one_moment_in_full(c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    name, steps = scripted
    at = next(s.at for s in steps if s.label == "challenger -> 3")
    r = get_history(c, name, stamp(at))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"at": stamp(at), "stages": {"production": {"version": 2}, "staging": [{"version": 3}]},
                        "aliases": {"champion": 2, "challenger": 3}}


OFFSETS = [timedelta(hours=5, minutes=30), timedelta(hours=-8), timedelta(0)]
OFFSET_IDS = ["+05:30", "-08:00", "+00:00"]


def in_offset(at: datetime, offset: timedelta) -> str:
    return at.astimezone(timezone(offset)).isoformat(timespec="microseconds")


@pytest.mark.parametrize("offset", OFFSETS, ids=OFFSET_IDS)
def test_the_same_moment_in_any_offset_gives_the_same_answer(
        c: httpx.Client, scripted: tuple[str, list[Step]], offset: timedelta) -> None:
    """The moment is an instant: written with another offset it names the same one (on SQLite,
    which keeps no zone, too), boundaries included."""
    name, steps = scripted
    previous = EMPTY
    for step in steps:
        for at, expected in ((step.at, step.state), (step.at - US, previous)):
            r = get_history(c, name, in_offset(at, offset))
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["stages"]["production"] == (None if expected[0] is None else {"version": expected[0]})
            assert [s["version"] for s in body["stages"]["staging"]] == expected[1], step.label
            assert body["aliases"] == expected[2], step.label
        previous = step.state


@pytest.mark.parametrize("offset", OFFSETS, ids=OFFSET_IDS)
def test_the_answer_echoes_the_moment_in_utc(
        c: httpx.Client, scripted: tuple[str, list[Step]], offset: timedelta) -> None:
    """Every timestamp the API returns is RFC 3339 UTC (DESIGN.md), the echoed ``at`` too."""
    name, steps = scripted
    at = steps[-1].at
    r = get_history(c, name, in_offset(at, offset))
    assert r.status_code == 200, r.text
    assert assert_utc(r.json()["at"]) == at, r.json()


def test_lower_case_t_and_z_are_rfc_3339_too(c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    name, steps = scripted
    step = steps[-1]
    r = get_history(c, name, stamp(step.at).replace("T", "t").replace("Z", "z"))
    assert r.status_code == 200, r.text
    assert assert_utc(r.json()["at"]) == step.at
    assert r.json()["aliases"] == step.state[2]


# -- a name deleted and created again ---------------------------------------------------------------


def test_a_recreated_name_answers_for_whichever_model_held_it_then(c: httpx.Client) -> None:
    name = unique("hist-recreated")
    create_model(c, name=name)
    register(c, name, 2)
    transition(c, name, 1, "staging")
    transition(c, name, 1, "production")
    set_alias(c, name, "champion", 1)
    t_old = transition(c, name, 2, "staging")
    old_state: State = (1, [2], {"champion": 1})
    transition(c, name, 1, "archived")                  # a model with production cannot be deleted
    t_archived = last_at(c, name)
    assert c.delete(f"/models/{seg(name)}").status_code == 204
    t_deleted = last_at(c, name, "model.deleted")

    # The name now holds nothing, yet its past is still told.
    assert history_at(c, name, t_old) == old_state
    assert history_at(c, name, t_archived) == (None, [2], {"champion": 1})
    assert history_at(c, name, t_deleted) == EMPTY

    create_model(c, name=name)
    t_recreated = last_at(c, name, "model.created")
    assert t_recreated > t_deleted
    register(c, name, 1)
    t_new = transition(c, name, 1, "staging")
    set_alias(c, name, "fresh", 1)
    t_alias = last_at(c, name, "model_version.alias_set")

    # The old model's moments are answered from its own chain, the new model's from the new one.
    assert history_at(c, name, t_old) == old_state
    assert history_at(c, name, t_archived) == (None, [2], {"champion": 1})
    assert history_at(c, name, t_deleted) == EMPTY
    assert history_at(c, name, t_recreated) == EMPTY
    assert history_at(c, name, t_new) == (None, [1], {})
    assert history_at(c, name, t_alias) == (None, [1], {"fresh": 1})


def test_a_deleted_name_still_answers_for_its_past(c: httpx.Client) -> None:
    name = create_model(c, "hist-deleted")
    register(c, name, 1)
    t_staged = transition(c, name, 1, "staging")
    assert c.delete(f"/models/{seg(name)}").status_code == 204
    t_deleted = last_at(c, name, "model.deleted")
    assert history_at(c, name, t_staged) == (None, [1], {})
    assert history_at(c, name, t_deleted - US) == (None, [1], {})
    assert history_at(c, name, t_deleted) == EMPTY


# -- bad moments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", [
    "2026-11-26T12:00:00",            # no offset: not an instant
    "2026-11-26T12:00:00.123456",
    "1764158400",                     # Unix seconds
    "1764158400.5",
    "-1",
    "2026-11-26",                     # a date is not a moment
    "12:00:00Z",
    "2026-11-26T12:00:00+0100",       # offset without its colon
    "2026-11-26T12:00Z",              # seconds are not optional
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-26T12:00:00.1234567Z",   # finer than microseconds
    "now",
    "",
], ids=repr)
def test_an_at_that_is_not_rfc_3339_with_an_offset_is_400(
        c: httpx.Client, scripted: tuple[str, list[Step]], at: str) -> None:
    name, _ = scripted
    assert_problem(get_history(c, name, at), 400, "validation_error")


def test_at_is_required(c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    name, _ = scripted
    assert_problem(c.get(f"/models/{seg(name)}/history"), 400, "validation_error")


# -- models that do not exist for the caller --------------------------------------------------------


def test_a_missing_model_is_404(c: httpx.Client) -> None:
    assert_problem(get_history(c, unique("never-created"), "2026-11-26T12:00:00.123456Z"), 404, "not_found")


def scoped_client(server: Server, c: httpx.Client, models: list[str]) -> httpx.Client:
    r = c.post("/tokens", json={"name": unique("hist-viewer"), "role": "viewer", "models": models})
    assert r.status_code == 201, r.text
    return httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {r.json()['token']}"},
                        timeout=30.0)


def test_a_model_outside_the_tokens_patterns_is_404(
        server: Server, c: httpx.Client, scripted: tuple[str, list[Step]]) -> None:
    name, steps = scripted
    at = stamp(steps[-1].at)
    with scoped_client(server, c, ["other-*"]) as outsider, scoped_client(server, c, [name]) as insider:
        # The same question, asked by a viewer whose patterns cover the model, is answered.
        r = insider.get(f"/models/{seg(name)}/history", params={"at": at})
        assert r.status_code == 200, r.text
        assert r.json()["stages"]["production"] == {"version": 1}
        hidden = assert_problem(outsider.get(f"/models/{seg(name)}/history", params={"at": at}),
                                404, "not_found")
        missing = assert_problem(outsider.get(f"/models/{seg(unique('other'))}/history", params={"at": at}),
                                 404, "not_found")
        # A hidden model looks exactly like a missing one (but for the name it was asked by).
        assert {k: v for k, v in hidden.items() if k not in {"detail", "instance"}} == \
               {k: v for k, v in missing.items() if k not in {"detail", "instance"}}
