"""The chaos checks themselves, on made-up records: each one fails on the fault it is there to
catch (a check that cannot fail would make the chaos run prove nothing)."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.receivers import Received
from tests.reliability import checks_db, checks_http, checks_webhooks
from tests.reliability.faults import Injected
from tests.reliability.records import Record
from tests.reliability.report import Violations

STALL = [Injected("stall", 100.0, 103.0)]


def rec(status: int | None, code: str | None = None, *, sent: float = 10.0, kind: str = "transition",
        op: int = 1, key: str | None = None, text: str = "", headers: dict[str, str] | None = None,
        **extra: Any) -> Record:
    """A record with these fields; ``extra`` overrides the other defaults, and a name Record does
    not have raises TypeError (a misspelt field must not pass silently)."""
    problem = {"content-type": "application/problem+json"} if status and status >= 400 else {}
    fields: dict[str, Any] = dict(
        client=0, op=op, attempt=0, kind=kind, legal=True, expect=None, method="POST", path="/x",
        body={}, key=key, request_id=f"r{op}-{sent}", token="rel-a", model="m", server="s",
        sent=sent, answered=sent + 0.1, status=status, code=code,
        text=text or json.dumps({"code": code}), headers={**problem, **(headers or {})})
    return Record(**{**fields, **extra})


def kinds(v: Violations) -> set[str]:
    return set(v.counts)


def test_a_500_anywhere_and_a_503_outside_a_stall_are_violations() -> None:
    v = Violations()
    checks_http.check_answers([rec(500, "internal_error", sent=101.0), rec(503, "unavailable", sent=50.0,
                                                                           headers={"retry-after": "1"})], STALL, v)
    assert kinds(v) == {"http_500", "503_outside_stall"}


def test_a_503_in_a_stall_needs_its_code_and_retry_after() -> None:
    good = rec(503, "unavailable", sent=101.0, headers={"retry-after": "1"})
    v = Violations()
    checks_http.check_answers([good, rec(503, "unavailable", sent=102.0)], STALL, v)
    assert dict(v.counts) == {"bad_stall_answer": 1}


def test_refusals_are_checked_against_the_table_and_the_stage_machine() -> None:
    wrong_allowed = rec(409, "invalid_transition", text=json.dumps(
        {"code": "invalid_transition", "from_stage": "none", "to_stage": "production", "allowed": ["staging"]}))
    v = Violations()
    checks_http.check_answers([wrong_allowed, rec(403, "forbidden", kind="register"),
                               rec(404, "not_found", expect=(400, "validation_error")),
                               rec(200, expect=(404, "not_found")), rec(None, error="timeout: ReadTimeout")],
                              STALL, v)
    assert kinds(v) == {"invalid_transition_allowed_wrong", "unexpected_refusal:register:403:forbidden",
                        "wrong_refusal:transition", "illegal_accepted", "client_timeout"}


def test_a_keyed_retry_must_replay_the_original_answer() -> None:
    first = rec(200, key="k", text='{"a": 1}')
    differs = rec(200, key="k", sent=11.0, text='{"a": 2}', headers={"idempotent-replayed": "true"})
    ran_again = rec(200, key="k", sent=12.0, text='{"a": 1}')
    v = Violations()
    checks_http.check_idempotency([first, differs, ran_again], v)
    assert kinds(v) == {"replay_differs", "keyed_request_ran_twice"}


def test_history_with_two_in_production_is_caught() -> None:
    def event(seq: int, version: int, to: str, rid: str, frm: str = "staging") -> dict[str, Any]:
        return {"chain": "1", "sequence": seq, "type": checks_db.STAGE_CHANGED, "model": "m", "version": version,
                "request_id": rid, "data": {"from_stage": frm, "to_stage": to}}

    created = [{"chain": "1", "sequence": i, "type": "model_version.created", "model": "m", "version": i,
                "request_id": f"c{i}", "data": {}} for i in (1, 2)]
    outbox = [*created, event(3, 1, "staging", "a", "none"), event(4, 2, "staging", "b", "none"),
              event(5, 1, "production", "c"), event(6, 2, "production", "d")]
    snap = checks_db.Snapshot(versions=[{"name": "m", "version": 1, "stage": "production"},
                                        {"name": "m", "version": 2, "stage": "production"}],
                              models=[{"name": "m", "last_version": 3}], audit=[], outbox=outbox)
    v = Violations()
    checks_db.check_history(snap, v)
    checks_db.check_versions(snap, v)
    assert kinds(v) == {"two_in_production_history", "two_in_production", "versions_not_dense"}


def test_a_2xx_change_without_its_audit_entry_and_a_refusal_with_one_are_caught() -> None:
    ok = rec(201, kind="register", op=1, text=json.dumps({"version": 3, "stage": "none"}))
    refused = rec(404, "not_found", kind="register", op=2)
    audit = [{"chain": "1", "action": "model_version.created", "model": "m", "version": 4,
              "request_id": refused.request_id}]
    outbox = [{"chain": "1", "type": "model_version.created", "model": "m", "version": 4,
               "request_id": refused.request_id}]
    v = Violations()
    checks_db.check_effects(checks_db.Snapshot([], [], audit, outbox), [ok, refused], v)
    assert kinds(v) == {"effect_count_0:register", "refusal_changed_state:register"}


def _deliveries(arrived: tuple[int, ...], committed: tuple[int, ...]) -> tuple[Violations, dict[str, Any]]:
    """check_deliveries for one subscriber `all` that received the events of model `m` with these
    sequences, in this order, while the outbox holds events with the `committed` sequences."""

    class FakeEndpoint:
        name = "all"
        received = [Received("all", "POST", i, float(i), f"e{seq}", {}, b"", {"type": "t", "data": {
            "id": f"e{seq}", "model": "m", "sequence": seq}}, True, status=200) for i, seq in enumerate(arrived)]

    outbox = [{"id": s, "event_id": f"e{s}", "sequence": s, "type": "t", "model": "m", "at": 0.0} for s in committed]
    sub = checks_webhooks.Sub(FakeEndpoint(), 1, ["*"], None, baseline=0)  # type: ignore[arg-type]
    v = Violations()
    figures = checks_webhooks.check_deliveries([sub], checks_db.Snapshot([], [], [], outbox), [], [], v)
    return v, figures


def test_out_of_order_and_missing_deliveries_are_caught() -> None:
    v, _ = _deliveries(arrived=(1, 3, 2), committed=(1, 2, 3, 4))
    assert kinds(v) == {"delivered_out_of_order", "event_not_delivered"}


def test_a_late_repeat_of_the_same_webhook_id_is_counted_not_flagged() -> None:
    v, figures = _deliveries(arrived=(1, 2, 1), committed=(1, 2))
    assert not v and figures["all"]["late_repeats"] == 1
