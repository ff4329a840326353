"""The columns every read of a model or a version selects, and their rows as domain objects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from registry.adapters.db.aggregates import joined_names, split_names
from registry.adapters.db.tables import aliases_t, models_t, versions_t
from registry.domain.model import DatasetRef, ModelVersion, RegisteredModel
from registry.domain.stages import Stage

# A deleted version (deleted_at set) is invisible to every read: each statement that reads
# versions says LIVE.
LIVE = versions_t.c.deleted_at.is_(None)

# The names of the aliases at a version, and of a model's aliases: correlated subqueries, so they come
# in the row of the version (or model) that a read fetches anyway (see aggregates.py).
_AT_VERSION = aliases_t.alias("version_aliases")
VERSION_ALIASES = (select(joined_names(_AT_VERSION.c.alias))
                   .where(_AT_VERSION.c.model_id == versions_t.c.model_id,
                          _AT_VERSION.c.version == versions_t.c.version)
                   .correlate(versions_t).scalar_subquery().label("aliases"))
_OF_MODEL = aliases_t.alias("model_aliases_of")
MODEL_ALIASES = (select(joined_names(_OF_MODEL.c.alias)).where(_OF_MODEL.c.model_id == models_t.c.id)
                 .correlate(models_t).scalar_subquery().label("aliases"))

MODEL_COLS = (models_t.c.id, models_t.c.name, models_t.c.description, models_t.c.tags,
              models_t.c.created_at, models_t.c.updated_at, models_t.c.created_by,
              models_t.c.last_version)
VERSION_COLS = (versions_t.c.id, versions_t.c.model_id, versions_t.c.version, versions_t.c.stage,
                versions_t.c.source, versions_t.c.run_id, versions_t.c.description,
                versions_t.c.tags, versions_t.c.metrics, versions_t.c.inputs,
                versions_t.c.created_at, versions_t.c.updated_at, versions_t.c.created_by,
                versions_t.c.revision, versions_t.c.left_production_seq, versions_t.c.left_by_rollback,
                versions_t.c.stage_since, versions_t.c.sealed_at, versions_t.c.manifest_digest, VERSION_ALIASES)


def model_of(row: Any) -> RegisteredModel:
    return RegisteredModel(id=row.id, name=row.name, description=row.description, tags=row.tags,
                           created_at=row.created_at, updated_at=row.updated_at,
                           created_by=row.created_by, last_version=row.last_version)


def version_of(row: Any, model_name: str) -> ModelVersion:
    return ModelVersion(
        id=row.id, model_id=row.model_id, model=model_name, version=row.version,
        stage=Stage(row.stage), source=row.source, run_id=row.run_id,
        description=row.description, tags=row.tags, metrics=row.metrics,
        inputs=[DatasetRef(i["namespace"], i["name"], i.get("version")) for i in row.inputs],
        created_at=row.created_at, updated_at=row.updated_at, created_by=row.created_by,
        revision=row.revision, left_production_seq=row.left_production_seq,
        left_by_rollback=bool(row.left_by_rollback), stage_since=row.stage_since,
        sealed_at=row.sealed_at, manifest_digest=row.manifest_digest,
        aliases=split_names(row.aliases),
    )
