"""Violations found by the checks, and the run's summary (printed, and written as JSON)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tests.e2e.receivers import Received
from tests.reliability.records import Record

EXAMPLES = 3  # examples kept per kind of violation


class Violations:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Any]] = defaultdict(list)
        self.checked: list[str] = []  # the invariants checked, in order

    def check(self, name: str) -> None:
        self.checked.append(name)

    def add(self, kind: str, example: Any) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(example)

    def __bool__(self) -> bool:
        return bool(self.counts)


def operations(records: list[Record]) -> dict[str, dict[str, int]]:
    """Requests by kind, then by status (or code, or error)."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        if r.status is None:
            label = "timeout" if (r.error or "").startswith("timeout") else "no answer"
        else:
            label = f"{r.status} {r.code}" if r.code else str(r.status)
        table[r.kind][label] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}


def summary(profile: str, wall: dict[str, float], records: list[Record], faults: list[dict[str, Any]],
            figures: dict[str, Any], violations: Violations, t0: float) -> dict[str, Any]:
    for f in faults:  # times relative to the start of the load, easier to read
        f["start_s"], f["end_s"] = round(f.pop("start") - t0, 2), round(f.pop("end") - t0, 2)
    return {"profile": profile, "wall_seconds": wall, "requests": len(records),
            "operations": operations(records), "faults": faults, "figures": figures,
            "invariants_checked": violations.checked,
            "violations": {k: {"count": n, "examples": violations.examples[k]}
                           for k, n in sorted(violations.counts.items())}}


def write(summary_doc: dict[str, Any], records: list[Record], receipts: list[Received], tmp: Path) -> Path:
    """The summary, every request (chaos-requests.jsonl) and every webhook request received
    (chaos-webhooks.jsonl), for looking into a violation after the run."""
    (tmp / "chaos-webhooks.jsonl").write_text("\n".join(json.dumps(
        {"endpoint": r.endpoint, "index": r.index, "at": r.at, "webhook_id": r.webhook_id, "status": r.status,
         "verified": r.verified, "answered_at": r.answered_at, "body": r.body}, default=str) for r in receipts) + "\n")
    path = tmp / "chaos-summary.json"
    path.write_text(json.dumps(summary_doc, indent=2, default=str))
    (tmp / "chaos-requests.jsonl").write_text(
        "\n".join(json.dumps(r.to_json(), default=str) for r in records) + "\n")
    return path


def render(doc: dict[str, Any]) -> str:
    out = [f"== chaos ({doc['profile']}): {doc['requests']} requests; wall {doc['wall_seconds']}"]
    out.append("-- operations (kind: status counts)")
    out += [f"   {kind}: {counts}" for kind, counts in doc["operations"].items()]
    out.append("-- faults (seconds from the start of the load)")
    out += [f"   {f['start_s']:7.2f} .. {f['end_s']:7.2f}  {f['kind']} {f['target']} {f['detail'] or ''}"
            for f in doc["faults"]]
    out.append("-- figures")
    out += [f"   {k}: {v}" for k, v in doc["figures"].items()]
    out.append(f"-- invariants checked: {len(doc['invariants_checked'])}")
    out += [f"   {name}" for name in doc["invariants_checked"]]
    out.append(f"-- violations: {sum(v['count'] for v in doc['violations'].values())}")
    out += [f"   {k}: {v['count']}  e.g. {json.dumps(v['examples'][0], default=str)[:500]}"
            for k, v in doc["violations"].items()]
    return "\n".join(out)
