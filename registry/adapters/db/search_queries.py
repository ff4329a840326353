"""Repository queries for searches across models and versions, and a model's latest version per
stage (mixed into SqlRepository; they run in the caller's unit of work)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.adapters.db.aggregates import split_names
from registry.adapters.db.matching import like, literal_backslashes, name_matches
from registry.adapters.db.rows import LIVE, MODEL_ALIASES, MODEL_COLS, VERSION_COLS, model_of, version_of
from registry.adapters.db.tables import models_t, versions_t
from registry.services.search import Condition, Search

_MODEL_ORDER = {"name": models_t.c.name, "created_at": models_t.c.created_at,
                "updated_at": models_t.c.updated_at}
_VERSION_ORDER = {"name": models_t.c.name, "version": versions_t.c.version,
                  "created_at": versions_t.c.created_at, "updated_at": versions_t.c.updated_at}


def _compare(column: Any, c: Condition, sqlite: bool) -> ColumnElement[bool]:
    value = c.value
    match c.op:
        case "=":
            return column == value
        case "!=":
            return column != value
        case "like":
            return like(column, str(value), sqlite)
        case "ilike":
            pattern = str(value) if sqlite else literal_backslashes(str(value))
            return func.lower(column).like(func.lower(pattern))
        case "in":
            return column.in_(list(value))
        case "not in":
            return column.not_in(list(value))
        case "<":
            return column < value
        case "<=":
            return column <= value
        case ">":
            return column > value
        case _:  # ">="
            return column >= value


class SearchQueries:
    conn: AsyncConnection
    sqlite: bool

    def _condition(self, c: Condition, tags: Any, columns: dict[str, Any]) -> ColumnElement[bool]:
        if c.field == "tag":
            value = tags[c.key].as_string()
            found = _compare(value, c, self.sqlite)
            return or_(value.is_(None), found) if c.missing_matches else found
        column = columns[c.field]
        if c.field == "version":
            value = tuple(int(v) for v in c.value) if isinstance(c.value, tuple) else int(c.value)
            return _compare(column, Condition(c.field, c.op, value, c.key), self.sqlite)  # type: ignore[arg-type]
        return _compare(column, c, self.sqlite)

    async def search_models(self, search: Search, patterns: Sequence[str] | None) -> list[Any]:
        columns = {"name": models_t.c.name}
        stmt = select(*MODEL_COLS, MODEL_ALIASES).where(
            *(self._condition(c, models_t.c.tags, columns) for c in search.conditions))
        if patterns is not None:
            stmt = stmt.where(name_matches(models_t.c.name, patterns, self.sqlite))
        order = [(_MODEL_ORDER[f], asc) for f, asc in search.order_by] or [(models_t.c.name, True)]
        stmt = stmt.order_by(*(col.asc() if asc else col.desc() for col, asc in order),
                             models_t.c.name).offset(search.offset).limit(search.limit + 1)
        found = []
        for row in await self.conn.execute(stmt):
            found.append(model := model_of(row))
            model.aliases = split_names(row.aliases)
        return found

    async def search_versions(self, search: Search, patterns: Sequence[str] | None) -> list[Any]:
        # A version without a run has run_id NULL here and "" in MLflow: compared as "".
        columns = {"name": models_t.c.name, "run_id": func.coalesce(versions_t.c.run_id, ""),
                   "source": versions_t.c.source, "version": versions_t.c.version}
        stmt = (select(models_t.c.name.label("model_name"), *VERSION_COLS)
                .join(models_t, models_t.c.id == versions_t.c.model_id)
                .where(LIVE, *(self._condition(c, versions_t.c.tags, columns) for c in search.conditions)))
        if patterns is not None:
            stmt = stmt.where(name_matches(models_t.c.name, patterns, self.sqlite))
        # MLflow's default: the last updated first
        order = [(_VERSION_ORDER[f], asc) for f, asc in search.order_by] or [(versions_t.c.updated_at, False)]
        stmt = stmt.order_by(*(col.asc() if asc else col.desc() for col, asc in order),
                             models_t.c.name, versions_t.c.version.desc()
                             ).offset(search.offset).limit(search.limit + 1)
        return [version_of(row, row.model_name) for row in await self.conn.execute(stmt)]

    async def latest_versions(self, model: Any) -> list[Any]:
        """The highest-numbered live version of each stage the model has versions in."""
        latest = (select(versions_t.c.stage, func.max(versions_t.c.version).label("top"))
                  .where(versions_t.c.model_id == model.id, LIVE)
                  .group_by(versions_t.c.stage).subquery())
        stmt = (select(*VERSION_COLS)
                .join(latest, and_(latest.c.stage == versions_t.c.stage, latest.c.top == versions_t.c.version))
                .where(versions_t.c.model_id == model.id, LIVE).order_by(versions_t.c.version))
        return [version_of(row, model.name) for row in await self.conn.execute(stmt)]

