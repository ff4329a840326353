"""A version's lineage: what it was made from, how it moved, and the OpenLineage events sent."""

from __future__ import annotations

import uuid
from typing import Any

from registry.domain.errors import NotFoundError
from registry.services.access import require_model
from registry.services.audit import model_chain
from registry.services.ports import UnitOfWork

RUN_ID_NAMESPACE = uuid.UUID("6f0c5a52-8d0e-5d43-9a55-2b4c0d3e7a11")


def run_uuid(run_id: str) -> str:
    """A training run id as an OpenLineage run id: UUIDs as they are, others mapped with uuid5."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(RUN_ID_NAMESPACE, run_id))


async def version_lineage(model_name: str, number: int, uow: UnitOfWork) -> dict[str, Any]:
    """``inputs`` (upstream datasets), ``run`` (the training run, or None), ``stages`` (the stage
    history, oldest first) and ``events`` (the OpenLineage events built for it, oldest first)."""
    async with uow:
        model = await require_model(uow, model_name)
        version = await uow.repo.get_version(model, number)
        if version is None:
            raise NotFoundError(f"model {model.name!r} has no version {number}")
        stages = await uow.repo.stage_history(model, number)
        events = await uow.repo.lineage_events(model_chain(model.id), number)
    run = None if version.run_id is None else {"id": version.run_id, "run_uuid": run_uuid(version.run_id)}
    return {"inputs": [i.to_dict() for i in version.inputs], "run": run, "stages": stages,
            "events": events}
