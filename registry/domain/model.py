"""Registered models and their versions as plain objects, and the rules for their fields."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry.domain import stages
from registry.domain.errors import ValidationError
from registry.domain.events import StageChanged
from registry.domain.stages import Stage, Trigger

_FORBIDDEN_NAME_CHARS = re.compile(r"[/:\x00-\x1f\x7f-\x9f]")  # C0 and C1 controls
_ALIAS = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TEXT = 250, 5000, 5000


def normalize_name(name: str) -> str:
    """A model name or alias as it is stored and looked up: Unicode NFC, so the composed and the
    decomposed spelling of ``café`` (which look and read the same) name one model."""
    return unicodedata.normalize("NFC", name)


def validate_model_name(name: str) -> str:
    """MLflow's rule: 1-256 characters, not '.' or '..', no '/', ':' or control characters,
    no leading or trailing space. Returns the name in NFC (:func:`normalize_name`), checked in
    that form: use the returned name."""
    name = normalize_name(name)
    if not 1 <= len(name) <= 256:
        raise ValidationError("model name must be 1 to 256 characters")
    if name in (".", ".."):
        raise ValidationError("model name cannot be '.' or '..'")
    if _FORBIDDEN_NAME_CHARS.search(name):
        raise ValidationError("model name cannot contain '/', ':' or control characters")
    if name != name.strip():
        raise ValidationError("model name cannot start or end with white space")
    return name


def validate_alias(alias: str) -> str:
    """Letters, digits, '_' and '-', up to 255; not 'latest' nor 'v<digits>' (MLflow reserves them).
    Returns the alias in NFC: use the returned alias."""
    alias = normalize_name(alias)
    if not _ALIAS.fullmatch(alias):
        raise ValidationError("alias must be 1 to 255 letters, digits, '_' or '-'")
    if _RESERVED_ALIAS.fullmatch(alias):
        raise ValidationError(f"alias {alias!r} is reserved")
    return alias


def validate_tags(tags: dict[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise ValidationError(f"tag keys must be 1 to {MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            raise ValidationError(f"tag {key!r}: values are at most {MAX_TAG_VALUE} characters")
    return tags


def validate_metrics(metrics: dict[str, float]) -> dict[str, float]:
    for key, value in metrics.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise ValidationError(f"metric names must be 1 to {MAX_TAG_KEY} characters")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationError(f"metric {key!r} must be a finite number")
    return metrics


@dataclass(slots=True)
class RegisteredModel:
    id: int
    name: str
    description: str
    tags: dict[str, str]
    created_at: datetime
    updated_at: datetime
    created_by: str
    last_version: int = 0
    # The names of the model's aliases, sorted, where a read asked for them (not in its snapshot).
    aliases: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tags": self.tags}


@dataclass(slots=True)
class DatasetRef:
    """A lineage input: an OpenLineage dataset identifier, optionally at a version."""

    namespace: str
    name: str
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name}
        if self.version is not None:
            out["version"] = self.version
        return out


@dataclass(slots=True)
class ModelVersion:
    model_id: int
    model: str
    version: int
    stage: Stage
    source: str
    run_id: str | None
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    inputs: list[DatasetRef]
    created_at: datetime
    updated_at: datetime
    created_by: str
    revision: int = 1
    # Event sequence at which this version last left production: orders rollback candidates.
    left_production_seq: int | None = None
    # Whether it last left production because a rollback replaced it: then it is never a rollback
    # target (it returns through restore, staging and promote, and its next exit decides again).
    left_by_rollback: bool = False
    # When the version entered its current stage.
    stage_since: datetime | None = None
    # Set once, by the first move out of ``none`` (or an explicit seal): artifacts are frozen.
    sealed_at: datetime | None = None
    manifest_digest: str | None = None
    id: int | None = None
    # The names of the aliases pointing at it, sorted (read with it; not part of its snapshot).
    aliases: list[str] = field(default_factory=list)

    @property
    def etag(self) -> str:
        """Strong ETag: changes whenever the version's representation does."""
        return f'"{self.model_id}-{self.version}-{self.revision}"'

    @property
    def is_rollback_target(self) -> bool:
        """Archived after being in production, and not pushed out of it by a rollback: the
        versions a rollback may choose from (the one that left production last)."""
        return (self.stage is Stage.ARCHIVED and self.left_production_seq is not None
                and not self.left_by_rollback)

    def move(self, trigger: Trigger, now: datetime, *, comment: str | None, sequence: int,
             audit: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
             by_rollback: bool = False) -> StageChanged:
        """Fire ``trigger`` through the stage table and return the change it made. ``sequence``
        is the model's event sequence this change will take: a version leaving production
        remembers it (rollback candidates are ordered by it), and whether a rollback replaced
        it (``by_rollback``: the incumbent a rollback archives). ``audit`` goes into the audit
        entry's ``after`` and the event; ``extra`` into the event only."""
        from_stage = self.stage
        if by_rollback and (from_stage is not Stage.PRODUCTION or trigger is not Trigger.ARCHIVE):
            raise ValueError("a rollback archives only the production version")
        stages.fire(self, trigger)
        if from_stage is Stage.PRODUCTION:
            self.left_production_seq = sequence
            self.left_by_rollback = by_rollback
        self.updated_at = self.stage_since = now
        self.revision += 1
        audit = audit or {}
        return StageChanged(
            model=self.model, version=self.version, before={"stage": from_stage.value},
            after={"stage": self.stage.value, "trigger": trigger.value, "comment": comment, **audit},
            extra={**(extra or {}), **audit}, from_stage=from_stage.value, to_stage=self.stage.value,
            trigger=trigger.value, comment=comment)

    def snapshot(self) -> dict[str, Any]:
        return {
            "stage": self.stage.value,
            "source": self.source,
            "run_id": self.run_id,
            "description": self.description,
            "tags": self.tags,
            "metrics": self.metrics,
            "inputs": [i.to_dict() for i in self.inputs],
        }
