"""The HTTP commands for pipelines and operators: ``token create|list|revoke`` and
``audit export|anchor|verify``, clients of a running service (``REGISTRY_URL``, ``REGISTRY_TOKEN``).

Exit codes: 0 ok; 1 a failed check, or a refusal from the server (its problem ``code`` and
``detail`` go to stderr); 2 a usage error or an unreachable server; 141 stdout's reader closed it
early (``| head``), quietly, as a process killed by SIGPIPE (``registry.__main__.main``).

``audit verify`` trusts nothing the server says about its own integrity: it recomputes every hash
from the entries with the server's own ``verify_chains`` (the one check ``GET /audit/verify`` runs:
every chain against its head, so an emptied or truncated log is caught), and checks saved
anchors, so a tail rewritten together with its head is caught too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from registry.client import DEFAULT_URL, RegistryClient, RegistryClientError
from registry.services.audit import BAD_ROW, canonical, verify_chains

OK, FAILED, USAGE = 0, 1, 2
# The hashed entry: an entry as the API returns it, without ``id`` and ``hash``.
ENTRY_FIELDS = ("seq", "chain", "at", "actor", "request_id", "action", "model", "version",
                "before", "after", "prev_hash")


class UsageError(Exception):
    """Bad arguments or files: exit 2."""


def rfc3339(value: str) -> str:
    """argparse type: an RFC 3339 timestamp with an offset, passed on unchanged."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time with an offset: {value!r}")
    return value


def http_command(fn: Callable[[RegistryClient, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``fn`` with a client from the environment; turn failures into messages and exit codes."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        url = os.environ.get("REGISTRY_URL") or DEFAULT_URL
        if not os.environ.get("REGISTRY_TOKEN"):
            print("error: set REGISTRY_TOKEN (to create the first token on the server host, "
                  "use `python -m registry token create --bootstrap`)", file=sys.stderr)
            return USAGE
        try:
            with RegistryClient.from_env() as client:
                return fn(client, args)
        except RegistryClientError as exc:
            print(f"error: {exc.code} ({exc.status}): {exc.detail}", file=sys.stderr)
            return FAILED
        except httpx.HTTPError as exc:
            print(f"error: cannot reach the registry at {url}: {exc}", file=sys.stderr)
            return USAGE
        except BrokenPipeError:
            raise  # stdout's reader went away: main() ends quietly (exit 141), not "error: ..."
        except (UsageError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USAGE
        except ValueError as exc:  # a 2xx answer that is not JSON: not a registry at that URL
            print(f"error: unexpected answer from {url}: {exc}", file=sys.stderr)
            return USAGE

    return run


def _json_lines(items: Iterable[dict[str, Any]], out: TextIO) -> int:
    """One JSON object per line, ASCII only: no raw U+2028 for line-splitting readers to trip on."""
    count = 0
    for item in items:
        out.write(json.dumps(item) + "\n")
        count += 1
    return count


# -- tokens ---------------------------------------------------------------------------------------


@http_command
def token_create(client: RegistryClient, args: argparse.Namespace) -> int:
    if not args.name or not args.role:
        raise UsageError("token create needs --name and --role (or --bootstrap)")
    created = client.create_token(args.name, args.role, principal=args.principal,
                                  models=args.models, expires_at=args.expires_at)
    print(created["token"])
    return OK


@http_command
def token_list(client: RegistryClient, args: argparse.Namespace) -> int:
    _json_lines(client.list_tokens(), sys.stdout)
    return OK


@http_command
def token_revoke(client: RegistryClient, args: argparse.Namespace) -> int:
    client.revoke_token(args.id)
    print(f"revoked token {args.id}")
    return OK


# -- audit ----------------------------------------------------------------------------------------


@http_command
def audit_export(client: RegistryClient, args: argparse.Namespace) -> int:
    entries = client.audit_entries(args.model)
    if args.output is None:
        _json_lines(entries, sys.stdout)
        return OK
    with args.output.open("w", encoding="utf-8") as out:
        count = _json_lines(entries, out)
    print(f"wrote {count} entries to {args.output}", file=sys.stderr)
    return OK


@http_command
def audit_anchor(client: RegistryClient, args: argparse.Namespace) -> int:
    heads = client.audit_head(args.model)
    anchor = {
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "chains": {h["chain"]: {"seq": h["seq"], "hash": h["hash"], "model": h.get("model")}
                   for h in heads},
    }
    args.output.write_text(json.dumps(anchor, indent=2) + "\n", encoding="utf-8")
    print(f"anchored {len(heads)} chains in {args.output}", file=sys.stderr)
    return OK


@http_command
def audit_verify(client: RegistryClient, args: argparse.Namespace) -> int:
    anchor = load_anchor(args.anchor) if args.anchor else None
    heads = client.audit_head(args.model)  # before the entries, as the server's own check
    report = verify_entries(client.audit_entries(args.model), anchor, args.model, heads=heads)
    print(report.summary())
    return OK if report.ok else FAILED


def load_anchor(path: Path) -> dict[str, dict[str, Any]]:
    """The anchored chains of an anchor file: ``{chain: {seq, hash, model?}}``."""
    try:
        chains = json.loads(path.read_text(encoding="utf-8"))["chains"]
        return {str(chain): {"seq": int(head["seq"]), "hash": str(head["hash"]),
                             "model": head.get("model")} for chain, head in chains.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path} is not an anchor file ({exc!r})") from exc


@dataclass(frozen=True)
class Report:
    chains: int
    checked: int
    anchored: int
    first_bad: tuple[str, int] | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad is None

    def summary(self) -> str:
        counts = f"{self.chains} chains, {self.checked} entries checked"
        if self.anchored:
            counts += f", {self.anchored} anchored chains"
        if self.first_bad is None:
            return f"audit ok: {counts}"
        chain, seq = self.first_bad
        return f"audit BROKEN: chain {chain} at seq {seq}: {self.reason} ({counts})"


def _hashed_row(entry: dict[str, Any]) -> dict[str, Any]:
    """What ChainVerifier reads: the row's columns and the canonical text of its entry."""
    return {**entry, "canonical": canonical({k: entry.get(k) for k in ENTRY_FIELDS})}


def verify_entries(entries: Iterable[dict[str, Any]], anchor: dict[str, dict[str, Any]] | None = None,
                   model: str | None = None, heads: Iterable[dict[str, Any]] | None = None) -> Report:
    """Recompute every chain in ``entries`` from genesis up to its head in ``heads`` (as
    ``GET /audit/head`` gives them; without heads, each chain's last entry stands for its head);
    then, for each anchored chain (of ``model`` when given), require the entry at the anchored seq
    to still carry the anchored hash."""
    chains: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:  # the server pages in id order, which interleaves chains
        chains.setdefault(entry["chain"], []).append(entry)
    for rows in chains.values():
        rows.sort(key=lambda e: e["seq"])
    if heads is None:
        head_of = {chain: (rows[-1]["seq"], rows[-1]["hash"]) for chain, rows in chains.items()}
    else:
        head_of = {h["chain"]: (int(h["seq"]), str(h["hash"])) for h in heads}
    headless = {chain: rows[0]["seq"] for chain, rows in chains.items() if chain not in head_of}

    async def rows_of(chain: str, upto: int) -> AsyncIterator[list[dict[str, Any]]]:
        yield [_hashed_row(e) for e in chains.get(chain, []) if e["seq"] <= upto]

    verdict = asyncio.run(verify_chains(head_of, rows_of, headless))
    counts = {"chains": verdict.chains, "checked": verdict.checked}
    if verdict.first_bad_chain is not None and verdict.first_bad_seq is not None:
        return Report(**counts, anchored=0, first_bad=(verdict.first_bad_chain, verdict.first_bad_seq),
                      reason=verdict.reason or BAD_ROW)
    anchored = {c: h for c, h in (anchor or {}).items()
                if model is None or c in chains or h.get("model") == model}
    if anchor is not None and not anchored:
        raise UsageError(f"the anchor holds no chain of model {model!r}")
    for chain, head in anchored.items():
        hashes = {e["seq"]: e["hash"] for e in chains.get(chain, [])}
        if head["seq"] > 0 and hashes.get(head["seq"]) != head["hash"]:
            last = max(hashes, default=0)
            found = "a different hash" if head["seq"] in hashes else f"no entry (the chain ends at {last})"
            return Report(**counts, anchored=len(anchored), first_bad=(chain, head["seq"]),
                          reason=f"the anchor says hash {head['hash'][:12]}…, the log has {found}")
    return Report(**counts, anchored=len(anchored))
