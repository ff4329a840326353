"""services/artifacts.py against the in-memory unit of work (tests/unit/fakes.py) and an in-memory
artifact store written here, which logs every call it gets. The fake unit of work logs its
commits into the same log, so a test can say what happened before or after the commit.

What is checked: an upload gets a key of its own, is published before its row names it, and the
key a replaced file had is deleted only once the commit no longer names it; a digest mismatch
discards what was staged; any failure after publishing deletes the published key; sealing copies
each presigned upload to a key of its own and hashes THE COPY (bytes PUT again through the
still-valid URL after the copy never get sealed); any bad upload refuses the seal and deletes
every copy it made."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from registry.domain.artifacts import Manifest
from registry.domain.errors import (
    DigestMismatchError,
    SealedError,
    UnavailableError,
    UploadsUnsettledError,
)
from registry.domain.events import (
    ArtifactDeleted,
    ArtifactsSealed,
    ArtifactUploaded,
    RequestApproved,
    StageChanged,
)
from registry.domain.permissions import Role
from registry.domain.stages import Stage
from registry.services.approvals import decide, request_transition
from registry.services.artifacts import (
    RequestUpload,
    UploadArtifact,
    delete_artifact,
    request_upload,
    seal_version,
    upload_artifact,
)
from registry.services.commands import (
    CreateModel,
    DecideRequest,
    RegisterModelVersion,
    RequestTransition,
    SetPolicy,
    TransitionModelVersion,
)
from registry.services.models import create_model
from registry.services.policies import set_policy
from registry.services.ports import Actor, Staged, Written
from registry.services.transitions import transition_model_version
from registry.services.versions import register_model_version
from tests.unit.fakes import FakeUnitOfWork, Store

NAME = "fraud"
LIMIT = 1024 * 1024
TTL = 3600.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class MemoryStore:
    """An ArtifactStore in memory. ``log`` gets (operation, key) for every call that changes
    something; ``after_read`` runs after every read of an object (copy or digest) with its key."""

    log: list[tuple[str, str]]
    objects: dict[str, bytes] = field(default_factory=dict)
    staged: dict[int, bytes] = field(default_factory=dict)
    after_read: Callable[[str], None] | None = None
    fail_publish: bool = False
    location: str = "memory://"

    def _read(self, key: str) -> bytes | None:
        data = self.objects.get(key)
        if self.after_read is not None:
            self.after_read(key)
        return data

    async def stage(self, key: str, body: AsyncIterator[bytes], length: int | None) -> Staged:
        data = b"".join([chunk async for chunk in body])
        token = len(self.staged) + 1
        self.staged[token] = data
        self.log.append(("stage", key))
        return Staged(key, Written(len(data), sha(data)), token)

    async def publish(self, staged: Staged) -> None:
        if self.fail_publish:
            raise OSError("the store broke while publishing")
        self.objects[staged.key] = self.staged.pop(staged.token)
        self.log.append(("publish", staged.key))

    async def discard(self, staged: Staged) -> None:
        self.staged.pop(staged.token, None)
        self.log.append(("discard", staged.key))

    async def copy(self, source: str, target: str) -> bool:
        data = self._read(source)
        if data is None:
            return False
        self.objects[target] = data
        self.log.append(("copy", target))
        return True

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)
        self.log.append(("delete", key))

    async def digest(self, key: str) -> Written | None:
        data = self._read(key)
        return None if data is None else Written(len(data), sha(data))

    async def read(self, key: str) -> AsyncIterator[bytes]:
        yield self.objects[key]

    def download_url(self, key: str, filename: str) -> str | None:
        return None

    def upload_url(self, key: str, ttl: float) -> str | None:
        return f"memory://{key}?ttl={ttl}"

    async def problem(self) -> str | None:
        return None

    async def close(self) -> None:
        pass

    def files(self) -> dict[str, bytes]:
        """Published objects other than presigned uploads' temporary ones."""
        return {k: v for k, v in self.objects.items() if not k.startswith(".uploads/")}


class LoggedUnitOfWork(FakeUnitOfWork):
    def __init__(self, store: Store, log: list[tuple[str, str]], *, fail_commit: bool = False,
                 before_commit: Callable[[], None] | None = None) -> None:
        super().__init__(store)
        self.log, self.fail_commit, self.before_commit = log, fail_commit, before_commit

    async def commit(self) -> None:
        if self.before_commit is not None:
            self.before_commit()
        if self.fail_commit:
            raise RuntimeError("the database went away at commit")
        await super().commit()
        self.log.append(("commit", ""))


@dataclass
class World:
    store: Store
    log: list[tuple[str, str]]
    files: MemoryStore
    setup_changes: int = 0  # creating the model and its version

    def uow(self, **kw: Any) -> LoggedUnitOfWork:
        return LoggedUnitOfWork(self.store, self.log, **kw)

    def version_id(self, number: int = 1) -> int:
        model = self.store.state.models[NAME]
        vid = self.store.state.versions[(model.id, number)].id
        assert vid is not None
        return vid

    def rows(self, number: int = 1) -> dict[str, Any]:
        return dict(self.store.state.artifacts.get(self.version_id(number), {}))

    def changes(self) -> list[Any]:
        """The changes committed since the model and its version were made."""
        return [c for _, _, c in self.store.changes[self.setup_changes:]]


@pytest.fixture
async def world() -> World:
    store, log = Store(), []
    await create_model(CreateModel(NAME), FakeUnitOfWork(store))
    await register_model_version(RegisterModelVersion(NAME, source="s3://m/1"), FakeUnitOfWork(store))
    return World(store, log, MemoryStore(log), len(store.changes))


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def upload(w: World, path: str, data: bytes, *, declared: str | None = None,
                 **uow_kw: Any) -> tuple[Any, bool]:
    return await upload_artifact(UploadArtifact(NAME, 1, path, declared, len(data)),
                                 chunks(data[:2], data[2:]), w.files, w.uow(), w.uow(**uow_kw), LIMIT)


def key_shape(key: str, path: str) -> bool:
    model_id, version, write_id, rest = key.split("/", 3)
    return (model_id, version, rest) == ("1", "1", path) and len(write_id) == 32 and \
        all(c in "0123456789abcdef" for c in write_id)


# -- PUT ----------------------------------------------------------------------------------------


async def test_an_upload_is_published_at_a_key_of_its_own_before_its_row_commits(world: World) -> None:
    artifact, new = await upload(world, "dir/model.bin", b"weights v1", declared=sha(b"weights v1"))

    assert new and (artifact.path, artifact.size, artifact.sha256) == (
        "dir/model.bin", 10, sha(b"weights v1"))
    assert key_shape(artifact.key, "dir/model.bin"), artifact.key
    assert world.rows() == {"dir/model.bin": artifact}
    assert world.files.files() == {artifact.key: b"weights v1"}
    assert world.log == [("stage", artifact.key), ("publish", artifact.key), ("commit", "")]
    [change] = world.changes()
    assert isinstance(change, ArtifactUploaded) and change.before is None
    assert change.after == {"path": "dir/model.bin", "size": 10, "sha256": sha(b"weights v1")}


async def test_replacing_a_file_deletes_its_old_key_only_after_the_commit(world: World) -> None:
    first, _ = await upload(world, "m.bin", b"old bytes")
    world.log.clear()

    second, new = await upload(world, "m.bin", b"new bytes!")

    assert not new and second.key != first.key and key_shape(second.key, "m.bin")
    assert world.log == [("stage", second.key), ("publish", second.key), ("commit", ""),
                         ("delete", first.key)]
    assert world.files.files() == {second.key: b"new bytes!"}
    assert world.rows() == {"m.bin": second}
    assert world.changes()[-1].before == {"path": "m.bin", "size": 9, "sha256": sha(b"old bytes")}


async def test_a_failed_commit_keeps_the_replaced_key_and_deletes_the_new_one(world: World) -> None:
    first, _ = await upload(world, "m.bin", b"old bytes")
    world.log.clear()

    with pytest.raises(RuntimeError, match="commit"):
        await upload(world, "m.bin", b"new bytes!", fail_commit=True)

    [(_, new_key)] = [entry for entry in world.log if entry[0] == "publish"]
    assert world.log == [("stage", new_key), ("publish", new_key), ("delete", new_key)]
    assert world.files.files() == {first.key: b"old bytes"}, "the listed file lost its bytes"
    assert world.rows() == {"m.bin": first}


async def test_a_digest_mismatch_discards_what_was_staged(world: World) -> None:
    with pytest.raises(DigestMismatchError) as caught:
        await upload(world, "m.bin", b"what came", declared=sha(b"what was promised"))

    assert (caught.value.expected, caught.value.actual) == (sha(b"what was promised"), sha(b"what came"))
    [(_, key)] = [entry for entry in world.log if entry[0] == "stage"]
    assert world.log == [("stage", key), ("discard", key)]
    assert world.files.objects == {} and world.files.staged == {}
    assert world.rows() == {} and world.changes() == []


async def test_a_failing_publish_discards_and_records_nothing(world: World) -> None:
    world.files.fail_publish = True
    with pytest.raises(OSError, match="publishing"):
        await upload(world, "m.bin", b"bytes")
    assert [op for op, _ in world.log] == ["stage", "discard"]
    assert world.files.objects == {} and world.files.staged == {} and world.rows() == {}


async def test_a_version_sealed_during_the_upload_deletes_the_published_key(world: World) -> None:
    """The first check passed; the seal came while the bytes were on their way: the unit of work
    that would record the row refuses, and the published key (named by no row) is deleted."""
    async def sealed_on_the_way() -> AsyncIterator[bytes]:
        yield b"late "
        await seal_version(NAME, 1, world.files, FakeUnitOfWork(world.store), FakeUnitOfWork(world.store))
        yield b"bytes"

    with pytest.raises(SealedError):
        await upload_artifact(UploadArtifact(NAME, 1, "m.bin"), sealed_on_the_way(), world.files,
                              world.uow(), world.uow(), LIMIT)

    [(_, key)] = [entry for entry in world.log if entry[0] == "publish"]
    assert world.log[-1] == ("delete", key)
    assert world.files.objects == {} and world.rows() == {}
    assert [type(c) for c in world.changes()] == [ArtifactsSealed]


async def test_delete_removes_the_row_then_after_the_commit_its_key(world: World) -> None:
    artifact, _ = await upload(world, "m.bin", b"bytes")
    world.log.clear()

    await delete_artifact(NAME, 1, "m.bin", world.files, world.uow())

    assert world.log == [("commit", ""), ("delete", artifact.key)]
    assert world.files.objects == {} and world.rows() == {}
    assert isinstance(world.changes()[-1], ArtifactDeleted)


# -- presigned uploads and POST seal ------------------------------------------------------------


async def ticket(w: World, path: str, data: bytes, *, size: int | None = None,
                 declared: str | None = None) -> str:
    """Request a presigned upload for ``path``; returns the temporary key it hands out."""
    await request_upload(RequestUpload(NAME, 1, path, len(data) if size is None else size,
                                       declared or sha(data)), w.files, w.uow(), TTL, LIMIT)
    [key] = [u.key for _, u in w.store.state.uploads.values() if u.path == path]
    assert key.startswith(".uploads/")
    return key


async def test_seal_keeps_copies_of_good_uploads_and_deletes_the_temporaries_after_commit(
    world: World,
) -> None:
    replaced, _ = await upload(world, "a.bin", b"replaced by the upload")
    temp_a, temp_b = await ticket(world, "a.bin", b"aaa"), await ticket(world, "b/b.bin", b"")
    world.files.objects[temp_a], world.files.objects[temp_b] = b"aaa", b""
    world.log.clear()

    sealed = await seal_version(NAME, 1, world.files, world.uow(), world.uow())

    rows = world.rows()
    assert {p: (a.size, a.sha256) for p, a in rows.items()} == {"a.bin": (3, sha(b"aaa")),
                                                                "b/b.bin": (0, sha(b""))}
    assert key_shape(rows["a.bin"].key, "a.bin") and key_shape(rows["b/b.bin"].key, "b/b.bin")
    assert world.files.objects == {rows["a.bin"].key: b"aaa", rows["b/b.bin"].key: b""}
    commit = world.log.index(("commit", ""))
    assert {k for op, k in world.log[:commit]} == {rows["a.bin"].key, rows["b/b.bin"].key}
    assert sorted(world.log[commit + 1:]) == sorted(
        [("delete", temp_a), ("delete", temp_b), ("delete", replaced.key)])
    assert sealed.manifest == Manifest.of(list(rows.values()))
    assert world.store.state.uploads == {}
    assert world.store.state.versions[(1, 1)].manifest_digest == sealed.manifest.digest


async def test_seal_hashes_the_copy_not_the_temporary_object_put_again_later(world: World) -> None:
    """The presigned URL still works after sealing read the temporary object: a client PUTting
    other bytes at that moment must not get them sealed under the digest of the first ones."""
    temp = await ticket(world, "m.bin", b"checked bytes")
    world.files.objects[temp] = b"checked bytes"
    reads: list[str] = []

    def put_again(key: str) -> None:
        reads.append(key)
        if key == temp:
            world.files.objects[temp] = b"SWAPPED bytes"
    world.files.after_read = put_again

    await seal_version(NAME, 1, world.files, world.uow(), world.uow())

    [row] = world.rows().values()
    assert reads[0] == temp and reads.count(temp) == 1, "the temporary object was read twice"
    assert row.sha256 == sha(b"checked bytes")
    assert world.files.objects == {row.key: b"checked bytes"}, "what is kept is not what was checked"


async def test_an_upload_put_again_before_sealing_with_other_bytes_refuses_the_seal(world: World) -> None:
    temp = await ticket(world, "m.bin", b"declared")
    world.files.objects[temp] = b"declareD"
    with pytest.raises(UploadsUnsettledError) as caught:
        await seal_version(NAME, 1, world.files, world.uow(), world.uow())
    assert caught.value.uploads == [
        {"path": "m.bin", "problem": f"sha256 {sha(b'declareD')} uploaded, {sha(b'declared')} declared"}]


async def test_any_bad_upload_refuses_the_seal_and_deletes_every_copy(world: World) -> None:
    kept, _ = await upload(world, "kept.bin", b"already here")
    good, short = await ticket(world, "good.bin", b"good"), await ticket(world, "short.bin", b"12345")
    await ticket(world, "missing.bin", b"never sent")
    world.files.objects[good], world.files.objects[short] = b"good", b"1234"
    before = (dict(world.store.state.uploads), world.rows(), len(world.store.changes))
    world.log.clear()

    with pytest.raises(UploadsUnsettledError) as caught:
        await seal_version(NAME, 1, world.files, world.uow(), world.uow())

    assert sorted(caught.value.uploads, key=lambda u: u["path"]) == [
        {"path": "missing.bin", "problem": "not uploaded yet"},
        {"path": "short.bin", "problem": "4 bytes uploaded, 5 declared"}]
    copies = [k for op, k in world.log if op == "copy"]
    assert len(copies) == 2 and all(("delete", k) in world.log for k in copies)
    assert ("commit", "") not in world.log
    # Nothing changed: the uploads are still open, the temporary objects and the file kept.
    assert world.files.objects == {kept.key: b"already here", good: b"good", short: b"1234"}
    assert (dict(world.store.state.uploads), world.rows(), len(world.store.changes)) == before
    assert world.store.state.versions[(1, 1)].sealed_at is None


async def test_a_failed_seal_commit_deletes_every_copy_and_keeps_the_temporaries(world: World) -> None:
    temp = await ticket(world, "m.bin", b"fine")
    world.files.objects[temp] = b"fine"
    world.log.clear()

    with pytest.raises(RuntimeError, match="commit"):
        await seal_version(NAME, 1, world.files, world.uow(), world.uow(fail_commit=True))

    [copy] = [k for op, k in world.log if op == "copy"]
    assert world.log[-1] == ("delete", copy)
    assert world.files.objects == {temp: b"fine"}
    assert world.rows() == {} and world.store.state.versions[(1, 1)].sealed_at is None


# -- cleanup after the commit -------------------------------------------------------------------


class BrokenAfterCommit(MemoryStore):
    """Deleting fails (S3 went away) — only a problem once the change has committed."""

    async def delete(self, key: str) -> None:
        if ("commit", "") in self.log:
            self.log.append(("delete failed", key))
            raise UnavailableError("the artifact store failed: connection refused")
        await super().delete(key)


@pytest.mark.parametrize("operation", ["replace", "delete", "seal"])
async def test_a_failing_cleanup_after_the_commit_does_not_fail_the_committed_change(
    world: World, operation: str,
) -> None:
    await upload(world, "m.bin", b"old bytes")
    if operation == "seal":
        temp = await ticket(world, "m.bin", b"new")
        world.files.objects[temp] = b"new"
    broken = BrokenAfterCommit(world.log, dict(world.files.objects))
    world.files = broken
    world.log.clear()

    if operation == "replace":
        await upload(world, "m.bin", b"new")
    elif operation == "delete":
        await delete_artifact(NAME, 1, "m.bin", broken, world.uow())
    else:
        await seal_version(NAME, 1, broken, world.uow(), world.uow())

    assert ("commit", "") in world.log and world.log[-1][0] == "delete failed"


# -- tickets that expired unused, archiving, approvals while uploads are open -------------------

EMPTY = Manifest.of([]).digest
CI = Actor("ci-token", "req-ci", Role.EDITOR, principal="ci")
ANN = Actor("ann-token", "req-ann", Role.RELEASER, principal="ann")


def expire_tickets(w: World) -> None:
    """Let every ticket handed out so far expire (the fake's clock moves a second per unit)."""
    w.store.clock += timedelta(seconds=TTL)


def sealed_entries(w: World) -> list[dict[str, Any]]:
    return [c.after for c in w.changes() if isinstance(c, ArtifactsSealed)]


def version(w: World) -> Any:
    return w.store.state.versions[(1, 1)]


async def test_seal_drops_tickets_that_expired_unused_and_names_them(world: World) -> None:
    late = await ticket(world, "late.bin", b"never sent")
    expire_tickets(world)
    temp = await ticket(world, "a.bin", b"aaa")  # asked for after the first one expired
    world.files.objects[temp] = b"aaa"
    world.log.clear()

    sealed = await seal_version(NAME, 1, world.files, world.uow(), world.uow())

    assert sealed.dropped == ["late.bin"]
    assert [f["path"] for f in sealed.manifest.files] == ["a.bin"]
    assert list(world.rows()) == ["a.bin"] and world.store.state.uploads == {}
    [after] = sealed_entries(world)
    assert after["dropped_uploads"] == ["late.bin"]
    assert {k: after[k] for k in ("files", "digest")} == sealed.manifest.to_dict()
    # Both tickets' temporary keys go, after the commit.
    commit = world.log.index(("commit", ""))
    assert sorted(k for op, k in world.log[commit + 1:] if op == "delete") == sorted([late, temp])
    assert all(op != "delete" for op, _ in world.log[:commit])


async def test_an_expired_ticket_whose_bytes_arrived_in_time_is_sealed_not_dropped(world: World) -> None:
    temp = await ticket(world, "m.bin", b"sent in time")
    world.files.objects[temp] = b"sent in time"
    expire_tickets(world)

    sealed = await seal_version(NAME, 1, world.files, world.uow(), world.uow())

    assert sealed.dropped == [] and [f["path"] for f in sealed.manifest.files] == ["m.bin"]
    [after] = sealed_entries(world)
    assert "dropped_uploads" not in after


async def test_an_open_ticket_is_neither_dropped_nor_sealed_over(world: World) -> None:
    await ticket(world, "open.bin", b"on its way")
    with pytest.raises(UploadsUnsettledError) as caught:
        await seal_version(NAME, 1, world.files, world.uow(), world.uow())
    assert caught.value.uploads == [{"path": "open.bin", "problem": "not uploaded yet"}]
    assert [u.path for _, u in world.store.state.uploads.values()] == ["open.bin"]
    assert version(world).sealed_at is None and sealed_entries(world) == []


async def test_submitting_drops_expired_tickets_and_announces_the_seal(world: World) -> None:
    """A move out of none that seals no file writes no artifacts_sealed entry of its own, unless
    it dropped tickets: then the entry names them."""
    await ticket(world, "late.bin", b"never sent")
    expire_tickets(world)

    await transition_model_version(TransitionModelVersion(NAME, 1, "staging"), world.uow())

    assert version(world).stage is Stage.STAGING and version(world).manifest_digest == EMPTY
    assert world.store.state.uploads == {}
    [after] = sealed_entries(world)
    assert after["dropped_uploads"] == ["late.bin"] and after["files"] == []
    [moved] = [c for c in world.changes() if isinstance(c, StageChanged)]
    assert moved.after["artifacts"] == {"files": [], "digest": EMPTY}


async def test_submitting_with_an_open_ticket_is_refused(world: World) -> None:
    await ticket(world, "open.bin", b"on its way")
    with pytest.raises(UploadsUnsettledError):
        await transition_model_version(TransitionModelVersion(NAME, 1, "staging"), world.uow())
    assert version(world).stage is Stage.NONE and version(world).sealed_at is None
    assert len(world.store.state.uploads) == 1 and sealed_entries(world) == []


async def test_archiving_out_of_none_drops_open_tickets(world: World) -> None:
    kept, _ = await upload(world, "kept.bin", b"kept")
    await ticket(world, "open.bin", b"on its way")
    await ticket(world, "other/open.bin", b"also on its way")

    await transition_model_version(TransitionModelVersion(NAME, 1, "archived"), world.uow())

    assert version(world).stage is Stage.ARCHIVED and version(world).sealed_at is not None
    assert world.store.state.uploads == {}
    [after] = sealed_entries(world)
    assert after["dropped_uploads"] == ["open.bin", "other/open.bin"]
    assert after["files"] == [kept.entry()]
    assert version(world).manifest_digest == after["digest"]
    [moved] = [c for c in world.changes() if isinstance(c, StageChanged)]
    assert moved.after["trigger"] == "archive" and moved.after["artifacts"]["digest"] == after["digest"]


async def test_archiving_with_nothing_to_drop_announces_no_empty_seal(world: World) -> None:
    await transition_model_version(TransitionModelVersion(NAME, 1, "archived"), world.uow())
    assert version(world).manifest_digest == EMPTY and sealed_entries(world) == []


async def approved_with_an_open_ticket(w: World) -> tuple[int, str]:
    """Staging needs one approval; CI asks to submit version 1, a ticket is open on it, and ANN's
    approval completes the quorum. Returns the request id and the ticket's temporary key."""
    await set_policy(SetPolicy(NAME, "staging", {"required_approvals": 1}), FakeUnitOfWork(w.store))
    request = await request_transition(RequestTransition(NAME, 1, "staging", "ship"),
                                       FakeUnitOfWork(w.store, CI))
    temp = await ticket(w, "m.bin", b"weights")
    approving = FakeUnitOfWork(w.store, ANN)

    decision = await decide(DecideRequest(request.id, "approve"), approving)

    assert approving.committed, "the approval was not recorded"
    assert not decision.applied and decision.request.state == "approved"
    assert w.store.state.requests[request.id].state == "approved"
    assert version(w).stage is Stage.NONE and version(w).sealed_at is None
    assert [type(c) for c in approving.changes()] == [RequestApproved]
    assert [u.path for _, u in w.store.state.uploads.values()] == ["m.bin"]
    return request.id, temp


async def test_an_approval_with_uploads_open_stands_and_applies_once_they_are_sealed(
    world: World,
) -> None:
    request_id, temp = await approved_with_an_open_ticket(world)
    world.files.objects[temp] = b"weights"
    sealed = await seal_version(NAME, 1, world.files, world.uow(), world.uow())

    result = await transition_model_version(TransitionModelVersion(NAME, 1, "staging"),
                                            FakeUnitOfWork(world.store, CI))

    assert result.version.stage is Stage.STAGING and result.transition.request == request_id
    assert world.store.state.requests[request_id].state == "applied"
    [moved] = [c for c in world.changes() if isinstance(c, StageChanged)]
    assert moved.after["artifacts"] == {"digest": sealed.manifest.digest}
    assert [f["path"] for f in sealed.manifest.files] == ["m.bin"]


async def test_an_approval_with_uploads_open_applies_once_they_expired(world: World) -> None:
    request_id, _ = await approved_with_an_open_ticket(world)
    expire_tickets(world)

    result = await transition_model_version(TransitionModelVersion(NAME, 1, "staging"),
                                            FakeUnitOfWork(world.store, CI))

    assert result.version.stage is Stage.STAGING
    assert world.store.state.requests[request_id].state == "applied"
    [after] = sealed_entries(world)
    assert after["dropped_uploads"] == ["m.bin"] and after["files"] == []
    assert world.store.state.uploads == {}


async def test_an_approval_applies_at_once_when_the_only_ticket_expired(world: World) -> None:
    await set_policy(SetPolicy(NAME, "staging", {"required_approvals": 1}), FakeUnitOfWork(world.store))
    request = await request_transition(RequestTransition(NAME, 1, "staging", "ship"),
                                       FakeUnitOfWork(world.store, CI))
    await ticket(world, "late.bin", b"never sent")
    expire_tickets(world)

    decision = await decide(DecideRequest(request.id, "approve"), FakeUnitOfWork(world.store, ANN))

    assert decision.applied and version(world).stage is Stage.STAGING
    [after] = sealed_entries(world)
    assert after["dropped_uploads"] == ["late.bin"]


# -- cleanups run only after a commit, and a failure after it takes nothing a row names ----------


async def test_a_new_ticket_for_a_path_deletes_the_old_tickets_object_after_the_commit(
    world: World,
) -> None:
    old = await ticket(world, "m.bin", b"first try")
    world.files.objects[old] = b"first try"
    world.log.clear()

    new = await ticket(world, "m.bin", b"second try")

    assert new != old
    assert world.log == [("commit", ""), ("delete", old)]
    assert world.files.objects == {}


async def test_a_new_ticket_whose_commit_fails_deletes_nothing(world: World) -> None:
    old = await ticket(world, "m.bin", b"first try")
    world.files.objects[old] = b"first try"
    world.log.clear()

    with pytest.raises(RuntimeError, match="commit"):
        await request_upload(RequestUpload(NAME, 1, "m.bin", 3, sha(b"new")), world.files,
                             world.uow(fail_commit=True), TTL, LIMIT)

    assert world.log == [] and world.files.objects == {old: b"first try"}
    assert [u.key for _, u in world.store.state.uploads.values()] == [old]


class CancelledAfterCommit(MemoryStore):
    """The request is cancelled (the client left, shutdown) while the first post-commit cleanup
    runs; later deletes work (so a wrong one would really remove bytes)."""

    async def delete(self, key: str) -> None:
        if ("commit", "") in self.log and not any(op == "delete cancelled" for op, _ in self.log):
            self.log.append(("delete cancelled", key))
            raise asyncio.CancelledError
        await super().delete(key)


@pytest.mark.parametrize("operation", ["replace", "seal"])
async def test_a_cancelled_cleanup_after_the_commit_keeps_the_bytes_the_rows_name(
    world: World, operation: str,
) -> None:
    """Cancellation is no Exception: it leaves through the service's failure path, which must
    see that the commit happened and leave the new key (named by the committed row) alone."""
    await upload(world, "m.bin", b"old bytes")
    if operation == "seal":
        temp = await ticket(world, "m.bin", b"new")
        world.files.objects[temp] = b"new"
    world.files = CancelledAfterCommit(world.log, dict(world.files.objects))
    world.log.clear()

    with pytest.raises(asyncio.CancelledError):
        if operation == "replace":
            await upload(world, "m.bin", b"new")
        else:
            await seal_version(NAME, 1, world.files, world.uow(), world.uow())

    [row] = world.rows().values()
    assert row.sha256 == sha(b"new")
    assert world.files.objects.get(row.key) == b"new", "the committed row's bytes were deleted"
    assert ("delete cancelled", row.key) not in world.log and ("delete", row.key) not in world.log
