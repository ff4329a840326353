"""The audit chain: RFC 8785 canonical text, the hash that links entries, and the verifier that
finds a row edited in the database. One failure mode per test."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from registry.services.audit import GENESIS, ChainVerifier, canonical, chain_hash

CHAIN = "model:7"


# -- canonical text -----------------------------------------------------------------------------

def test_canonical_is_rfc8785_sorted_keys_no_white_space_raw_unicode_shortest_numbers() -> None:
    entry = {
        "version": 3,
        "after": {"stage": "production", "metrics": {"auc": 0.1, "loss": 1.0}},
        "actor": "ci-bot",
        "before": None,
        "model": "modèle",
        "tags": ["b", "a"],
    }
    assert canonical(entry) == (
        '{"actor":"ci-bot",'
        '"after":{"metrics":{"auc":0.1,"loss":1},"stage":"production"},'
        '"before":null,"model":"modèle","tags":["b","a"],"version":3}'
    )


@pytest.mark.parametrize(("value", "text"), [
    (0.1, "0.1"), (1.0, "1"), (-0.0, "0"), (1e21, "1e+21"), (1e-7, "1e-7"), (100, "100"),
    ("\u2028", '"\u2028"'), ('q"\\\n', '"q\\"\\\\\\n"'), ("\x01", '"\\u0001"'),
])
def test_canonical_numbers_and_strings_follow_ecmascript(value: Any, text: str) -> None:
    assert canonical({"v": value}) == '{"v":' + text + "}"


def test_canonical_orders_keys_by_utf16_code_units_not_code_points() -> None:
    # U+10000 is the surrogate pair D800 DC00, which sorts before U+FF61 in UTF-16.
    assert canonical({"\uff61": 1, "\U00010000": 2}) == '{"\U00010000":2,"\uff61":1}'


def test_canonical_does_not_depend_on_insertion_order() -> None:
    assert canonical({"b": {"y": 1, "x": 2}, "a": 0}) == canonical({"a": 0, "b": {"x": 2, "y": 1}})


def test_chain_hash_is_sha256_of_previous_hash_newline_canonical() -> None:
    text = canonical({"seq": 1, "chain": CHAIN, "action": "model.created"})
    expected = hashlib.sha256((GENESIS + "\n" + text).encode("utf-8")).hexdigest()
    assert chain_hash(GENESIS, text) == expected
    assert GENESIS == "0" * 64


def test_chain_hash_encodes_unicode_as_utf8() -> None:
    text = '{"model":"日本"}'
    assert chain_hash("ab", text) == hashlib.sha256("ab\n{\"model\":\"日本\"}".encode()).hexdigest()


# -- rows as the unit of work writes them ------------------------------------------------------

def make_row(seq: int, prev_hash: str, *, chain: str = CHAIN, actor: str = "alice",
             action: str = "model_version.stage_changed", version: int | None = 1,
             after: dict[str, Any] | None = None) -> dict[str, Any]:
    """One audit row as ``SqlUnitOfWork.commit`` builds it and ``audit_chain_rows`` reads it."""
    entry = {
        "seq": seq, "chain": chain, "at": f"2025-01-01T00:00:0{seq % 10}.000000Z", "actor": actor,
        "request_id": f"req-{seq}", "action": action, "model": "fraud", "version": version,
        "before": {"stage": "none"}, "after": after or {"stage": "staging", "n": seq},
        "prev_hash": prev_hash,
    }
    text = canonical(entry)
    return {"chain": chain, "seq": seq, "actor": actor, "action": action, "version": version,
            "canonical": text, "prev_hash": prev_hash,
            "hash": hashlib.sha256(f"{prev_hash}\n{text}".encode()).hexdigest()}


def build_chain(n: int = 5, chain: str = CHAIN) -> list[dict[str, Any]]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        row = make_row(seq, prev, chain=chain, actor="alice" if seq % 2 else "ci-bot", version=seq)
        rows.append(row)
        prev = row["hash"]
    return rows


def verify(rows: list[dict[str, Any]]) -> tuple[bool, int, int | None]:
    verifier = ChainVerifier()
    verifier.feed(rows)
    result = verifier.result()
    return result.ok, result.checked, result.first_bad_seq


def test_a_correctly_built_chain_verifies() -> None:
    rows = build_chain(5)
    assert verify(rows) == (True, 5, None)


def test_an_empty_chain_verifies() -> None:
    assert verify([]) == (True, 0, None)


def test_a_chain_fed_in_batches_verifies_like_one_feed() -> None:
    rows = build_chain(5)
    verifier = ChainVerifier()
    verifier.feed(rows[:2])
    verifier.feed(rows[2:])
    assert verifier.result().ok and verifier.result().checked == 5


def test_a_chain_not_starting_at_genesis_is_bad_from_its_first_row() -> None:
    rows = [make_row(1, "f" * 64)]
    assert verify(rows) == (False, 1, 1)


# -- one failure mode per test ------------------------------------------------------------------

def test_an_edited_field_in_the_canonical_text_is_found() -> None:
    rows = build_chain(5)
    rows[2]["canonical"] = rows[2]["canonical"].replace('"stage":"staging"', '"stage":"production"')
    assert '"stage":"production"' in rows[2]["canonical"]
    assert verify(rows) == (False, 5, 3)


def test_an_edited_actor_column_that_no_longer_matches_the_canonical_text_is_found() -> None:
    rows = build_chain(5)
    rows[2]["actor"] = "mallory"
    assert verify(rows) == (False, 5, 3)


def test_an_edited_action_column_is_found() -> None:
    rows = build_chain(5)
    rows[2]["action"] = "model.created"
    assert verify(rows) == (False, 5, 3)


def test_an_edited_version_column_is_found() -> None:
    rows = build_chain(5)
    rows[2]["version"] = 99
    assert verify(rows) == (False, 5, 3)


def test_a_deleted_middle_row_is_found_at_the_row_after_the_gap() -> None:
    rows = build_chain(5)
    del rows[2]
    assert verify(rows) == (False, 4, 4)


def test_rows_with_swapped_contents_are_found_at_the_first_swapped_seq() -> None:
    rows = build_chain(5)
    third, fourth = rows[2], rows[3]
    rows[2] = {**fourth, "seq": 3}
    rows[3] = {**third, "seq": 4}
    assert verify(rows) == (False, 5, 3)


def test_rows_fed_out_of_order_are_found() -> None:
    rows = build_chain(5)
    rows[2], rows[3] = rows[3], rows[2]
    assert verify(rows) == (False, 5, 4)


def test_a_wrong_prev_hash_column_is_found() -> None:
    rows = build_chain(5)
    rows[2]["prev_hash"] = "0" * 64
    assert verify(rows) == (False, 5, 3)


def test_a_row_rebuilt_on_a_wrong_prev_hash_is_found_although_its_own_hash_is_right() -> None:
    rows = build_chain(5)
    rows[2] = make_row(3, "a" * 64, version=3)
    assert chain_hash(rows[2]["prev_hash"], rows[2]["canonical"]) == rows[2]["hash"]
    assert verify(rows) == (False, 5, 3)


def test_a_wrong_hash_is_found() -> None:
    rows = build_chain(5)
    rows[2]["hash"] = hashlib.sha256(b"forged").hexdigest()
    assert verify(rows) == (False, 5, 3)


def test_an_edited_row_rehashed_by_the_forger_is_found_at_the_next_row() -> None:
    rows = build_chain(5)
    rows[2] = make_row(3, rows[1]["hash"], version=3, after={"stage": "production"})
    assert verify(rows) == (False, 5, 4)


def test_a_canonical_text_that_is_not_json_is_found() -> None:
    rows = build_chain(5)
    rows[2]["canonical"] = rows[2]["canonical"][:-1]
    assert verify(rows) == (False, 5, 3)


@pytest.mark.parametrize("text", ["null", "[]", "42"])
def test_a_canonical_text_that_is_json_but_not_an_object_is_found(text: str) -> None:
    rows = build_chain(5)
    rows[2]["canonical"] = text
    assert verify(rows) == (False, 5, 3)


def test_only_the_first_bad_row_is_reported() -> None:
    rows = build_chain(5)
    rows[1]["actor"] = "mallory"
    rows[3]["hash"] = "0" * 64
    assert verify(rows) == (False, 5, 2)


def test_each_chain_starts_at_genesis_and_a_bad_row_names_its_chain() -> None:
    rows = build_chain(3, chain="model:1") + build_chain(4, chain="model:2")
    rows[5]["actor"] = "mallory"  # seq 3 of model:2
    verifier = ChainVerifier()
    verifier.feed(rows)
    result = verifier.result()
    assert (result.ok, result.checked, result.first_bad_seq, result.first_bad_chain) == (
        False, 7, 3, "model:2")


def test_two_good_chains_verify() -> None:
    rows = build_chain(3, chain="model:1") + build_chain(4, chain="system")
    assert verify(rows) == (True, 7, None)


def test_rows_of_a_chain_cannot_be_moved_to_another_chain() -> None:
    rows = build_chain(3, chain="model:1")
    moved = [{**r, "chain": "model:2"} for r in rows]
    assert verify(moved) == (False, 3, 1)


def test_canonical_text_is_what_the_row_stores_and_parses_back_to_the_entry() -> None:
    row = make_row(1, GENESIS)
    entry = json.loads(row["canonical"])
    assert canonical(entry) == row["canonical"]
    assert "hash" not in entry and entry["prev_hash"] == GENESIS


def _verify_with_head(rows: list[dict[str, Any]], head_seq: int, head_hash: str) -> tuple[bool, int | None]:
    verifier = ChainVerifier()
    verifier.feed(rows)
    verifier.end_chain(CHAIN, head_seq, head_hash)
    result = verifier.result()
    return result.ok, result.first_bad_seq


def test_a_chain_that_ends_where_its_head_says_verifies() -> None:
    rows = build_chain(5)
    assert _verify_with_head(rows, 5, rows[-1]["hash"]) == (True, None)


def test_a_deleted_tail_is_found_at_the_first_missing_seq() -> None:
    rows = build_chain(5)
    assert _verify_with_head(rows[:3], 5, rows[-1]["hash"]) == (False, 4)


def test_a_rewritten_and_rehashed_last_row_is_found_against_the_head() -> None:
    rows = build_chain(5)
    forged = make_row(5, rows[3]["hash"], actor="mallory")
    assert forged["hash"] != rows[4]["hash"]
    assert _verify_with_head([*rows[:4], forged], 5, rows[-1]["hash"]) == (False, 5)


def test_a_chain_whose_rows_are_all_gone_is_found_at_seq_1() -> None:
    rows = build_chain(2)
    assert _verify_with_head([], 2, rows[-1]["hash"]) == (False, 1)
