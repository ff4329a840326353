"""The audit log (chain order, paging, verification that finds edited rows) and the per-model
event feed (gap-free sequences, types and data matching what happened)."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from tests.api.helpers import (
    GENESIS,
    assert_problem,
    assert_utc,
    audit,
    audit_t,
    chain_of,
    create_model,
    db_rows,
    events,
    move,
    pages,
    register,
    seg,
)
from tests.support import Server, tamper_sync


def history(c: httpx.Client, prefix: str) -> str:
    """A model with one of each kind of change; 12 audit entries and 12 events."""
    name = create_model(c, prefix, description="d0", tags={"team": "risk"})   # 1 model.created
    register(c, name, 2, metrics={"auc": 0.8})                               # 2, 3 version created
    c.patch(f"/models/{name}", json={"description": "d1"})                    # 4 model.updated
    c.patch(f"/models/{name}/versions/1", json={"tags": {"k": "v"}})          # 5 version updated
    move(c, name, 1, "staging")                                               # 6
    move(c, name, 2, "staging")                                               # 7
    move(c, name, 1, "production", comment="first")                           # 8
    move(c, name, 2, "production", comment="second")                          # 9 archive v1, 10 v2
    c.put(f"/models/{name}/aliases/champion", json={"version": 2})            # 11 alias set
    c.delete(f"/models/{name}/aliases/champion")                              # 12 alias deleted
    return name


EXPECTED = [
    ("model.created", None), ("model_version.created", 1), ("model_version.created", 2),
    ("model.updated", None), ("model_version.updated", 1),
    ("model_version.stage_changed", 1), ("model_version.stage_changed", 2),
    ("model_version.stage_changed", 1), ("model_version.stage_changed", 1),
    ("model_version.stage_changed", 2), ("model_version.alias_set", 2),
    ("model_version.alias_deleted", 2),
]


# -- audit ----------------------------------------------------------------------------------------


def test_audit_lists_one_chain_in_order_with_linked_hashes(c: httpx.Client) -> None:
    name = history(c, "audit")
    entries = audit(c, name)
    assert [(e["action"], e["version"]) for e in entries] == EXPECTED
    assert [e["seq"] for e in entries] == list(range(1, 13))
    assert len({e["chain"] for e in entries}) == 1
    assert entries[0]["prev_hash"] == GENESIS
    for prev, entry in zip(entries, entries[1:], strict=False):
        assert entry["prev_hash"] == prev["hash"]
    assert all(e["actor"] == "admin" and e["model"] == name and e["request_id"] for e in entries)
    assert entries[0]["before"] is None
    assert entries[0]["after"] == {"name": name, "description": "d0", "tags": {"team": "risk"}}
    assert (entries[3]["before"], entries[3]["after"]) == ({"description": "d0"}, {"description": "d1"})
    archived, promoted = entries[8], entries[9]
    assert (archived["before"]["stage"], archived["after"]["stage"]) == ("production", "archived")
    assert (promoted["before"]["stage"], promoted["after"]["stage"]) == ("staging", "production")
    assert archived["request_id"] == promoted["request_id"]


def test_audit_pages_visit_every_entry_once(c: httpx.Client) -> None:
    name = history(c, "auditpage")
    whole = audit(c, name)
    for limit in (1, 5):
        seen = [e for page in pages(c, "/audit", limit=limit, model=name) for e in page]
        assert seen == whole


def test_audit_without_a_model_covers_every_chain_each_in_order(c: httpx.Client) -> None:
    a = history(c, "all-a")
    b = create_model(c, "all-b")
    entries, cursor = [], None
    while True:
        page = c.get("/audit", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    by_chain: dict[str, list[int]] = {}
    for e in entries:
        by_chain.setdefault(e["chain"], []).append(e["seq"])
    for seqs in by_chain.values():
        assert seqs == list(range(1, len(seqs) + 1))
    assert "system" in by_chain  # the bootstrap token, visible to the admin
    assert {e["model"] for e in entries} >= {a, b}
    assert [e for e in entries if e["model"] == a] == audit(c, a)


def test_audit_rejects_a_garbage_cursor(c: httpx.Client) -> None:
    assert_problem(c.get("/audit", params={"cursor": "garbage!!"}), 400, "validation_error")


def test_verify_is_ok_on_untouched_chains(c: httpx.Client) -> None:
    name = history(c, "verify")
    assert c.get("/audit/verify", params={"model": name}).json() == {
        "ok": True, "checked": 12, "first_bad_seq": None, "first_bad_chain": None}
    everything = c.get("/audit/verify").json()
    assert everything["ok"] is True and everything["checked"] >= 13


def test_verify_finds_rows_edited_in_the_database(server: Server, c: httpx.Client) -> None:
    """Each model's own chain is tampered with in a different way; the others stay intact."""
    assert c.get("/audit/verify").json()["ok"] is True, "a chain was broken before this test"
    actor, text, gone, rehashed, intact = (history(c, f"tamper-{k}") for k in
                                           ("actor", "text", "gone", "rehash", "intact"))

    def where(name: str, seq: int):  # noqa: ANN202
        return (audit_t.c.chain == chain_of(server, name)) & (audit_t.c.seq == seq)

    # A column the hash covers, changed in place.
    assert tamper_sync(server.database_url,
                       update(audit_t).where(where(actor, 5)).values(actor="mallory")) == [1]
    # The stored canonical text itself: the recorded comment is rewritten.
    assert tamper_sync(server.database_url, update(audit_t).where(where(text, 8)).values(
        canonical=func.replace(audit_t.c.canonical, '"first"', '"forged"'))) == [1]
    # A whole entry removed.
    assert tamper_sync(server.database_url, delete(audit_t).where(where(gone, 4))) == [1]
    # An entry rewritten and re-hashed consistently: the next entry no longer links to it.
    (row,) = db_rows(server, select(audit_t).where(where(rehashed, 6)))
    new_text = row.canonical.replace('"admin"', '"mallory"')
    assert new_text != row.canonical
    new_hash = hashlib.sha256(f"{row.prev_hash}\n{new_text}".encode()).hexdigest()
    assert tamper_sync(server.database_url, update(audit_t).where(where(rehashed, 6)).values(
        canonical=new_text, actor="mallory", hash=new_hash)) == [1]

    def verify(name: str) -> dict:
        r = c.get("/audit/verify", params={"model": name})
        assert r.status_code == 200, r.text
        return r.json()

    for name, bad_seq in ((actor, 5), (text, 8), (gone, 5), (rehashed, 7)):
        result = verify(name)
        assert result["ok"] is False, name
        assert result["first_bad_seq"] == bad_seq, (name, result)
        assert result["first_bad_chain"] == chain_of(server, name)
    assert verify(intact) == {"ok": True, "checked": 12, "first_bad_seq": None, "first_bad_chain": None}

    everything = c.get("/audit/verify").json()
    assert everything["ok"] is False
    assert everything["first_bad_chain"] in {chain_of(server, n) for n in (actor, text, gone, rehashed)}


# -- events ---------------------------------------------------------------------------------------


def test_events_are_gap_free_and_match_what_happened(c: httpx.Client) -> None:
    name = history(c, "events")
    items = events(c, name)
    assert [(e["type"], e["version"]) for e in items] == EXPECTED
    assert [e["sequence"] for e in items] == list(range(1, 13))
    assert len({e["id"] for e in items}) == 12
    for e in items:
        uuid.UUID(e["id"])
        assert e["model"] == name and e["actor"] == "admin" and e["request_id"]
    # Events and audit entries of one change carry the same request id and time.
    for e, a in zip(items, audit(c, name), strict=False):
        assert (e["request_id"], e["type"]) == (a["request_id"], a["action"])
        assert assert_utc(e["at"]) == assert_utc(a["at"])
        # One event document for feed and webhooks: its time written exactly as the audit's.
        assert e["at"] == a["at"] and e["at"].endswith("Z") and len(e["at"].split(".")[1]) == 7


def test_stage_changed_events_carry_from_to_trigger_and_comment(c: httpx.Client) -> None:
    name = history(c, "stagedata")
    changes = [e for e in events(c, name) if e["type"] == "model_version.stage_changed"]
    assert [(e["version"], e["data"]["from_stage"], e["data"]["to_stage"], e["data"]["trigger"],
             e["data"]["comment"]) for e in changes] == [
        (1, "none", "staging", "submit", None),
        (2, "none", "staging", "submit", None),
        (1, "staging", "production", "promote", "first"),
        (1, "production", "archived", "archive", "second"),
        (2, "staging", "production", "promote", "second"),
    ]
    for e in changes:
        assert e["data"]["before"]["stage"] == e["data"]["from_stage"]
        assert e["data"]["after"]["stage"] == e["data"]["to_stage"]
    created = [e for e in events(c, name) if e["type"] == "model_version.created"]
    assert created[0]["data"]["after"]["metrics"] == {"auc": 0.8}
    assert created[0]["data"]["before"] is None


def test_events_page_by_sequence(c: httpx.Client) -> None:
    name = history(c, "evpage")
    whole = events(c, name)
    for limit in (1, 5, 12):
        seen, after = [], None
        while True:
            params = {"model": name, "limit": limit, **({"after": after} if after is not None else {})}
            r = c.get("/events", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["items"]) <= limit
            seen += page["items"]
            after = page["next_cursor"]
            if after is None:
                break
            assert int(after) == seen[-1]["sequence"]
        assert seen == whole, limit
    assert [e["sequence"] for e in c.get("/events", params={"model": name, "after": 9}).json()["items"]] == [
        10, 11, 12]
    tail = c.get("/events", params={"model": name, "after": 12}).json()
    assert tail == {"items": [], "next_cursor": None}


def test_events_continue_after_the_model_is_deleted(c: httpx.Client) -> None:
    name = create_model(c, "evdel")
    register(c, name)
    assert c.delete(f"/models/{seg(name)}").status_code == 204
    items = events(c, name)
    assert [(e["type"], e["sequence"]) for e in items] == [
        ("model.created", 1), ("model_version.created", 2), ("model.deleted", 3)]
    assert items[-1]["data"]["after"] is None
    assert items[-1]["data"]["before"]["name"] == name


@pytest.mark.parametrize("params", [{}, {"model": ""}, {"model": "x", "after": -1},
                                    {"model": "x", "after": "one"}, {"model": "x", "limit": 0}])
def test_bad_event_queries_are_400(c: httpx.Client, params: dict) -> None:
    assert_problem(c.get("/events", params=params), 400, "validation_error")
