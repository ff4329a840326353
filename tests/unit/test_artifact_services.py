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

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from registry.domain.artifacts import Manifest
from registry.domain.errors import (
    DigestMismatchError,
    SealedError,
    UnavailableError,
    UploadsUnsettledError,
)
from registry.domain.events import ArtifactDeleted, ArtifactsSealed, ArtifactUploaded
from registry.services.artifacts import (
    RequestUpload,
    UploadArtifact,
    delete_artifact,
    request_upload,
    seal_version,
    upload_artifact,
)
from registry.services.commands import CreateModel, RegisterModelVersion
from registry.services.models import create_model
from registry.services.ports import Staged, Written
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
