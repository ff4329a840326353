"""The import itself: each model, version, alias and file a unit of work of its own, skipping what is here."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from registry.domain.errors import NotFoundError, RegistryError
from registry.domain.events import VersionImported
from registry.domain.model import RegisteredModel, validate_model_name
from registry.domain.permissions import Role
from registry.domain.stages import Stage
from registry.mlflow_import.plan import (
    CONFLICT,
    FAILED,
    NEW,
    PRESENT,
    ProductionDecision,
    Report,
    Tally,
    decide_production,
    model_command,
    version_command,
)
from registry.mlflow_import.reader import BLOCK, MlflowError, MlflowReader, NotServedError
from registry.services.aliases import get_alias, set_alias
from registry.services.artifacts import UploadArtifact, list_artifacts, seal_version, upload_artifact
from registry.services.audit import list_audit
from registry.services.commands import SetAlias
from registry.services.imports import ImportModel, ImportModelVersion, import_model, import_model_version
from registry.services.models import get_model
from registry.services.ports import Actor, AuditQuery, UnitOfWork

if TYPE_CHECKING:
    from registry.bootstrap import Container

# What an MLflow entry that is not as MLflow writes them raises while it is read (a missing field,
# a timestamp out of range or null): that entry fails, the run goes on.
BAD_ENTRY = (ValueError, KeyError, TypeError, OverflowError)


class Importer:
    """Copies what ``reader`` shows into the registry of ``container`` (or, on a dry run, only
    says what it would do). Each entry is its own unit of work."""

    def __init__(self, reader: MlflowReader, container: Container, *, dry_run: bool = False,
                 copy_artifacts: bool = False, progress: TextIO = sys.stderr) -> None:
        self.reader, self.container, self.progress = reader, container, progress
        self.dry_run, self.copy_artifacts = dry_run, copy_artifacts
        request_id = f"import-{uuid.uuid4()}"
        self.actor = Actor("import:mlflow", request_id, Role.ADMIN, None, "import:mlflow")
        self.report = Report(reader.url, request_id, dry_run)

    def _uow(self, write: bool = True) -> UnitOfWork:
        return self.container.uow(self.actor, write=write)

    async def run(self, only: list[str] | None = None) -> Report:
        models = await self.reader.models()
        if only:
            for missing in sorted(set(only) - {m["name"] for m in models}):
                self.report.failure(missing, None, "no such model in MLflow")
            models = [m for m in models if m["name"] in only]
        for index, model in enumerate(models, 1):
            tally = await self._one_model(model)
            print(f"[{index}/{len(models)}] {model['name']}: {tally}", file=self.progress, flush=True)
        return self.report

    async def _one_model(self, model: dict[str, Any]) -> Tally:
        tally = Tally()
        try:
            versions = await self.reader.versions(model["name"])
            here, tally.created = await self._model_here(model_command(model, self.reader.url))
            await self._versions(model, here, versions, tally)
        except (RegistryError, MlflowError, *BAD_ENTRY) as exc:
            self.report.failure(model["name"], None, _reason(exc))
            tally.failed += 1
        return tally

    async def _model_here(self, cmd: ImportModel) -> tuple[RegisteredModel | None, bool]:
        """The model here (None on a dry run when it is not here yet), and whether it is new."""
        name = validate_model_name(cmd.name)
        if self.dry_run:
            try:
                found: RegisteredModel | None = await get_model(name, self._uow(write=False))
            except NotFoundError:
                found = None
            created = found is None
        else:
            found, created = await import_model(cmd, self._uow())
        (self.report.models_created if created else self.report.models_present).append(name)
        return found, created

    async def _versions(self, model: dict[str, Any], here: RegisteredModel | None,
                        versions: list[dict[str, Any]], tally: Tally) -> None:
        """In ascending order, so the numbers of deleted versions stay gaps. The first failure
        stops the model: a later number would pass the failed one for good."""
        name = validate_model_name(model["name"])
        decision = decide_production(name, versions)
        if decision is not None:
            self.report.production.append(asdict(decision))
        imported = await self._imported_here(name) if here is not None else {}
        outcome: dict[int, str] = {}
        for position, version in enumerate(versions):
            number = int(version["version"])
            outcome[number] = await self._version(name, here, imported, version, decision)
            setattr(tally, outcome[number], getattr(tally, outcome[number]) + 1)
            if outcome[number] == FAILED:
                self._stop_model(name, number, versions[position + 1:])
                break
        await self._aliases(name, model, outcome)

    def _stop_model(self, name: str, number: int, rest: list[dict[str, Any]]) -> None:
        if rest:
            left = ", ".join(v["version"] for v in rest)
            self.report.failure(name, None, f"stopped at version {number}: versions {left} are left "
                                            "for a run after that is fixed")

    async def _imported_here(self, name: str) -> dict[int, str]:
        """The versions of the model here that an import made: number -> the URL it came from."""
        found: dict[int, str] = {}
        cursor = None
        while True:
            page = await list_audit(name, cursor, 1000, self._uow(write=False),
                                    AuditQuery(action=VersionImported.type))
            for entry in page.items:
                found[entry["version"]] = entry["after"]["imported"]["from"]
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def _version(self, name: str, here: RegisteredModel | None, imported: dict[int, str],
                       version: dict[str, Any], decision: ProductionDecision | None) -> str:
        number = int(version["version"])
        try:
            cmd = version_command(name, version, self.reader.url, decision)
        except BAD_ENTRY as exc:
            self.report.failure(name, number, _reason(exc))
            return FAILED
        if here is not None and number <= here.last_version:
            status = self._taken(name, number, imported.get(number))
        else:
            status = await self._import_version(cmd)
        if status in (NEW, PRESENT) and self.copy_artifacts:
            await self._artifacts(cmd, version["name"], status)
        elif status == NEW and cmd.stage is not Stage.NONE:
            await self._seal(cmd)  # its files stay at its source: none may be added to it here
        return status

    def _taken(self, name: str, number: int, origin: str | None) -> str:
        if origin == self.reader.url:
            self.report.versions_present += 1
            return PRESENT
        self.report.conflict(name, number, f"the number is taken here by a version imported from "
                                           f"{origin}" if origin else
                             "the number is taken here by a version registered here (or deleted here)")
        return CONFLICT

    async def _import_version(self, cmd: ImportModelVersion) -> str:
        try:
            if not self.dry_run and await import_model_version(cmd, self._uow()) is None:
                self.report.conflict(cmd.model, cmd.version, "the number was taken here during this run")
                return CONFLICT
        except RegistryError as exc:
            self.report.failure(cmd.model, cmd.version, exc.detail)
            return FAILED
        self.report.versions_imported += 1
        return NEW

    async def _aliases(self, name: str, model: dict[str, Any], outcome: dict[int, str]) -> None:
        for entry in model.get("aliases", []):
            alias, number = entry["alias"], int(entry["version"])
            if outcome.get(number) not in (NEW, PRESENT):
                self.report.conflict(name, number, f"alias {alias!r} not set: its version is not here")
                continue
            try:
                await self._alias(name, alias, number)
            except RegistryError as exc:
                self.report.failure(name, number, f"alias {alias!r}: {exc.detail}")

    async def _alias(self, name: str, alias: str, number: int) -> None:
        try:
            current, _ = await get_alias(name, alias, self._uow(write=False))
            points_at: int | None = current.version
        except NotFoundError:
            points_at = None
        if points_at == number:
            self.report.aliases_present += 1
        elif points_at is not None:
            self.report.conflict(name, number, f"alias {alias!r} points at version {points_at} here; "
                                               "left there")
        else:
            if not self.dry_run:
                await set_alias(SetAlias(name, alias, number), self._uow())
            self.report.aliases_set += 1

    async def _artifacts(self, cmd: ImportModelVersion, mlflow_name: str, status: str) -> None:
        """Copy the version's files (unless it is sealed here already), then seal it unless it
        is in stage none. A failure is reported; the next run tries again."""
        try:
            here = {} if status == NEW and self.dry_run else await self._files_here(cmd)
            if here is None:
                return  # sealed (or deleted) here already: its files are what they are
            root = await self.reader.artifact_root(mlflow_name, cmd.version)
            with tempfile.TemporaryDirectory(prefix="registry-import-") as tmp:
                for path, size in await self.reader.files(root):
                    await self._copy_file(cmd, f"{root}/{path}", path, size, here, Path(tmp) / "file")
            if cmd.stage is not Stage.NONE:
                await self._seal(cmd)
        except (RegistryError, MlflowError, NotServedError, KeyError) as exc:
            self.report.failure(cmd.model, cmd.version, f"artifacts not copied: {_reason(exc)}")

    async def _seal(self, cmd: ImportModelVersion) -> None:
        """Freeze the files of a version out of stage none, as leaving none does here."""
        if not self.dry_run:
            await seal_version(cmd.model, cmd.version, self.container.artifacts,
                               self._uow(write=False), self._uow())
        self.report.versions_sealed += 1

    async def _files_here(self, cmd: ImportModelVersion) -> dict[str, str] | None:
        """The version's files here (path -> sha256), or None when it is sealed or deleted."""
        found: dict[str, str] = {}
        cursor = None
        while True:
            try:
                page = await list_artifacts(cmd.model, cmd.version, cursor, 1000, self._uow(write=False))
            except NotFoundError:
                return None
            if page.sealed_at is not None:
                return None
            found.update({a.path: a.sha256 for a in page.items})
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def _copy_file(self, cmd: ImportModelVersion, source: str, path: str, size: int,
                         here: dict[str, str], target: Path) -> None:
        if self.dry_run:
            if path not in here:
                self.report.files_copied += 1
                self.report.bytes_copied += size
            return
        size, sha256 = await self.reader.download(source, target)
        if here.get(path) == sha256:
            return  # copied by an earlier run
        limit = self.container.settings.artifact_store.max_bytes
        await upload_artifact(UploadArtifact(cmd.model, cmd.version, path, sha256, size),
                              _chunks(target), self.container.artifacts, self._uow(write=False),
                              self._uow(), limit)
        self.report.files_copied += 1
        self.report.bytes_copied += size


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while block := await asyncio.to_thread(f.read, BLOCK):
            yield block


def _reason(exc: Exception) -> str:
    if isinstance(exc, RegistryError):
        return exc.detail
    if isinstance(exc, KeyError):
        return f"MLflow's answer lacks {exc}"
    return str(exc)


# -- the command ---------------------------------------------------------------------------------
