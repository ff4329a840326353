"""Resolving an MLflow-style model URI to one version, for serving systems.

``models:/fraud/Production`` (a stage, any case: the highest version in it), ``models:/fraud@champion``
(an alias), ``models:/fraud/7`` (a version), ``models:/fraud/latest`` (the highest version).
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.domain.errors import NotFoundError, ValidationError
from registry.domain.model import ModelVersion, validate_alias, validate_model_name
from registry.domain.stages import Stage
from registry.services.access import require_model
from registry.services.ports import UnitOfWork
from registry.services.versions import require_version

SCHEME = "models:/"
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ModelUri:
    name: str
    version: int | None = None
    stage: Stage | None = None
    alias: str | None = None
    latest: bool = False

    @classmethod
    def parse(cls, uri: str) -> ModelUri:
        if not uri.startswith(SCHEME):
            raise ValidationError("a model URI starts with models:/ (models:/<name>/<stage|version|"
                                  "latest> or models:/<name>@<alias>)")
        rest = uri.removeprefix(SCHEME).lstrip("/")
        if "/" in rest:
            name, _, suffix = rest.partition("/")
            validate_model_name(name)
            if suffix.lower() == "latest":  # as MLflow: any case
                return cls(name, latest=True)
            if suffix.isascii() and suffix.isdigit():
                number = int(suffix)
                if not 1 <= number <= MAX_VERSION:
                    raise ValidationError(f"version numbers are 1 to {MAX_VERSION}")
                return cls(name, version=number)
            try:
                return cls(name, stage=Stage.parse(suffix.lower()))
            except ValidationError:
                raise ValidationError(f"{suffix!r} is not a stage, a version number or 'latest'") from None
        if "@" in rest:
            name, _, alias = rest.rpartition("@")
            return cls(validate_model_name(name), alias=validate_alias(alias))
        raise ValidationError("a model URI names a stage, a version, 'latest' or an @alias after the "
                              "model name")


async def resolve_uri(uri: str, uow: UnitOfWork) -> ModelVersion:
    """The one version the URI names now (404 when it names none)."""
    parsed = ModelUri.parse(uri)
    async with uow:
        model = await require_model(uow, parsed.name)
        number = parsed.version
        if parsed.alias is not None:
            alias = await uow.repo.get_alias(model, parsed.alias)
            if alias is None:
                raise NotFoundError(f"model {model.name!r} has no alias {parsed.alias!r}")
            number = alias.version
        elif parsed.latest:  # the highest live version (the counter also counts deleted ones)
            number = max((v.version for v in await uow.repo.latest_versions(model)), default=0)
            if number == 0:
                raise NotFoundError(f"model {model.name!r} has no versions")
        elif parsed.stage is not None:
            members = await uow.repo.versions_in_stage(model, parsed.stage)
            if not members:
                raise NotFoundError(f"model {model.name!r} has no version in {parsed.stage.value}")
            return max(members, key=lambda v: v.version)
        assert number is not None
        return await require_version(uow.repo, model, number)
