"""Reads for people deciding: models at a glance, and a model's stage history from its audit log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.stages import Stage
from registry.services.access import require_model
from registry.services.audit import chain_entries, model_chain, scoped
from registry.services.ports import UnitOfWork
from registry.services.search import MODEL_FIELDS, MODEL_ORDER, Condition, Search, check_search

# The actions that move a version into or out of a stage, for a stage timeline.
STAGE_ACTIONS = ("model_version.stage_changed", "model_version.imported", "model_version.deleted")


@dataclass(frozen=True, slots=True)
class ModelGlance:
    model: RegisteredModel
    production: ModelVersion | None
    staging: list[ModelVersion]
    last_change: dict[str, Any] | None  # action, actor, at, version of the latest audit entry


async def glance(query: str | None, offset: int, limit: int, uow: UnitOfWork) -> tuple[list[ModelGlance], bool]:
    """Visible models whose name contains ``query`` (any case), by name: each with its production
    and staging versions and its latest change. The flag says whether more follow."""
    conditions = (Condition("name", "ilike", f"%{query}%"),) if query else ()
    search = check_search(Search(conditions, (("name", True),), offset, limit), MODEL_FIELDS, MODEL_ORDER)
    async with uow:
        found = await uow.repo.search_models(search, uow.actor.models)
        more, found = len(found) > limit, found[:limit]
        changes = await uow.repo.last_changes([model_chain(m.id) for m in found])
        out = []
        for m in found:
            production = await uow.repo.versions_in_stage(m, Stage.PRODUCTION)
            staging = await uow.repo.versions_in_stage(m, Stage.STAGING)
            out.append(ModelGlance(m, production[0] if production else None, staging,
                                   changes.get(model_chain(m.id))))
    return out, more


async def stage_entries(model_name: str, uow: UnitOfWork) -> list[dict[str, Any]]:
    """Every audit entry of the model's chain that moved a version into or out of a stage, in
    chain order (the whole history: a timeline needs its beginning)."""
    async with uow:
        model = await require_model(uow, model_name)
        chain = model_chain(model.id)
        entries = [e for action in STAGE_ACTIONS
                   for e in await chain_entries(uow, replace(scoped(uow), chain=chain, action=action))]
    return sorted(entries, key=lambda e: e["seq"])


async def latest_checks(model_name: str, numbers: list[int], uow: UnitOfWork) -> dict[int, dict[str, str]]:
    """Each version's latest status per check name, in one unit of work."""
    async with uow:
        model = await require_model(uow, model_name)
        return {n: await uow.repo.latest_checks(model, n) for n in numbers}


async def version_entries(model_name: str, number: int, uow: UnitOfWork) -> list[dict[str, Any]]:
    """Every audit entry about one version, newest first."""
    async with uow:
        model = await require_model(uow, model_name)
        query = replace(scoped(uow), chain=model_chain(model.id), version=number)
        return list(reversed(await chain_entries(uow, query)))
