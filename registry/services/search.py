"""Searches across models and versions: a filter of conditions joined by AND, an order and a
window. The MLflow surface parses its filter grammar into these; the repository runs them."""

from __future__ import annotations

from dataclasses import dataclass

from registry.domain.errors import ValidationError
from registry.domain.model import ModelVersion, RegisteredModel, normalize_name
from registry.domain.stages import Stage
from registry.services.access import require_model
from registry.services.ports import UnitOfWork

# What a condition may test, per kind of search; ``tag`` takes a ``key``.
MODEL_FIELDS = frozenset({"name", "tag"})
VERSION_FIELDS = frozenset({"name", "run_id", "source", "version", "tag"})
OPERATORS = frozenset({"=", "!=", "like", "ilike", "in", "not in", "<", "<=", ">", ">="})
# What a search may be ordered by (``version`` for versions only); ties break by name, version.
MODEL_ORDER = frozenset({"name", "created_at", "updated_at"})
VERSION_ORDER = frozenset({"name", "version", "created_at", "updated_at"})
MAX_SEARCH_WINDOW = 1_000_000  # offset + limit: deep pages of a search are not free


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``: value is a string, or a tuple of strings for ``in``/``not in``; LIKE
    patterns use ``%`` and ``_`` and match case-sensitively (``ilike`` ignores case)."""

    field: str
    op: str
    value: str | tuple[str, ...]
    key: str | None = None
    # Whether a row without the tag matches (``!=``: MLflow's clients append
    # tags.`mlflow.prompt.is_prompt` != 'true' to every search and mean "not a prompt").
    missing_matches: bool = False


@dataclass(frozen=True, slots=True)
class Search:
    conditions: tuple[Condition, ...] = ()
    order_by: tuple[tuple[str, bool], ...] = ()  # (field, ascending)
    offset: int = 0
    limit: int = 100


def check_search(search: Search, fields: frozenset[str], order: frozenset[str]) -> Search:
    for c in search.conditions:
        if c.field not in fields or c.op not in OPERATORS:
            raise ValidationError(f"cannot filter on {c.field} with {c.op!r}")
        if "\x00" in (c.key or "") or any("\x00" in v for v in (c.value if isinstance(c.value, tuple)
                                                                  else (c.value,))):
            raise ValidationError("a filter value must not contain NUL characters")
    for name, _ in search.order_by:
        if name not in order:
            raise ValidationError(f"cannot order by {name}")
    if search.offset < 0 or search.limit < 1 or search.offset + search.limit > MAX_SEARCH_WINDOW:
        raise ValidationError(f"a search reaches at most {MAX_SEARCH_WINDOW} results deep")
    return Search(tuple(_normalized(c) for c in search.conditions), search.order_by, search.offset,
                  search.limit)


def _normalized(c: Condition) -> Condition:
    """Names are stored in NFC: a name filter is compared in NFC too."""
    if c.field != "name":
        return c
    value = tuple(map(normalize_name, c.value)) if isinstance(c.value, tuple) else normalize_name(c.value)
    return Condition(c.field, c.op, value, c.key, c.missing_matches)


async def search_models(search: Search, uow: UnitOfWork) -> list[RegisteredModel]:
    """Models the caller may see that match, in order; up to ``limit + 1`` (the extra one says
    another page exists)."""
    search = check_search(search, MODEL_FIELDS, MODEL_ORDER)
    async with uow:
        return await uow.repo.search_models(search, uow.actor.models)


async def search_model_versions(search: Search, uow: UnitOfWork) -> list[ModelVersion]:
    """Live versions of the models the caller may see that match, in order; up to ``limit + 1``."""
    search = check_search(search, VERSION_FIELDS, VERSION_ORDER)
    async with uow:
        return await uow.repo.search_versions(search, uow.actor.models)


async def latest_versions(model_name: str, stages: list[Stage] | None, uow: UnitOfWork) -> list[ModelVersion]:
    """The highest-numbered live version in each stage (those of ``stages`` only, if given),
    ordered by version number."""
    async with uow:
        model = await require_model(uow, model_name)
        found = await uow.repo.latest_versions(model)
    wanted = set(stages) if stages else set(Stage)
    return [v for v in found if v.stage in wanted]


Summary = tuple[RegisteredModel, list[ModelVersion], list[tuple[str, int]]]


async def _summary(uow: UnitOfWork, model: RegisteredModel) -> Summary:
    latest = await uow.repo.latest_versions(model)
    aliases = [(alias, record.version) for alias, record in await uow.repo.list_aliases(model, None, None)]
    return model, latest, aliases


async def model_summary(model_name: str, uow: UnitOfWork) -> Summary:
    """A visible model with its latest version per stage and its aliases (name, version), in one
    unit of work: what MLflow shows of a registered model."""
    async with uow:
        return await _summary(uow, await require_model(uow, model_name))


async def model_summaries(found: list[RegisteredModel], uow: UnitOfWork) -> list[Summary]:
    """:func:`model_summary` of each model a search found, in one unit of work."""
    async with uow:
        return [await _summary(uow, model) for model in found]
