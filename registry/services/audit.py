"""The tamper-evident audit log: how an entry is hashed, and how a chain is verified.

``hash = sha256_hex(prev_hash + "\\n" + canonical)`` where ``canonical`` is the entry without
``hash`` as RFC 8785 (JCS) JSON. The exact canonical text is stored, and verification recomputes
from it, so key order or number formatting in the database can never change a hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import rfc8785

from registry.domain.errors import NotFoundError, ValidationError
from registry.domain.permissions import Role
from registry.services.access import check_visible
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import AuditQuery, Page, UnitOfWork

GENESIS = "0" * 64


def canonical(entry: dict[str, Any]) -> str:
    return rfc8785.dumps(entry).decode()


def chain_hash(prev_hash: str, canonical_text: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical_text}".encode()).hexdigest()


def rfc3339(at: datetime) -> str:
    """The one way timestamps are written into audit entries: UTC, microseconds, 'Z'."""
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def model_chain(model_id: int) -> str:
    return f"model:{model_id}"


SYSTEM_CHAIN = "system"


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    first_bad_seq: int | None
    first_bad_chain: str | None = None
    # How many chains were checked, and why the first bad one is bad: said, not compared.
    chains: int = field(default=0, compare=False)
    reason: str | None = field(default=None, compare=False)


# Why a chain is broken, as ChainVerifier finds it.
BAD_ROW = "the entry does not hash, link or number correctly"
BAD_END = "the entries end short of, or past, the chain's head"
NO_HEAD = "the entries belong to no chain head"


class ChainVerifier:
    """Feeds rows in (chain, seq) order; remembers the first row that breaks its chain.

    A row is bad when its stored hash is not the hash of its canonical text, when its canonical
    text does not say the seq, chain and prev_hash the row says, when its seq is not the next one,
    or when its prev_hash is not the previous row's hash. At the end of each chain, the last row
    must be the one its head row records, so a deleted or re-hashed tail is found too (anchors
    kept outside the database, `python -m registry audit verify --anchor`, guard against a
    rewritten head).
    """

    def __init__(self) -> None:
        self.checked = 0
        self.chains = 0
        self.first_bad: tuple[str, int] | None = None
        self.reason: str | None = None
        self._chain: str | None = None
        self._seq = 0
        self._hash = GENESIS

    def feed(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if row["chain"] != self._chain:
                self._chain, self._seq, self._hash = row["chain"], 0, GENESIS
            self.checked += 1
            if self.first_bad is None and not self._row_ok(row):
                self._bad(row["chain"], row["seq"], BAD_ROW)
            self._seq, self._hash = row["seq"], row["hash"]

    def end_chain(self, chain: str, head_seq: int, head_hash: str) -> None:
        """Compare the chain's last row with its head (seq and hash)."""
        self.chains += 1
        seq, digest = (self._seq, self._hash) if self._chain == chain else (0, GENESIS)
        if self.first_bad is None and (seq, digest) != (head_seq, head_hash):
            self._bad(chain, min(seq, head_seq) + 1 if seq != head_seq else seq, BAD_END)

    def headless(self, chain: str, first_seq: int) -> None:
        """Entries of a chain that has no head row: broken at its first entry."""
        self.chains += 1
        self._bad(chain, first_seq, NO_HEAD)

    def _bad(self, chain: str, seq: int, reason: str) -> None:
        if self.first_bad is None:
            self.first_bad, self.reason = (chain, seq), reason

    def _row_ok(self, row: dict[str, Any]) -> bool:
        try:
            entry = json.loads(row["canonical"])
        except ValueError:
            return False
        if not isinstance(entry, dict):
            return False
        # Columns that filters and history read must say what was hashed (when the row has them).
        for column in ("at", "model", "request_id"):
            if column in row:
                value = row[column]
                if isinstance(value, datetime):
                    value = rfc3339(value)
                if entry.get(column) != value:
                    return False
        return (
            row["seq"] == self._seq + 1
            and row["prev_hash"] == self._hash
            and entry.get("seq") == row["seq"]
            and entry.get("chain") == row["chain"]
            and entry.get("prev_hash") == row["prev_hash"]
            and entry.get("actor") == row["actor"]
            and entry.get("action") == row["action"]
            and entry.get("version") == row["version"]
            and chain_hash(row["prev_hash"], row["canonical"]) == row["hash"]
        )

    def result(self) -> Verification:
        if self.first_bad is None:
            return Verification(True, self.checked, None, chains=self.chains)
        return Verification(False, self.checked, self.first_bad[1], self.first_bad[0],
                            chains=self.chains, reason=self.reason)


# Rows of one chain in seq order, in batches, up to a seq: ``rows(chain, upto)``.
ChainRows = Callable[[str, int], AsyncIterator[list[dict[str, Any]]]]


async def verify_chains(heads: Mapping[str, tuple[int, str]], rows: ChainRows,
                        headless: Mapping[str, int] | None = None) -> Verification:
    """The one verification of the audit log, for the service (``GET /audit/verify``) and for
    ``python -m registry audit verify`` alike: every chain's rows up to its head (``{chain:
    (seq, hash)}``, read *before* the rows, so later commits are not what is checked) must hash
    and link from genesis, and the last one must be the entry the head records; so an emptied
    table, or a deleted or re-hashed tail, is found as surely as an edited row (a tail rewritten
    together with its head takes an anchor to find). ``headless`` names chains that have entries
    but no head (``{chain: first seq}``): broken too.
    """
    verifier = ChainVerifier()
    orphans = dict(headless or {})
    for chain in sorted(set(heads) | set(orphans)):
        if chain not in heads:
            verifier.headless(chain, orphans[chain])
            continue
        head_seq, head_hash = heads[chain]
        async for batch in rows(chain, head_seq):
            verifier.feed(batch)
        verifier.end_chain(chain, head_seq, head_hash)
    return verifier.result()


def scoped(uow: UnitOfWork, query: AuditQuery | None = None) -> AuditQuery:
    """The query limited to what the caller may see: its models' chains, and the system chain
    only for admins."""
    # The system chain describes tokens of every scope: for admins of the whole registry only.
    return replace(query or AuditQuery(), patterns=uow.actor.models,
                   include_system=uow.actor.role >= Role.ADMIN and uow.actor.models is None)


async def _chain_of(model: str | None, uow: UnitOfWork) -> str | None:
    if model is None:
        return None
    model = check_visible(uow, model)
    chain = await uow.repo.chain_for_model_name(model)
    if chain is None:
        raise NotFoundError(f"model {model!r} has no audit log")
    return chain


async def chain_entries(uow: UnitOfWork, query: AuditQuery, batch: int = 1000) -> list[dict[str, Any]]:
    """Every entry of ``query.chain`` the query selects, in seq order, read in batches (inside
    the caller's unit of work)."""
    assert query.chain is not None
    entries: list[dict[str, Any]] = []
    after: tuple[str, int] | None = None
    while True:
        rows = await uow.repo.audit_entries(query, after, batch)
        entries.extend(rows)
        if len(rows) < batch:
            return entries
        after = (query.chain, rows[-1]["seq"])


async def list_audit(model: str | None, cursor: str | None, limit: int | None, uow: UnitOfWork,
                     query: AuditQuery | None = None) -> Page:
    """Entries of one model's chain (or of every visible chain), in (chain, seq) order, filtered."""
    limit = check_limit(limit)
    after = _chain_cursor(decode_cursor(cursor, list))
    async with uow:
        chain = await _chain_of(model, uow)
        rows = await uow.repo.audit_entries(replace(scoped(uow, query), chain=chain), after, limit + 1)
    items, next_cursor = page(rows, limit, lambda r: [r["chain"], r["seq"]])
    return Page(items, next_cursor)


def _chain_cursor(key: Any) -> tuple[str, int] | None:
    if key is None:
        return None
    if (len(key) != 2 or not isinstance(key[0], str) or not isinstance(key[1], int)
            or isinstance(key[1], bool) or not 0 <= key[1] < 2**63):
        raise ValidationError("cursor is not one this service issued")
    return key[0], key[1]


async def audit_heads(model: str | None, uow: UnitOfWork) -> list[dict[str, Any]]:
    """Each visible chain's latest seq and hash, for others to anchor."""
    async with uow:
        chain = await _chain_of(model, uow)
        return await uow.repo.audit_heads(replace(scoped(uow), chain=chain))


async def _rows(chain: str, upto: int, uow: UnitOfWork,
                batch: int = 2000) -> AsyncIterator[list[dict[str, Any]]]:
    after = 0
    while after < upto:
        rows = [r for r in await uow.repo.audit_chain_rows(chain, after, batch) if r["seq"] <= upto]
        if not rows:
            return
        yield rows
        after = rows[-1]["seq"]


async def verify_audit(model: str | None, uow: UnitOfWork) -> Verification:
    """Recompute the chain(s) from the stored canonical text and check each against its head
    (:func:`verify_chains`)."""
    async with uow:
        chain = await _chain_of(model, uow)
        query = replace(scoped(uow), chain=chain)
        # The heads first: rows committed after them are not the chains this check is about.
        heads = {h["chain"]: (h["seq"], h["hash"]) for h in await uow.repo.audit_heads(query)}
        headless = {} if chain is not None else {
            c: first for c, first in (await uow.repo.audit_log_chains(query)).items() if c not in heads}
        return await verify_chains(heads, lambda each, upto: _rows(each, upto, uow), headless)


async def list_events(model: str, after: int | None, limit: int | None, uow: UnitOfWork) -> Page:
    """One model's outbox events by sequence (gap-free per model)."""
    limit = check_limit(limit)
    async with uow:
        chain = await _chain_of(model, uow)
        assert chain is not None
        rows = await uow.repo.events(chain, after or 0, limit + 1)
    items, _ = page(rows, limit, lambda e: e["sequence"])
    next_after = items[-1]["sequence"] if len(rows) > limit else None
    return Page(items, None if next_after is None else str(next_after))
