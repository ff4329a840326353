"""An in-memory repository and unit of work for the service tests (cosmicpython style).

The fake is transactional like the real one: each unit works on a copy of the store, and only
``commit`` makes its writes (and its recorded changes) stick. Reads hand out copies, so a service
that changes an object but forgets to save it changes nothing, as with the database.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from registry.domain.artifacts import Artifact
from registry.domain.errors import AlreadyExistsError, NotFoundError
from registry.domain.events import Change, SystemChange
from registry.domain.gates import Policy
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.stages import Stage
from registry.services.ports import (
    Actor,
    AliasRecord,
    CheckRecord,
    CommentRecord,
    PolicyRecord,
    RequestQuery,
    RequestRecord,
    UploadRecord,
)


@dataclass
class State:
    models: dict[str, RegisteredModel] = field(default_factory=dict)
    versions: dict[tuple[int, int], ModelVersion] = field(default_factory=dict)
    aliases: dict[tuple[int, str], AliasRecord] = field(default_factory=dict)
    checks: list[tuple[int, int, CheckRecord]] = field(default_factory=list)  # (model id, version, check)
    policies: dict[tuple[int, str], PolicyRecord] = field(default_factory=dict)
    requests: dict[int, RequestRecord] = field(default_factory=dict)
    artifacts: dict[int, dict[str, Artifact]] = field(default_factory=dict)  # by version id, path
    uploads: dict[int, tuple[int, UploadRecord]] = field(default_factory=dict)  # id: (version id, upload)
    comments: dict[int, tuple[int, CommentRecord]] = field(default_factory=dict)  # id: (model id, comment)
    next_model_id: int = 1
    next_version_id: int = 1
    next_upload_id: int = 1


@dataclass
class Store:
    """What has committed: the state, and every committed change with its event sequence."""

    state: State = field(default_factory=State)
    changes: list[tuple[int, int, Change]] = field(default_factory=list)  # (model id, seq, change)
    system_changes: list[SystemChange] = field(default_factory=list)
    clock: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    # Configuration, not state: REGISTRY_DEFAULT_POLICIES as every unit on this store sees it.
    default_policies: dict[Stage, Policy] = field(default_factory=dict)

    def event_seq(self, model_id: int) -> int:
        return sum(1 for m, _, _ in self.changes if m == model_id)

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock


class FakeRepository:
    def __init__(self, state: State) -> None:
        self.state = state

    async def get_model(self, name: str, *, aliases: bool = False) -> RegisteredModel | None:
        model = copy.deepcopy(self.state.models.get(name))
        if model is not None and aliases:
            model.aliases = sorted(a for m, a in self.state.aliases if m == model.id)
        return model

    async def lock_model(self, name: str) -> RegisteredModel:
        model = await self.get_model(name)
        if model is None:
            raise NotFoundError(f"model {name!r} does not exist")
        return model

    async def add_model(self, name: str, description: str, tags: dict[str, str], actor: str,
                        now: datetime) -> RegisteredModel:
        if name in self.state.models:
            raise AlreadyExistsError(f"model {name!r} already exists")
        model = RegisteredModel(self.state.next_model_id, name, description, dict(tags), now, now,
                                actor, 0)
        self.state.next_model_id += 1
        self.state.models[name] = copy.deepcopy(model)
        return model

    async def update_model(self, model: RegisteredModel) -> None:
        self.state.models[model.name] = copy.deepcopy(model)

    async def delete_model(self, model: RegisteredModel) -> None:
        del self.state.models[model.name]
        self.state.versions = {k: v for k, v in self.state.versions.items() if k[0] != model.id}
        self.state.aliases = {k: v for k, v in self.state.aliases.items() if k[0] != model.id}

    async def list_models(self, name_prefix: str | None, after: str | None,
                          limit: int) -> list[RegisteredModel]:
        names = sorted(n for n in self.state.models
                       if n.startswith(name_prefix or "") and (after is None or n > after))
        return [copy.deepcopy(self.state.models[n]) for n in names[:limit]]

    async def allocate_version(self, model: RegisteredModel) -> int:
        stored = self.state.models[model.name]
        stored.last_version += 1
        model.last_version = stored.last_version
        return stored.last_version

    async def add_version(self, version: ModelVersion) -> None:
        key = (version.model_id, version.version)
        assert key not in self.state.versions, "version numbers are never reused"
        version.id, self.state.next_version_id = self.state.next_version_id, self.state.next_version_id + 1
        self.state.versions[key] = copy.deepcopy(version)

    async def get_version(self, model: RegisteredModel, number: int) -> ModelVersion | None:
        return copy.deepcopy(self.state.versions.get((model.id, number)))

    async def get_version_and_production(
        self, model: RegisteredModel, number: int
    ) -> tuple[ModelVersion | None, ModelVersion | None]:
        production = await self.versions_in_stage(model, Stage.PRODUCTION)
        return await self.get_version(model, number), (production[0] if production else None)

    async def save_version(self, version: ModelVersion) -> None:
        key = (version.model_id, version.version)
        assert key in self.state.versions
        self.state.versions[key] = copy.deepcopy(version)

    async def list_versions(self, model: RegisteredModel, stage: Stage | None, run_id: str | None,
                            tags: Sequence[tuple[str, str]], after: int,
                            limit: int) -> list[ModelVersion]:
        found = [v for (m, n), v in sorted(self.state.versions.items())
                 if m == model.id and n > after and (stage is None or v.stage is stage)
                 and (run_id is None or v.run_id == run_id)
                 and all(v.tags.get(k) == value for k, value in tags)]
        return copy.deepcopy(found[:limit])

    async def versions_in_stage_by_name(self, name: str, stage: Stage) -> list[ModelVersion] | None:
        model = await self.get_model(name)
        return None if model is None else await self.versions_in_stage(model, stage)

    async def versions_in_stage(self, model: RegisteredModel, stage: Stage) -> list[ModelVersion]:
        return copy.deepcopy([v for (m, _), v in sorted(self.state.versions.items())
                              if m == model.id and v.stage is stage])

    async def rollback_candidate(self, model: RegisteredModel) -> int | None:
        left = [v for (m, _), v in self.state.versions.items() if m == model.id and v.is_rollback_target]
        return max(left, key=lambda v: v.left_production_seq or 0).version if left else None

    async def get_alias(self, model: RegisteredModel, alias: str) -> AliasRecord | None:
        return self.state.aliases.get((model.id, alias))

    async def alias_by_name(self, name: str, alias: str) -> tuple[AliasRecord, ModelVersion] | tuple[None, None] | None:
        model = await self.get_model(name)
        if model is None:
            return None
        record = await self.get_alias(model, alias)
        if record is None:
            return None, None
        version = await self.get_version(model, record.version)
        assert version is not None
        return record, version

    async def set_alias(self, model: RegisteredModel, alias: str, version: int, protected: bool) -> None:
        self.state.aliases[(model.id, alias)] = AliasRecord(version, protected)

    async def delete_alias(self, model: RegisteredModel, alias: str) -> None:
        del self.state.aliases[(model.id, alias)]

    async def list_aliases(self, model: RegisteredModel, after: str | None,
                           limit: int | None) -> list[tuple[str, AliasRecord]]:
        found = sorted((a, r) for (m, a), r in self.state.aliases.items()
                       if m == model.id and (after is None or a > after))
        return found[:limit]

    # -- checks, policies, transition requests ----------------------------------------------------

    async def add_check(self, model: RegisteredModel, version: int, name: str, status: str,
                        details_url: str | None, summary: str | None, actor: str,
                        now: datetime) -> int:
        check_id = len(self.state.checks) + 1
        self.state.checks.append((model.id, version, CheckRecord(check_id, name, status, details_url,
                                                                  summary, actor, now)))
        return check_id

    async def latest_checks(self, model: RegisteredModel, version: int) -> dict[str, str]:
        return {c.name: c.status for m, v, c in self.state.checks if (m, v) == (model.id, version)}

    async def check_history(self, model: RegisteredModel, version: int) -> list[CheckRecord]:
        mine = [c for m, v, c in self.state.checks if (m, v) == (model.id, version)]
        return sorted(mine, key=lambda c: (c.name, -c.id))

    async def get_policy(self, model: RegisteredModel, stage: Stage) -> PolicyRecord | None:
        return copy.deepcopy(self.state.policies.get((model.id, stage.value)))

    async def policy_rules(self, model: RegisteredModel, stage: Stage) -> dict[str, Any] | None:
        record = await self.get_policy(model, stage)
        return record.rules if record is not None else None

    async def put_policy(self, model: RegisteredModel, stage: Stage, rules: dict[str, Any],
                         actor: str, now: datetime) -> None:
        self.state.policies[(model.id, stage.value)] = PolicyRecord(stage.value, rules, now, actor)

    async def delete_policy(self, model: RegisteredModel, stage: Stage) -> None:
        self.state.policies.pop((model.id, stage.value), None)

    async def add_request(self, model: RegisteredModel, version: int, to_stage: str, actor: Actor,
                          comment: str | None, now: datetime) -> RequestRecord:
        request = RequestRecord(len(self.state.requests) + 1, model.id, model.name, version, to_stage,
                                "pending", actor.name, actor.principal or actor.name, comment, [],
                                now, now)
        self.state.requests[request.id] = copy.deepcopy(request)
        return request

    async def get_request(self, request_id: int) -> RequestRecord | None:
        return copy.deepcopy(self.state.requests.get(request_id))

    async def open_requests(self, model: RegisteredModel, version: int,
                            to_stage: str | None = None) -> list[RequestRecord]:
        return copy.deepcopy([r for _, r in sorted(self.state.requests.items())
                              if (r.model_id, r.version) == (model.id, version) and r.is_open
                              and to_stage in (None, r.to_stage)])

    async def save_request(self, request: RequestRecord) -> None:
        self.state.requests[request.id] = copy.deepcopy(request)

    async def list_requests(self, query: RequestQuery, before: int | None,
                            limit: int) -> list[RequestRecord]:
        found = [r for i, r in sorted(self.state.requests.items(), reverse=True)
                 if (before is None or i < before) and query.model in (None, r.model)
                 and query.state in (None, r.state) and query.requester in (None, r.requester_principal)]
        return copy.deepcopy(found[:limit])

    # -- comments -----------------------------------------------------------------------------------

    async def add_comment(self, model: RegisteredModel, version: int, request_id: int | None,
                          author: str, body: str, now: datetime) -> CommentRecord:
        comment = CommentRecord(len(self.state.comments) + 1, model.name, version, request_id, author,
                                body, now)
        self.state.comments[comment.id] = (model.id, comment)
        return comment

    def _live_comments(self) -> list[tuple[int, CommentRecord]]:
        """(model id, comment) of the live comments, oldest first, named as their model is now."""
        names = {m.id: m.name for m in self.state.models.values()}
        return [(m, replace(c, model=names[m])) for _, (m, c) in sorted(self.state.comments.items())
                if c.deleted_at is None and m in names]

    async def get_comment(self, comment_id: int) -> CommentRecord | None:
        return next((c for _, c in self._live_comments() if c.id == comment_id), None)

    async def update_comment(self, comment_id: int, body: str, now: datetime) -> None:
        model_id, comment = self.state.comments[comment_id]
        self.state.comments[comment_id] = (model_id, replace(comment, body=body, updated_at=now))

    async def delete_comment(self, comment_id: int, now: datetime) -> None:
        model_id, comment = self.state.comments[comment_id]
        self.state.comments[comment_id] = (model_id, replace(comment, deleted_at=now))

    async def version_comments(self, model: RegisteredModel, version: int, after: int | None,
                               limit: int) -> list[CommentRecord]:
        return [c for m, c in self._live_comments()
                if (m, c.version) == (model.id, version) and (after is None or c.id > after)][:limit]

    async def request_comments(self, request_id: int, after: int | None,
                               limit: int) -> list[CommentRecord]:
        return [c for _, c in self._live_comments()
                if c.request_id == request_id and (after is None or c.id > after)][:limit]

    async def list_artifacts(self, version_id: int, after: str | None,
                             limit: int | None) -> list[Artifact]:
        found = [a for p, a in sorted(self.state.artifacts.get(version_id, {}).items())
                 if after is None or p > after]
        return found[:limit] if limit is not None else found

    async def get_artifact(self, version_id: int, path: str) -> Artifact | None:
        return self.state.artifacts.get(version_id, {}).get(path)

    async def put_artifact(self, version_id: int, artifact: Artifact) -> None:
        self.state.artifacts.setdefault(version_id, {})[artifact.path] = artifact

    async def delete_artifact(self, version_id: int, path: str) -> None:
        self.state.artifacts.get(version_id, {}).pop(path, None)

    async def count_artifacts(self, version_id: int) -> int:
        return len(self.state.artifacts.get(version_id, {}))

    async def add_upload(self, version_id: int, path: str, size: int, sha256: str, key: str,
                         actor: str, now: datetime, expires_at: datetime) -> UploadRecord:
        for upload_id, (vid, upload) in list(self.state.uploads.items()):
            if vid == version_id and upload.path == path:
                del self.state.uploads[upload_id]
        record = UploadRecord(self.state.next_upload_id, path, size, sha256, key, actor, now, expires_at)
        self.state.uploads[record.id] = (version_id, record)
        self.state.next_upload_id += 1
        return record

    async def uploads(self, version_id: int) -> list[UploadRecord]:
        return sorted((u for vid, u in self.state.uploads.values() if vid == version_id),
                      key=lambda u: u.path)

    async def delete_upload(self, upload_id: int) -> None:
        self.state.uploads.pop(upload_id, None)


class FakeUnitOfWork:
    """``committed`` and ``recorded`` describe the last unit this object ran; ``store`` keeps
    what every committed unit left behind. One object may run several units in turn."""

    def __init__(self, store: Store | None = None, actor: Actor | None = None) -> None:
        self.store = store or Store()
        self.actor = actor or Actor("alice", "req-1")
        self.committed = False
        self.recorded: list[tuple[int, Change]] = []
        self.recorded_system: list[SystemChange] = []
        self.repo = FakeRepository(State())
        self._now: datetime | None = None
        self.default_policies: dict[Stage, Policy] = self.store.default_policies
        self._after_commit: list[Callable[[], Awaitable[None]]] = []

    async def __aenter__(self) -> FakeUnitOfWork:
        self.committed = False
        self.recorded, self.recorded_system = [], []
        self._now = None
        self._after_commit = []
        self.repo = FakeRepository(copy.deepcopy(self.store.state))
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Whatever did not commit is dropped with the working copy.
        self.repo = FakeRepository(copy.deepcopy(self.store.state))
        hooks, self._after_commit = self._after_commit, []
        if self.committed and exc[0] is None:
            for fn in hooks:
                await fn()

    def after_commit(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._after_commit.append(fn)

    def record(self, model: RegisteredModel | int, change: Change) -> None:
        self.recorded.append((model if isinstance(model, int) else model.id, change))

    def record_system(self, change: SystemChange) -> None:
        self.recorded_system.append(change)

    def now(self) -> datetime:
        if self._now is None:
            self._now = self.store.tick()
        return self._now

    def next_sequence(self, model: RegisteredModel) -> int:
        pending = sum(1 for m, _ in self.recorded if m == model.id)
        return self.store.event_seq(model.id) + pending + 1

    async def commit(self) -> None:
        self.store.state = self.repo.state
        for model_id, change in self.recorded:
            self.store.changes.append((model_id, self.store.event_seq(model_id) + 1, change))
        self.store.system_changes.extend(self.recorded_system)
        self.committed = True

    # -- for assertions -------------------------------------------------------------------------

    def changes(self) -> list[Change]:
        """The changes the last unit recorded, committed or not."""
        return [change for _, change in self.recorded]
