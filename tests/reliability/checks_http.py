"""Checks on the answers the clients recorded: no 5xx outside the stalls and 503 within them,
nothing unanswered, every refusal with a code its operation may give (and the exact one where
the refusal cannot depend on timing), and keyed retries answered with the original answer."""

from __future__ import annotations

from collections import defaultdict

from tests.reliability.actions import ALLOWED
from tests.reliability.faults import Injected
from tests.reliability.profile import ANSWER_BOUND, STALL_GRACE
from tests.reliability.records import Record
from tests.reliability.report import Violations

PROBLEM = "application/problem+json"
_TRANSITION = {(400, "validation_error"), (404, "not_found"), (409, "invalid_transition"), (409, "conflict"),
               (412, "precondition_failed"), (422, "gate_failed")}
# The (status, code) pairs each operation may answer besides its success (DESIGN.md, README).
REFUSALS: dict[str, set[tuple[int, str]]] = {
    "register": {(400, "validation_error"), (404, "not_found")},
    "transition": _TRANSITION,
    "rollback": _TRANSITION,
    "alias_set": {(400, "validation_error"), (404, "not_found")},
    "alias_delete": {(404, "not_found")},
    "request_transition": {(400, "validation_error"), (404, "not_found"), (409, "invalid_transition"),
                           (409, "conflict")},
    "approve": {(404, "not_found"), (409, "conflict")},
    "create_model": {(400, "validation_error"), (409, "already_exists")},
    "get_alias": {(404, "not_found")},
    "missing_model": {(404, "not_found")},
}
SUCCESS = {"register": 201, "request_transition": 201, "create_model": 201, "alias_delete": 204}


def check_answers(records: list[Record], faults: list[Injected], v: Violations) -> None:
    v.check("every request answered within the client timeout; transport errors only from killed replicas")
    v.check(f"every answer within {ANSWER_BOUND:g} s")
    v.check(f"no 5xx outside a stall (+{STALL_GRACE:g} s grace); a 503 there is `unavailable` with Retry-After")
    v.check("no 500 anywhere")
    v.check("every refusal is a problem document whose (status, code) its operation may give")
    v.check("deterministic refusals get exactly their (status, code); invalid_transition lists `allowed`")
    v.check("GET …/stages/production never lists two versions")
    stalls = [(f.start, f.end + STALL_GRACE) for f in faults if f.kind == "stall"]
    kills = {f.target: f.start for f in faults if f.kind.startswith("kill_serve")}
    for r in records:
        if r.status is None:
            _unanswered(r, kills, v)
            continue
        if r.answered - r.sent > ANSWER_BOUND:
            v.add("slow_answer", r.brief())
        if r.status >= 500:
            _server_error(r, stalls, v)
        elif r.status >= 400:
            _refusal(r, v)
        elif r.expect is not None:
            v.add("illegal_accepted", r.brief())
        elif r.kind == "production" and len((r.json or {}).get("items", [])) > 1:
            v.add("two_in_production_read", r.brief())


def _unanswered(r: Record, kills: dict[str, float], v: Violations) -> None:
    if (r.error or "").startswith("timeout"):
        v.add("client_timeout", r.brief())
    elif not (r.server in kills and kills[r.server] <= r.answered + 0.5):
        v.add("transport_error", r.brief())  # the replica it went to was not killed


def _server_error(r: Record, stalls: list[tuple[float, float]], v: Violations) -> None:
    if r.status == 500:
        v.add("http_500", r.brief())
        return
    inside = any(r.sent <= end and r.answered >= start for start, end in stalls)
    if not inside:
        v.add(f"{r.status}_outside_stall", r.brief())
    elif r.status != 503 or r.code != "unavailable" or "retry-after" not in r.headers:
        v.add("bad_stall_answer", r.brief())


def _refusal(r: Record, v: Violations) -> None:
    if r.headers.get("content-type", "").split(";")[0] != PROBLEM or not r.code:
        v.add("refusal_not_a_problem", r.brief())
        return
    pair = (r.status, r.code)
    if r.key and pair == (409, "idempotency_in_progress"):
        return  # the same key is still running elsewhere: a legal answer to any keyed POST
    allowed = REFUSALS.get(r.kind, set())
    if pair not in allowed:
        v.add(f"unexpected_refusal:{r.kind}:{r.status}:{r.code}", r.brief())
    elif r.expect is not None and pair != r.expect:
        v.add(f"wrong_refusal:{r.kind}", {**r.brief(), "expected": r.expect})
    if r.code == "invalid_transition":
        body = r.json or {}
        want = ALLOWED.get(body.get("from_stage", ""))
        if want is None or sorted(body.get("allowed") or []) != sorted(want) or body.get("to_stage") in want:
            v.add("invalid_transition_allowed_wrong", r.brief())
    if r.code == "gate_failed" and not (r.json or {}).get("failed"):
        v.add("gate_failed_without_results", r.brief())


def check_idempotency(records: list[Record], v: Violations) -> dict[str, int]:
    """Per keyed operation: every replay (``Idempotent-Replayed: true``) has the status and body
    of the one attempt that ran; an attempt sent after a replayable answer was received must be
    a replay; and at most one attempt ran."""
    v.check("a keyed retry gets the original answer byte for byte, with Idempotent-Replayed: true")
    ops: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        if r.key:
            ops[r.op].append(r)
    figures = {"keyed_operations": len(ops), "retried": 0, "replays": 0, "in_progress": 0,
               "refusal_rerun_same_answer": 0}
    for attempts in ops.values():
        attempts.sort(key=lambda r: r.sent)
        figures["retried"] += len(attempts) > 1
        figures["replays"] += sum(r.replayed for r in attempts)
        figures["in_progress"] += sum(r.code == "idempotency_in_progress" for r in attempts)
        _one_operation(attempts, v)
        fresh = [r for r in attempts if _replayable(r) and not r.replayed]
        figures["refusal_rerun_same_answer"] += len(fresh) > 1 and not fresh[0].ok and all(
            (r.status, r.text) == (fresh[0].status, fresh[0].text) for r in fresh)
    return figures


def _replayable(r: Record) -> bool:
    """An answer the service stores for the key (not 5xx, not in-progress, not a lost race)."""
    return (r.status is not None and r.status < 500 and r.code not in ("idempotency_in_progress", "conflict",
                                                                        "idempotency_conflict"))


def _one_operation(attempts: list[Record], v: Violations) -> None:
    if any(r.code == "idempotency_conflict" for r in attempts):
        v.add("idempotency_conflict_on_same_body", attempts[0].brief())
    fresh = [r for r in attempts if _replayable(r) and not r.replayed]
    replays = [r for r in attempts if r.replayed]
    if sum(r.ok for r in fresh) > 1:
        v.add("keyed_request_ran_twice", [r.brief() for r in fresh])
    for replay in replays:
        if fresh and (replay.status, replay.text) != (fresh[0].status, fresh[0].text):
            v.add("replay_differs", {"original": fresh[0].brief(), "replay": replay.brief()})
    # A retry sent after the original's answer arrived must be its replay. One that ran afresh
    # and got the very same refusal (a 400 the framework gives before any transaction, so there
    # is nothing stored) is counted in the figures, not as a violation: the client cannot tell.
    for later in fresh[1:]:
        if later.sent > fresh[0].answered and (later.status, later.text) != (fresh[0].status, fresh[0].text):
            v.add("retry_not_replayed", {"original": fresh[0].brief(), "retry": later.brief()})


def stall_answers(records: list[Record], faults: list[Injected]) -> dict[str, object]:
    """What requests overlapping a stall got, and how long they waited (the figures for the note)."""
    stalls = [(f.start, f.end) for f in faults if f.kind == "stall"]
    inside = [r for r in records if any(r.sent <= end and r.answered >= start for start, end in stalls)]
    waits = sorted(r.answered - r.sent for r in inside)
    answers: dict[str, int] = defaultdict(int)
    for r in inside:
        answers["no answer" if r.status is None else f"{r.status} {r.code or ''}".strip()] += 1
    return {"requests": len(inside), "answers": dict(sorted(answers.items())),
            "max_wait_s": round(waits[-1], 2) if waits else None,
            "p50_wait_s": round(waits[len(waits) // 2], 2) if waits else None}
