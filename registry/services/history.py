"""What held each stage and alias of a model at a moment, replayed from its audit chain."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from registry.domain.errors import NotFoundError, ValidationError
from registry.services.access import check_visible
from registry.services.audit import chain_entries, scoped
from registry.services.ports import UnitOfWork

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ModelHistory:
    at: datetime
    production: int | None
    staging: list[int]
    aliases: dict[str, int]


def replay(entries: list[dict[str, Any]], at: datetime) -> ModelHistory:
    """Apply the chain's entries in order; the state after the last one is the answer."""
    stages: dict[int, str] = {}
    aliases: dict[str, int] = {}
    for e in entries:
        action, version, after = e["action"], e["version"], e["after"] or {}
        if action == "model_version.created":
            stages[version] = "none"
        elif action == "model_version.imported":
            stages[version] = after["stage"]
        elif action == "model_version.deleted":
            stages.pop(version, None)
        elif action == "model_version.stage_changed":
            stages[version] = after["stage"]
        elif action == "model_version.alias_set":
            aliases[after["alias"]] = after["version"]
        elif action == "model_version.alias_deleted":
            aliases.pop(e["before"]["alias"], None)
        elif action == "model.deleted":
            stages.clear()
            aliases.clear()
    production = [v for v, s in stages.items() if s == "production"]
    return ModelHistory(at, production[0] if production else None,
                        sorted(v for v, s in stages.items() if s == "staging"), dict(sorted(aliases.items())))


async def model_history(name: str, at: datetime, uow: UnitOfWork) -> ModelHistory:
    """The model's stages and aliases at ``at``, from the chain of the model that held the name
    then (a re-created name has a chain of its own)."""
    if at.tzinfo is None:
        raise ValidationError("at must carry a time zone (RFC 3339)")
    at = at.astimezone(UTC)  # answers are in UTC, whatever offset the question used
    name = check_visible(uow, name)
    async with uow:
        chains = await uow.repo.chains_for_model_name(name)
        if not chains:
            raise NotFoundError(f"model {name!r} does not exist")
        for chain in chains:  # newest model first
            entries = await chain_entries(uow, replace(scoped(uow), chain=chain, until=at), _BATCH)
            if entries:
                return replay(entries, at)
    return ModelHistory(at, None, [], {})
