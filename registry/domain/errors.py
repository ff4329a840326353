"""Errors the domain and services raise; the API translates each into one problem response.

Every error carries the data a client needs to act on it (``allowed`` targets, gate ``results``)
as attributes, never only inside its message. ``code`` is the stable machine-readable name and
``status`` the HTTP status the edge maps it to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RegistryError(Exception):
    """Base of every error this service raises on purpose."""

    code = "error"
    status = 400
    title = "Request failed"
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
    code, status, title = "validation_error", 400, "Invalid request"


class UnauthenticatedError(RegistryError):
    code, status, title = "unauthenticated", 401, "Authentication required"


class ForbiddenError(RegistryError):
    code, status, title = "forbidden", 403, "Forbidden"


class NotFoundError(RegistryError):
    code, status, title = "not_found", 404, "Not found"


class AlreadyExistsError(RegistryError):
    code, status, title = "already_exists", 409, "Already exists"


class ConflictError(RegistryError):
    code, status, title = "conflict", 409, "Conflict"


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
    status, title = 413, "Request too large"


class IdempotencyInProgressError(RegistryError):
    code, status, title = "idempotency_in_progress", 409, "Request in progress"
    replayable = False


class IdempotencyConflictError(RegistryError):
    code, status, title = "idempotency_conflict", 422, "Idempotency key reused"
    replayable = False


class InvalidTransitionError(RegistryError):
    code, status, title = "invalid_transition", 409, "Invalid stage transition"

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
    code, status, title = "precondition_failed", 412, "Precondition failed"


class GateFailedError(RegistryError):
    code, status, title = "gate_failed", 422, "Gate failed"

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
    code, status, title = "unavailable", 503, "Service unavailable"
    replayable = False


def _utc(at: Any) -> str:
    """RFC 3339 with Z, as every timestamp in the API."""
    return at.isoformat().replace("+00:00", "Z")
