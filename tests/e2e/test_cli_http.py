"""The HTTP commands (``token create|list|revoke``, ``audit export|anchor|verify``) run as real
processes against a real server on both backends; and the verify/anchor logic without a server.

Exit codes: 0 ok, 1 a failed check or a refusal from the server, 2 usage or an unreachable server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from sqlalchemy import select

from registry.cli import UsageError, verify_entries
from registry.client import RegistryClient, RegistryClientError
from tests.api.helpers import api_client, audit_t, create_model, db_rows, move, register
from tests.support import REPO, Server, free_port, server_for, tamper_sync

GENESIS = "0" * 64


def registry(*args: str, url: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["REGISTRY_URL"] = url
    if token is not None:
        env["REGISTRY_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "registry", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def cli(server: Server, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return registry(*args, url=server.url, token=token or server.token)


def history(server: Server) -> str:
    """A model with five audit entries: created, two versions, submitted, promoted. Numbers and
    text that JSON can spell several ways must survive the round trip through the API."""
    with api_client(server) as c:
        name = create_model(c, "cli", description="Modèle ☃ \u2028 \"quoted\"")
        register(c, name, 2, metrics={"auc": 0.1, "loss": 1.0, "big": 1e21, "tiny": 5e-324},
                 tags={"ünïcode": "✓"})
        move(c, name, 1, "staging")
        move(c, name, 1, "production", comment="ship")
    return name


def api_audit(server: Server, **params: Any) -> list[dict[str, Any]]:
    with api_client(server) as c:
        r = c.get("/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None, "the test expects one page"
    return r.json()["items"]


# -- tokens ---------------------------------------------------------------------------------------


def _create(server: Server, *args: str) -> str:
    created = cli(server, "token", "create", *args)
    assert created.returncode == 0, created.stderr
    return created.stdout


def _tokens(server: Server) -> list[dict[str, Any]]:
    listed = cli(server, "token", "list")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_token_create_prints_only_a_working_secret(server: Server) -> None:
    name = history(server)
    out = _create(server, "--name", "ci-viewer", "--role", "viewer", "--model", "cli-*", "other")
    assert out.count("\n") == 1 and out.startswith("mrt_"), out
    secret = out.strip()
    r = httpx.get(server.api + "/models", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200, r.text
    assert name in [m["name"] for m in r.json()["items"]]
    mine = [t for t in _tokens(server) if t["name"] == "ci-viewer"]
    assert [(t["role"], t["principal"], t["models"]) for t in mine] == [
        ("viewer", "ci-viewer", ["cli-*", "other"])]


def test_token_list_shows_every_token_without_its_secret(server: Server) -> None:
    secret = _create(server, "--name", "lister", "--role", "editor", "--principal", "team-a").strip()
    listed = cli(server, "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout and secret[4:] not in listed.stdout
    tokens = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {"admin", "lister"} <= {t["name"] for t in tokens}
    lister = next(t for t in tokens if t["name"] == "lister")
    assert (lister["role"], lister["principal"], lister["revoked_at"]) == ("editor", "team-a", None)
    assert all("token" not in t for t in tokens)


def test_token_revoke_makes_the_token_401_within_a_second(server: Server) -> None:
    secret = _create(server, "--name", "doomed", "--role", "viewer").strip()
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(server.api + "/models", headers=headers).status_code == 200
    token_id = next(t["id"] for t in _tokens(server) if t["name"] == "doomed")

    revoked = cli(server, "token", "revoke", str(token_id))
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 1.5
    while (status := httpx.get(server.api + "/models", headers=headers).status_code) != 401:
        assert status == 200 and time.monotonic() < deadline, f"still {status} after revocation"
        time.sleep(0.1)
    assert next(t for t in _tokens(server) if t["id"] == token_id)["revoked_at"] is not None


def test_refusals_exit_1_with_the_problem_code_on_stderr(server: Server) -> None:
    bad_role = cli(server, "token", "create", "--name", "x", "--role", "superuser")
    assert (bad_role.returncode, bad_role.stdout) == (1, "")
    assert "validation_error" in bad_role.stderr
    viewer = _create(server, "--name", "weak", "--role", "viewer").strip()
    forbidden = cli(server, "token", "list", token=viewer)
    assert forbidden.returncode == 1 and "forbidden" in forbidden.stderr, forbidden.stderr
    unknown = cli(server, "audit", "verify", "--model", "no-such-model")
    assert unknown.returncode == 1 and "not_found" in unknown.stderr, unknown.stderr


def test_usage_errors_and_an_unreachable_server_exit_2(server: Server, tmp_path: Path) -> None:
    down = registry("token", "list", url=f"http://127.0.0.1:{free_port()}", token="mrt_x")
    assert down.returncode == 2 and "cannot reach" in down.stderr, down.stderr
    no_token = registry("audit", "verify", url=server.url, token=None)
    assert no_token.returncode == 2 and "REGISTRY_TOKEN" in no_token.stderr
    no_role = cli(server, "token", "create", "--name", "x")
    assert no_role.returncode == 2 and "--role" in no_role.stderr
    bad_time = cli(server, "token", "create", "--name", "x", "--role", "viewer", "--expires-at", "soon")
    assert bad_time.returncode == 2 and "RFC 3339" in bad_time.stderr
    (tmp_path / "anchor.json").write_text("{}")
    bad_anchor = cli(server, "audit", "verify", "--anchor", str(tmp_path / "anchor.json"))
    assert bad_anchor.returncode == 2 and "not an anchor file" in bad_anchor.stderr


# -- audit on a clean log ---------------------------------------------------------------------------


def test_audit_export_writes_one_json_line_per_entry(server: Server, tmp_path: Path) -> None:
    name = history(server)
    out = tmp_path / "audit.jsonl"
    exported = cli(server, "audit", "export", "--model", name, "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == api_audit(server, model=name)
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]

    everything = cli(server, "audit", "export")
    assert everything.returncode == 0, everything.stderr
    assert [json.loads(line) for line in everything.stdout.splitlines()] == api_audit(server)


def test_audit_verify_exits_0_on_clean_chains(server: Server) -> None:
    name = history(server)
    one = cli(server, "audit", "verify", "--model", name)
    assert one.returncode == 0, one.stdout + one.stderr
    assert "audit ok: 1 chains, 5 entries checked" in one.stdout
    every = cli(server, "audit", "verify")
    assert every.returncode == 0, every.stdout + every.stderr
    assert f"{len(api_audit(server))} entries checked" in every.stdout


def test_audit_anchor_saves_each_chain_head(server: Server, tmp_path: Path) -> None:
    name = history(server)
    anchor = tmp_path / "anchor.json"
    saved = cli(server, "audit", "anchor", "--model", name, "--output", str(anchor))
    assert saved.returncode == 0, saved.stderr
    last = api_audit(server, model=name)[-1]
    body = json.loads(anchor.read_text())
    assert body["taken_at"].endswith("Z")
    assert body["chains"] == {last["chain"]: {"seq": 5, "hash": last["hash"], "model": name}}
    checked = cli(server, "audit", "verify", "--model", name, "--anchor", str(anchor))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 anchored chains" in checked.stdout


# -- audit after tampering (a server per test: the log is broken afterwards) -----------------------


@pytest.fixture
def own_server(backend: str, tmp_path: Path) -> Iterator[Server]:
    with server_for(backend, tmp_path) as srv:
        yield srv


def test_verify_names_the_chain_and_seq_of_an_edited_row(own_server: Server) -> None:
    name = history(own_server)
    chain = api_audit(own_server, model=name)[0]["chain"]
    assert tamper_sync(own_server.database_url,
                       "UPDATE audit_log SET canonical = replace(canonical, '\"ship\"', '\"yolo\"') "
                       "WHERE chain = :chain AND seq = 5", chain=chain) == [1]
    assert api_audit(own_server, model=name)[-1]["after"]["comment"] == "yolo", "the edit shows"

    for args in (["--model", name], []):
        verdict = cli(own_server, "audit", "verify", *args)
        assert verdict.returncode == 1, verdict.stdout + verdict.stderr
        assert f"audit BROKEN: chain {chain} at seq 5" in verdict.stdout


def _truncate_tail(server: Server, name: str) -> str:
    """Delete the last entry of the model's chain and rewind its head to match, as an attacker
    who knows the scheme would: the chain is then consistent, and only an anchor can tell."""
    entries = api_audit(server, model=name)
    chain, kept = entries[-1]["chain"], entries[-2]
    tamper_sync(server.database_url,
                "DELETE FROM audit_log WHERE chain = :chain AND seq = :seq",
                "UPDATE audit_chains SET audit_seq = :kept, audit_hash = :hash WHERE id = :chain",
                chain=chain, seq=entries[-1]["seq"], kept=kept["seq"], hash=kept["hash"])
    return chain


def test_an_anchor_catches_a_truncated_tail_that_verifies_otherwise(own_server: Server,
                                                                    tmp_path: Path) -> None:
    name = history(own_server)
    anchor = tmp_path / "anchor.json"
    assert cli(own_server, "audit", "anchor", "--output", str(anchor)).returncode == 0
    chain = _truncate_tail(own_server, name)
    assert db_rows(own_server, select(audit_t.c.seq).where(audit_t.c.chain == chain).order_by(audit_t.c.seq)) == [
        (1,), (2,), (3,), (4,)]

    without = cli(own_server, "audit", "verify", "--model", name)
    assert without.returncode == 0, "a consistent truncation passes without an anchor"
    with api_client(own_server) as c:
        assert c.get("/audit/verify", params={"model": name}).json()["ok"] is True
    for args in (["--model", name], []):
        verdict = cli(own_server, "audit", "verify", *args, "--anchor", str(anchor))
        assert verdict.returncode == 1, verdict.stdout + verdict.stderr
        assert f"audit BROKEN: chain {chain} at seq 5" in verdict.stdout
        assert "no entry (the chain ends at 4)" in verdict.stdout


# -- the verify and anchor logic, without a server ------------------------------------------------


def rehash(entry: dict[str, Any]) -> str:
    """The entry's hash, computed here independently of registry.services.audit."""
    hashed = {k: v for k, v in entry.items() if k not in ("id", "hash")}
    return hashlib.sha256(f"{entry['prev_hash']}\n{rfc8785.dumps(hashed).decode()}".encode()).hexdigest()


def chain_of(chain: str, n: int, model: str | None = "m", first_id: int = 1) -> list[dict[str, Any]]:
    """``n`` well-formed entries of one chain."""
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        entry = {"id": first_id + seq, "seq": seq, "chain": chain,
                 "at": f"2026-01-01T00:00:0{seq % 10}.000000Z", "actor": "alice",
                 "request_id": f"r{seq}", "action": "model.updated", "model": model,
                 "version": None, "before": {"n": seq - 1}, "after": {"n": seq}, "prev_hash": prev}
        prev = entry["hash"] = rehash(entry)
        out.append(entry)
    return out


def anchor_of(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["chain"]: {"seq": e["seq"], "hash": e["hash"], "model": e["model"]} for e in entries}


def test_interleaved_clean_chains_verify() -> None:
    a, b = chain_of("model:1", 3), chain_of("model:2", 2, model="n", first_id=10)
    mixed = [a[0], b[0], a[1], b[1], a[2]]
    report = verify_entries(mixed, anchor_of([a[-1], b[-1]]))
    assert (report.ok, report.chains, report.checked, report.anchored) == (True, 2, 5, 2)


@pytest.mark.parametrize(("field", "value"), [
    ("actor", "mallory"), ("at", "2026-01-01T00:00:09.000000Z"), ("after", {"n": 99}),
    ("request_id", "forged"), ("model", "other"), ("before", None),
])
def test_an_edit_of_any_hashed_field_breaks_the_chain_there(field: str, value: Any) -> None:
    entries = chain_of("model:1", 4)
    entries[2][field] = value
    report = verify_entries(entries)
    assert (report.ok, report.first_bad, report.checked) == (False, ("model:1", 3), 4)


def test_a_missing_middle_entry_and_a_forged_link_break_the_chain() -> None:
    entries = chain_of("model:1", 4)
    assert verify_entries(entries[:1] + entries[2:]).first_bad == ("model:1", 3)
    forged = chain_of("model:1", 4)
    forged[3]["prev_hash"] = forged[1]["hash"]
    assert verify_entries(forged).first_bad == ("model:1", 4)


def test_the_id_is_not_hashed() -> None:
    entries = chain_of("model:1", 2)
    entries[1]["id"] = 999
    assert verify_entries(entries).ok


def test_an_anchor_catches_a_rewritten_or_truncated_tail() -> None:
    entries = chain_of("model:1", 4)
    anchor = anchor_of([entries[-1]])
    assert verify_entries(entries[:3]).ok, "without the anchor a shorter chain looks fine"
    truncated = verify_entries(entries[:3], anchor)
    assert (truncated.ok, truncated.first_bad) == (False, ("model:1", 4))
    rewritten = chain_of("model:1", 4)
    rewritten[3]["after"] = {"n": 42}
    rewritten[3]["hash"] = rehash(rewritten[3])
    assert verify_entries(rewritten).ok, "a re-hashed tail is consistent on its own"
    verdict = verify_entries(rewritten, anchor)
    assert (verdict.ok, verdict.first_bad) == (False, ("model:1", 4))
    assert "a different hash" in verdict.reason
    assert verify_entries(entries + chain_of("model:1", 5)[4:], anchor).ok, "growth is fine"


def test_with_a_model_only_its_anchored_chain_is_checked() -> None:
    mine, other = chain_of("model:1", 2, model="m"), chain_of("model:2", 2, model="n")
    anchor = anchor_of([mine[-1], other[-1]])
    assert verify_entries(mine, anchor, model="m").anchored == 1
    gone = verify_entries([], anchor, model="m")
    assert gone.first_bad == ("model:1", 2), "a chain whose entries all vanished is caught"
    with pytest.raises(UsageError):
        verify_entries(mine, anchor_of([other[-1]]), model="m")


def test_the_client_follows_cursors_and_raises_problems() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        assert request.headers["authorization"] == "Bearer t"
        if request.url.path == "/api/v1/tokens":
            return httpx.Response(403, json={"code": "forbidden", "detail": "admins only"},
                                  headers={"content-type": "application/problem+json"})
        page = {None: ([1, 2], "c1"), "c1": ([3], None)}[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": [{"id": i} for i in page[0]],
                                         "next_cursor": page[1]})

    with RegistryClient("http://registry.test/", "t", transport=httpx.MockTransport(handler)) as c:
        assert [e["id"] for e in c.audit_entries("m")] == [1, 2, 3]
        assert seen == [{"model": "m", "limit": "1000"},
                        {"model": "m", "limit": "1000", "cursor": "c1"}]
        with pytest.raises(RegistryClientError) as refused:
            list(c.list_tokens())
    assert (refused.value.status, refused.value.code, refused.value.detail) == (
        403, "forbidden", "admins only")
