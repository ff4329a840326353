"""Errors the domain and services raise. They carry data, not HTTP: each wire format (the native
API in ``registry/api/errors.py``, the MLflow one in ``registry/api/mlflow/errors.py``) maps every
class to its own status and code in one table at its edge.

Every error carries the data a client needs to act on it (``allowed`` targets, gate ``results``)
as attributes, never only inside its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RegistryError(Exception):
    """Base of every error this service raises on purpose."""

    # Whether a POST's Idempotency-Key stores this answer for retries to replay. Not for
    # answers that a retry should not get again (a transient conflict, an unreachable database).
    replayable = True

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def extensions(self) -> dict[str, Any]:
        """Extension members added at the top level of the problem body."""
        return {}


class ValidationError(RegistryError):
    """The request is malformed or a value is out of range."""


class UnauthenticatedError(RegistryError):
    """No valid credentials."""


class ForbiddenError(RegistryError):
    """The caller's role or model scope does not allow this."""


class NotFoundError(RegistryError):
    """The model, version, alias or other resource does not exist."""


class AlreadyExistsError(RegistryError):
    """The name is taken."""


class ConflictError(RegistryError):
    """The resource's current state does not allow the change."""


class TransientConflictError(ConflictError):
    """A concurrent change won a race the database settled; the same call may succeed now."""

    replayable = False


class OpenRequestExistsError(ConflictError):
    """An open transition request for the same move exists: ``request_id`` names it."""

    def __init__(self, request_id: int, detail: str) -> None:
        super().__init__(detail)
        self.request_id = request_id

    def extensions(self) -> dict[str, Any]:
        return {"request_id": self.request_id}


class SealedError(ConflictError):
    """The version's artifacts were sealed (by its first move out of ``none``, or on request)."""

    def __init__(self, version: int, sealed_at: Any) -> None:
        super().__init__(f"version {version} was sealed at {_utc(sealed_at)}: its artifacts "
                         "can no longer change")
        self.sealed_at = sealed_at

    def extensions(self) -> dict[str, Any]:
        return {"sealed_at": _utc(self.sealed_at)}


class UploadsUnsettledError(ConflictError):
    """Sealing found presigned uploads that are still pending or did not match what was
    declared: ``uploads`` lists ``{path, problem}``."""

    def __init__(self, detail: str, uploads: Sequence[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.uploads = list(uploads)

    def extensions(self) -> dict[str, Any]:
        return {"uploads": self.uploads}


class DigestMismatchError(ValidationError):
    """The uploaded bytes do not have the digest (or size) the client declared; nothing was kept."""

    def __init__(self, detail: str, expected: str, actual: str) -> None:
        super().__init__(detail)
        self.expected, self.actual = expected, actual

    def extensions(self) -> dict[str, Any]:
        return {"expected_sha256": self.expected, "actual_sha256": self.actual}


class TooLargeError(ValidationError):
    """The body is larger than the operation takes."""


class IdempotencyInProgressError(RegistryError):
    """A request with the same Idempotency-Key is still running."""

    replayable = False


class IdempotencyConflictError(RegistryError):
    """The Idempotency-Key was used before with another body."""

    replayable = False


class InvalidTransitionError(RegistryError):
    """The stage table has no edge from the version's stage to the target: ``allowed`` lists
    the targets it has."""

    def __init__(self, from_stage: str, to_stage: str, allowed: Sequence[str]) -> None:
        super().__init__(
            f"cannot move from {from_stage!r} to {to_stage!r}; allowed: {', '.join(allowed) or 'none'}"
        )
        self.from_stage = from_stage
        self.to_stage = to_stage
        self.allowed = list(allowed)

    def extensions(self) -> dict[str, Any]:
        return {"from_stage": self.from_stage, "to_stage": self.to_stage, "allowed": self.allowed}


class PreconditionFailedError(RegistryError):
    """If-Match or an expected_* value is stale."""


class GateFailedError(RegistryError):
    """A gate of the target stage refused the move: ``results`` holds every gate's result."""

    def __init__(self, results: Sequence[Any]) -> None:
        self.results = list(results)
        self.failed = [r.gate for r in self.results if not r.passed]
        super().__init__(f"gates failed: {', '.join(self.failed)}")

    def extensions(self) -> dict[str, Any]:
        return {
            "results": [{"gate": r.gate, "passed": r.passed, "detail": r.detail} for r in self.results],
            "failed": self.failed,
        }


class UnavailableError(RegistryError):
    """The database (or another store) cannot serve now; the same call may succeed later."""

    replayable = False


def _utc(at: Any) -> str:
    """RFC 3339 with Z, as every timestamp in the API."""
    return at.isoformat().replace("+00:00", "Z")
