"""What the clients did: one :class:`Record` per HTTP request, as the client saw it.

Attempts of one logical operation share ``op`` (a POST retried with its ``Idempotency-Key``);
``request_id`` is unique per attempt and is what the service audits, so the database checks can
find the effect of each answer.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Record:
    client: int
    op: int
    attempt: int  # 0 the first, 1.. retries with the same Idempotency-Key
    kind: str  # the action: register, transition, rollback, alias_set, ...
    legal: bool  # whether the client meant a legal move (it may be stale: others move too)
    expect: tuple[int, str] | None  # the exact (status, code) a deterministic refusal must get
    method: str
    path: str
    body: Any
    key: str | None  # Idempotency-Key
    request_id: str
    token: str  # which of the run's tokens (admin, rel-a, rel-b, editor)
    model: str = ""  # the model the operation is about
    server: str = ""
    sent: float = 0.0  # wall clock, time.time()
    answered: float = 0.0
    status: int | None = None  # None: no answer (transport error or client timeout)
    code: str | None = None  # the problem's code
    text: str = ""  # the response body as received
    headers: dict[str, str] = field(default_factory=dict)  # the few that matter, lower-case
    error: str | None = None  # the transport error, when there was no answer

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def replayed(self) -> bool:
        return self.headers.get("idempotent-replayed", "").lower() == "true"

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    def brief(self) -> dict[str, Any]:
        """What a violation quotes: enough to find the request in the logs."""
        return {"kind": self.kind, "method": self.method, "path": self.path, "body": self.body,
                "status": self.status, "code": self.code, "error": self.error, "server": self.server,
                "request_id": self.request_id, "key": self.key, "sent": round(self.sent, 3),
                "latency": round(self.answered - self.sent, 3), "text": self.text[:300]}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Every record of the run, shared by the clients (which run on one event loop, and the
    fault thread only reads)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._ops = itertools.count(1)
        self._lock = threading.Lock()

    def next_op(self) -> int:
        return next(self._ops)

    def add(self, record: Record) -> Record:
        with self._lock:
            self.records.append(record)
        return record

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)
