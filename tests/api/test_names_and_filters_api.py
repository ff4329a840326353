"""Issue 13 over HTTP, on both backends: a model name in its composed (NFC) and decomposed (NFD)
spelling is one model wherever a name enters, and a `tag` filter holding NUL is the same 400 on
SQLite and PostgreSQL."""

from __future__ import annotations

import unicodedata
import uuid

import httpx
import pytest

from tests.api.helpers import assert_problem, audit, events, move, register, seg


def spellings(stem: str = "café") -> tuple[str, str]:
    """One new name, composed and decomposed (two different strings that read the same)."""
    name = f"{stem}-{uuid.uuid4().hex[:8]}"
    nfc, nfd = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assert nfc != nfd
    return nfc, nfd


def test_nfc_and_nfd_spellings_name_one_model(c: httpx.Client) -> None:
    nfc, nfd = spellings()
    created = c.post("/models", json={"name": nfd})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == nfc, "stored in NFC"
    assert_problem(c.post("/models", json={"name": nfc}), 409, "already_exists")

    for spelling in (nfc, nfd):
        got = c.get(f"/models/{seg(spelling)}")
        assert got.status_code == 200, got.text
        assert got.json()["name"] == nfc
    listed = c.get("/models", params={"name_prefix": nfd[:-9], "limit": 1000}).json()["items"]
    assert nfc in [m["name"] for m in listed]
    assert nfd not in [m["name"] for m in listed]


def test_every_path_with_a_name_finds_the_model_by_either_spelling(c: httpx.Client) -> None:
    nfc, nfd = spellings("modèle-ñ")
    assert c.post("/models", json={"name": nfc}).status_code == 201
    register(c, nfd, 2)
    move(c, nfd, 1, "staging")
    assert c.patch(f"/models/{seg(nfd)}", json={"description": "d"}).status_code == 200
    assert c.put(f"/models/{seg(nfd)}/aliases/champion", json={"version": 1}).status_code == 200

    for spelling in (nfc, nfd):
        path = f"/models/{seg(spelling)}"
        assert [v["version"] for v in c.get(f"{path}/versions").json()["items"]] == [1, 2]
        assert c.get(f"{path}/versions/2").json()["model"] == nfc
        assert [v["version"] for v in c.get(f"{path}/stages/staging").json()["items"]] == [1]
        alias = c.get(f"{path}/aliases/champion")
        assert (alias.status_code, alias.json()["model"], alias.json()["version"]) == (200, nfc, 1)
        resolved = c.get("/resolve", params={"uri": f"models:/{spelling}@champion"})
        assert (resolved.status_code, resolved.json()["version"]) == (200, 1), resolved.text
        assert c.get("/resolve", params={"uri": f"models:/{spelling}/staging"}).json()["version"] == 1
        assert len(audit(c, spelling)) == 6  # created, 2 registered, staged, updated, alias set
        assert len(events(c, spelling)) == 6
        assert c.get("/audit/verify", params={"model": spelling}).json()["ok"] is True
        history = c.get(f"{path}/history", params={"at": "2999-01-01T00:00:00Z"})
        assert history.status_code == 200 and history.json()["aliases"] == {"champion": 1}, history.text


def test_a_token_scoped_by_one_spelling_sees_the_model_by_both(c: httpx.Client, server) -> None:  # type: ignore[no-untyped-def]
    nfc, nfd = spellings("naïve")
    assert c.post("/models", json={"name": nfc}).status_code == 201
    made = c.post("/tokens", json={"name": f"scoped-{nfc[-8:]}", "role": "viewer", "models": [nfd]})
    assert made.status_code == 201, made.text
    assert made.json()["models"] == [nfc]
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {made.json()['token']}"},
                      timeout=30) as scoped:
        for spelling in (nfc, nfd):
            assert scoped.get(f"/models/{seg(spelling)}").status_code == 200
        assert [m["name"] for m in scoped.get("/models").json()["items"]] == [nfc]


@pytest.mark.parametrize("tag", ["a:\x00", "a\x00:b", "k:v\x00w"])
def test_a_tag_filter_with_nul_is_the_same_400_on_both_backends(c: httpx.Client, tag: str) -> None:
    nfc, _ = spellings("tagé")
    assert c.post("/models", json={"name": nfc}).status_code == 201
    register(c, nfc, 1, tags={"a": "b"})
    refused = c.get(f"/models/{seg(nfc)}/versions", params={"tag": tag})
    body = assert_problem(refused, 400, "validation_error")
    assert "NUL" in body["detail"], body
    fine = c.get(f"/models/{seg(nfc)}/versions", params={"tag": "a:b"})
    assert [v["version"] for v in fine.json()["items"]] == [1]
