"""Who may do what: cumulative roles and model-name scopes, as pure functions.

Roles mirror Databricks' CAN_READ / CAN_EDIT / CAN_MANAGE_STAGING_VERSIONS /
CAN_MANAGE_PRODUCTION_VERSIONS / CAN_MANAGE split. A model outside a token's patterns does not
exist for that token (404, absent from lists); a visible model with too low a role is 403.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from fnmatch import fnmatchcase

from registry.domain.errors import ForbiddenError, ValidationError
from registry.domain.model import normalize_name
from registry.domain.stages import Stage


class Role(enum.IntEnum):
    VIEWER = 1  # read models, versions, stages, aliases, audit of visible models, events
    EDITOR = 2  # + create/update models and versions, unprotected aliases
    STAGER = 3  # + transitions among none, staging and archived
    RELEASER = 4  # + transitions into and out of production, rollback
    ADMIN = 5  # + tokens, protected aliases, deleting models, the system audit chain

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValidationError(
                f"role must be one of {', '.join(r.name.lower() for r in cls)}"
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()


# Globs of model names: '*' and '?' only, so they translate exactly to SQL LIKE.
_PATTERN = re.compile(r"^[^\[\]/:\x00-\x1f\x7f-\x9f]{1,256}\Z")


def validate_patterns(patterns: Sequence[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    if not patterns:
        raise ValidationError("models must name at least one pattern (omit it for all models)")
    for p in patterns:
        if not _PATTERN.match(p):
            raise ValidationError(f"model pattern {p!r}: 1-256 characters, '*' and '?' as wildcards")
    return [normalize_name(p) for p in patterns]  # matched against names stored in NFC


def visible(patterns: Sequence[str] | None, model: str) -> bool:
    return patterns is None or any(fnmatchcase(model, p) for p in patterns)


def require(role: Role, needed: Role, what: str) -> None:
    if role < needed:
        raise ForbiddenError(f"{what} needs the {needed.label} role; this token is {role.label}")


def role_for_transition(current: Stage, target: Stage) -> Role:
    """Moves into or out of production (rollback included) are releasers'; the rest stagers'."""
    return Role.RELEASER if Stage.PRODUCTION in (current, target) else Role.STAGER


def like_patterns(patterns: Sequence[str]) -> list[str]:
    """The globs as SQL LIKE patterns (escape character '\\')."""
    out = []
    for p in patterns:
        escaped = p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        out.append(escaped.replace("*", "%").replace("?", "_"))
    return out
