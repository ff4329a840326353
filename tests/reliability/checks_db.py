"""Checks against the database itself (a direct connection, not through the proxy): at most one
production version per model at every point of its event history, dense version numbers, one
audit entry and one event for every change that was answered 2xx (and none for a refusal), and
audit chains that verify."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg

from tests.reliability.records import Record
from tests.reliability.report import Violations
from tests.support import asyncpg_dsn

STAGE_CHANGED = "model_version.stage_changed"
# The audit action each successful operation must have written, once, for its model.
PRIMARY = {"register": "model_version.created", "transition": STAGE_CHANGED, "rollback": STAGE_CHANGED,
           "alias_set": "model_version.alias_set", "alias_delete": "model_version.alias_deleted",
           "request_transition": "transition_request.created", "approve": "transition_request.approved",
           "create_model": "model.created"}

# A PUT of an alias to the version it already names changes nothing and writes nothing.
NOOP_OK = {"alias_set"}


@dataclass
class Snapshot:
    versions: list[asyncpg.Record]
    models: list[asyncpg.Record]
    audit: list[asyncpg.Record]
    outbox: list[asyncpg.Record]


async def snapshot(database_url: str) -> Snapshot:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return Snapshot(
            await conn.fetch("SELECT m.name, v.version, v.stage FROM model_versions v "
                             "JOIN registered_models m ON m.id = v.model_id ORDER BY m.name, v.version"),
            await conn.fetch("SELECT name, last_version FROM registered_models"),
            await conn.fetch("SELECT chain, seq, action, model, version, request_id FROM audit_log "
                             "ORDER BY chain, seq"),
            await conn.fetch("SELECT id, event_id, chain, sequence, type, model, version, request_id, data, "
                             "extract(epoch from at)::float8 AS at FROM outbox_events ORDER BY id"))
    finally:
        await conn.close()


def check_versions(snap: Snapshot, v: Violations) -> dict[str, Any]:
    v.check("version numbers per model are 1..n with no gap, n = the model's counter")
    v.check("at most one version per model in production (end state)")
    by_model: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in snap.versions:
        by_model[row["name"]].append(row)
    counters = {row["name"]: row["last_version"] for row in snap.models}
    for name, rows in by_model.items():
        numbers = [r["version"] for r in rows]
        if numbers != list(range(1, len(numbers) + 1)) or counters.get(name) != len(numbers):
            v.add("versions_not_dense", {"model": name, "numbers": numbers[:50], "counter": counters.get(name)})
        prod = [r["version"] for r in rows if r["stage"] == "production"]
        if len(prod) > 1:
            v.add("two_in_production", {"model": name, "versions": prod})
    return {"versions_per_model": {n: len(rows) for n, rows in sorted(by_model.items())}}


def check_numbers_answered(records: list[Record], v: Violations) -> None:
    """Two different registrations answered 201 with the same number: one of them was answered
    as committed and then lost (its number allocated again)."""
    v.check("no two registrations were answered 201 with the same version number")
    seen: dict[tuple[str, int], Record] = {}
    for r in records:
        body = r.json if r.ok and r.kind == "register" else None
        if not isinstance(body, dict) or not isinstance(body.get("version"), int):
            continue
        earlier = seen.setdefault((r.model, body["version"]), r)
        if earlier.op != r.op:
            v.add("version_number_answered_twice", {"first": earlier.brief(), "second": r.brief()})


def check_history(snap: Snapshot, v: Violations) -> int:
    """Replays each model's stage changes in sequence order, one transaction (request id) at a
    time: never two in production after one, each change from the stage the last one left, and
    the end of the replay is the stage the table holds."""
    v.check("replayed stage history: never two versions in production after any committed change")
    v.check("replayed stage history: each change starts where the previous left; ends at the stored stage")
    stages: dict[str, dict[int, str]] = defaultdict(dict)
    groups: dict[str, list[list[asyncpg.Record]]] = defaultdict(list)
    for e in sorted(snap.outbox, key=lambda e: (e["chain"], e["sequence"])):
        if e["type"] == "model_version.created":
            stages[e["model"]][e["version"]] = "none"
        if e["type"] != STAGE_CHANGED:
            continue
        runs = groups[e["model"]]
        if runs and runs[-1][-1]["request_id"] == e["request_id"]:
            runs[-1].append(e)
        else:
            runs.append([e])
    for model, runs in groups.items():
        for run in runs:
            for e in run:
                data = _data(e)
                if stages[model].get(e["version"]) != data.get("from_stage"):
                    v.add("history_discontinuous", {"model": model, "version": e["version"], "event": data,
                                                    "replayed": stages[model].get(e["version"])})
                stages[model][e["version"]] = data.get("to_stage", "?")
            prod = [n for n, s in stages[model].items() if s == "production"]
            if len(prod) > 1:
                v.add("two_in_production_history", {"model": model, "versions": prod,
                                                    "request_id": run[0]["request_id"]})
    stored = {(r["name"], r["version"]): r["stage"] for r in snap.versions}
    replayed = {(m, n): s for m, vs in stages.items() for n, s in vs.items()}
    for key in stored.keys() | replayed.keys():
        if stored.get(key) != replayed.get(key):
            v.add("history_disagrees_with_table", {"version": key, "stored": stored.get(key),
                                                   "replayed": replayed.get(key)})
    return sum(len(runs) for runs in groups.values())


def _data(e: asyncpg.Record) -> dict[str, Any]:
    data = e["data"]
    return json.loads(data) if isinstance(data, str) else data


def check_effects(snap: Snapshot, records: list[Record], v: Violations) -> None:
    """Audit entries and events, matched to the requests by request id."""
    v.check("each request id's audit entries and outbox events name the same (action, model, version)s")
    v.check("every 2xx change has exactly one audit entry for it (and its event; none for an alias PUT "
            "to where it already points); a refused one has none")
    audit = defaultdict(Counter)
    events = defaultdict(Counter)
    for a in snap.audit:
        if a["chain"] != "system":
            audit[a["request_id"]][(a["action"], a["model"], a["version"])] += 1
    for e in snap.outbox:
        if e["chain"] != "system":
            events[e["request_id"]][(e["type"], e["model"], e["version"])] += 1
    for rid in audit.keys() | events.keys():
        if audit[rid] != events[rid]:
            v.add("audit_event_mismatch", {"request_id": rid, "audit": dict(audit[rid]), "events": dict(events[rid])})
    ops: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        ops[r.op].append(r)
    by_effect: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for a in snap.audit:
        by_effect[(a["action"], a["model"], a["version"])].append(a["request_id"])
    for attempts in ops.values():
        _one_op(attempts, audit, by_effect, v)


def _one_op(attempts: list[Record], audit: dict[str, Counter], by_effect: dict[tuple[Any, ...], list[str]],
            v: Violations) -> None:
    first = attempts[0]
    written: Counter = Counter()
    for r in attempts:
        written.update(audit.get(r.request_id, Counter()))
    if not first.is_write:
        if written:
            v.add("read_wrote", {"request": first.brief(), "audit": dict(written)})
        return
    ok = [r for r in attempts if r.ok]
    unknown = [r for r in attempts if r.status is None or r.status >= 500]
    primary = _primary(ok[0] if ok else first)
    hits = sum(n for (action, model, version), n in written.items()
               if (action, model) == primary[:2] and (primary[2] is None or version == primary[2]))
    if ok and hits != 1 and not (hits == 0 and first.kind in NOOP_OK):
        # Where the entry went instead (another request id?) says what went wrong.
        v.add(f"effect_count_{hits}:{first.kind}", {"request": ok[0].brief(), "audit": dict(written),
                                                    "entries_for_it_under": by_effect.get(primary, [])[:5]})
    elif not ok and not unknown and written:
        v.add(f"refusal_changed_state:{first.kind}", {"request": first.brief(), "audit": dict(written)})
    elif not ok and hits > 1:
        v.add(f"effect_count_{hits}:{first.kind}", {"request": first.brief(), "audit": dict(written)})
    for r in ok[:1]:
        for archived in ((r.json or {}).get("transition") or {}).get("archived") or []:
            if written[(STAGE_CHANGED, first.model, archived)] != 1:
                v.add("archived_incumbent_not_audited", {"request": r.brief(), "audit": dict(written)})


def _primary(r: Record) -> tuple[str, str, int | None]:
    """(action, model, version) the operation's audit entry must carry."""
    body = r.json if r.ok else None
    version = None
    if r.kind in ("transition", "rollback") and isinstance(body, dict):
        version = body["version"]["version"]
    elif r.kind == "register" and isinstance(body, dict):
        version = body.get("version")
    elif r.kind == "alias_set":
        version = (r.body or {}).get("version")
    return PRIMARY.get(r.kind, "?"), r.model, version
