"""Idempotency-Key on POST: what the key covers, and how a stored answer comes back.

A key is scoped to (token, method, path): its hash covers the bearer credential, so two tokens
never share keys. The body's fingerprint is stored beside the answer, in the transaction of the
effect; a retry with the same key and body gets that answer again, byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from registry.domain.errors import ValidationError

MAX_KEY = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class HeldAnswer(Protocol):
    """A writer's transaction kept open for the answer to its request (the effect, or a
    refusal worth replaying): :meth:`finish` stores the answer beside it and commits."""

    @property
    def holds_effect(self) -> bool:
        """Whether the held transaction carries an effect (not only a refusal)."""
        ...

    async def finish(self, answer: StoredResponse | None) -> bool:
        """Store ``answer`` and commit; roll back when it is None. True if it committed."""
        ...


class IdempotentRequest(Protocol):
    """A POST with an Idempotency-Key, as the API layer hands it to the request's writers."""

    key_hash: str

    @property
    def held(self) -> HeldAnswer | None:
        """The transaction awaiting the answer, once a writer has kept it open."""
        ...


class Replay(Exception):  # noqa: N818 - a signal, not an error
    """The call was made before with this key and body: answer with what it answered then."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__(f"replaying the stored {stored.status} answer")
        self.stored = stored


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY or not all("\x21" <= ch <= "\x7e" for ch in key):
        raise ValidationError(f"Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters")
    return key


def key_hash(credential: str, method: str, path: str, key: str) -> str:
    """The key's identity: (token, method, path, key); the token enters only as a hash."""
    token = hashlib.sha256(credential.encode()).hexdigest()
    return hashlib.sha256("\n".join((token, method, path, key)).encode()).hexdigest()


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
