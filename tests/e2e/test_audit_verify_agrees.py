"""``GET /audit/verify`` and ``python -m registry audit verify`` are one check (issue 13): both
compare every chain with its head, so an emptied audit table, or entries whose head is gone, are
broken for both, on both backends (without an anchor)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.cli import verify_entries
from tests.api.helpers import api_client
from tests.e2e.test_cli_http import GENESIS, api_audit, chain_of, cli, history
from tests.support import Server, server_for, tamper_sync


@pytest.fixture
def own_server(backend: str, tmp_path: Path) -> Iterator[Server]:
    with server_for(backend, tmp_path) as srv:
        yield srv


def _api_verdict(server: Server, **params: str) -> dict[str, object]:
    with api_client(server) as c:
        r = c.get("/audit/verify", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_emptied_audit_log_is_broken_for_the_api_and_the_cli(own_server: Server, backend: str) -> None:
    name = history(own_server)
    chain = api_audit(own_server, model=name)[0]["chain"]
    empty = "TRUNCATE audit_log" if backend == "postgresql" else "DELETE FROM audit_log"
    tamper_sync(own_server.database_url, empty)
    assert api_audit(own_server) == []

    for params in ({"model": name}, {}):
        verdict = _api_verdict(own_server, **params)
        assert (verdict["ok"], verdict["first_bad_chain"], verdict["first_bad_seq"]) == (False, chain, 1)
    for args in (["--model", name], []):
        checked = cli(own_server, "audit", "verify", *args)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert f"audit BROKEN: chain {chain} at seq 1" in checked.stdout, checked.stdout
        assert "the chain's head" in checked.stdout


def test_entries_whose_head_was_deleted_are_broken_for_the_api_and_the_cli(own_server: Server) -> None:
    name = history(own_server)
    chain = api_audit(own_server, model=name)[0]["chain"]
    tamper_sync(own_server.database_url, "DELETE FROM audit_chains WHERE id = :chain", chain=chain)

    verdict = _api_verdict(own_server)
    assert (verdict["ok"], verdict["first_bad_chain"], verdict["first_bad_seq"]) == (False, chain, 1)
    checked = cli(own_server, "audit", "verify")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"audit BROKEN: chain {chain} at seq 1: the entries belong to no chain head" in checked.stdout


def test_a_clean_log_is_ok_for_both_with_the_same_counts(server: Server) -> None:
    name = history(server)
    verdict = _api_verdict(server, model=name)
    assert (verdict["ok"], verdict["checked"]) == (True, 5)
    checked = cli(server, "audit", "verify", "--model", name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "audit ok: 1 chains, 5 entries checked" in checked.stdout


# -- the shared check, without a server -----------------------------------------------------------


def _head(entries: list[dict[str, object]]) -> dict[str, object]:
    last = entries[-1]
    return {"chain": last["chain"], "model": last["model"], "seq": last["seq"], "hash": last["hash"]}


def test_heads_make_missing_and_extra_entries_visible() -> None:
    entries = chain_of("model:1", 4)
    heads = [_head(entries)]
    assert verify_entries(entries, heads=heads).ok
    gone = verify_entries([], heads=heads)
    assert (gone.ok, gone.first_bad, gone.chains) == (False, ("model:1", 1), 1)
    short = verify_entries(entries[:3], heads=heads)
    assert short.first_bad == ("model:1", 4)
    later = verify_entries(entries + chain_of("model:1", 5)[4:], heads=heads)
    assert (later.ok, later.checked) == (True, 4), "entries after the head was read are not judged"
    orphan = verify_entries(entries + chain_of("model:2", 2), heads=heads)
    assert orphan.first_bad == ("model:2", 1)
    fresh = verify_entries([], heads=[{"chain": "system", "model": None, "seq": 0, "hash": GENESIS}])
    assert (fresh.ok, fresh.chains) == (True, 1)
