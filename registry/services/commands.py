"""Commands: what a caller asks for, already parsed and typed. Names are imperative."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final


class _Missing:
    """Marks a PATCH field the caller did not send (distinct from an explicit null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class CreateModel:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpdateModel:
    name: str
    description: str | None | _Missing = MISSING
    tags: dict[str, str | None] | None | _Missing = MISSING  # JSON merge patch


@dataclass(frozen=True, slots=True)
class DeleteModel:
    name: str


@dataclass(frozen=True, slots=True)
class RenameModel:
    name: str
    new_name: str


@dataclass(frozen=True, slots=True)
class RegisterModelVersion:
    model: str
    source: str
    run_id: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UpdateModelVersion:
    model: str
    version: int
    description: str | None | _Missing = MISSING
    tags: dict[str, str | None] | None | _Missing = MISSING
    metrics: dict[str, float | None] | None | _Missing = MISSING
    if_match: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteModelVersion:
    model: str
    version: int


@dataclass(frozen=True, slots=True)
class TransitionModelVersion:
    model: str
    version: int
    to_stage: str
    comment: str | None = None
    expected_stage: str | None = None
    # MISSING: not given; None: expect no production version; int: expect that version.
    expected_production_version: int | None | _Missing = MISSING
    if_match: str | None = None
    # Also archive the other versions in the target stage, in the same transaction (MLflow's
    # archive_existing_versions; a promotion to production archives its incumbent regardless).
    archive_others: bool = False


@dataclass(frozen=True, slots=True)
class SetAlias:
    model: str
    alias: str
    version: int
    protected: bool | None = None  # None: keep as it is (new aliases are unprotected)


@dataclass(frozen=True, slots=True)
class DeleteAlias:
    model: str
    alias: str


@dataclass(frozen=True, slots=True)
class RollbackModel:
    model: str
    comment: str | None = None
    expected_production_version: int | None | _Missing = MISSING


@dataclass(frozen=True, slots=True)
class ReportCheck:
    model: str
    version: int
    name: str
    status: str
    details_url: str | None = None
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class SetPolicy:
    model: str
    stage: str
    rules: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestTransition:
    model: str
    version: int
    to_stage: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class DecideRequest:
    request_id: int
    decision: str  # approve, reject, cancel
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class AddComment:
    model: str
    version: int
    body: str
    request_id: int | None = None  # one of the version's transition requests


@dataclass(frozen=True, slots=True)
class AddRequestComment:
    request_id: int
    body: str


@dataclass(frozen=True, slots=True)
class EditComment:
    comment_id: int
    body: str
