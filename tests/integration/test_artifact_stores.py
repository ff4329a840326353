"""The two artifact stores against real storage: a folder on disk, and moto's S3 server on loopback
with SigV4 signature checking on (tests/s3_support.py). Each test looks at what the store left
behind directly (the folder's files; the bucket and its multipart uploads through a minio client of
its own), not only through the store's answers.

An upload is staged (received and hashed where no reader sees it: a file under ``.uploads/``, a
body in memory, an incomplete multipart upload), then published at its key or discarded."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from minio.error import InvalidResponseError, S3Error, ServerError

from registry.adapters.artifacts.local import LocalStore
from registry.adapters.artifacts.s3 import S3Location, S3Store
from registry.api.errors import status_of
from registry.bootstrap import artifact_store
from registry.config import Settings
from registry.domain.errors import NotFoundError, UnavailableError
from registry.services.ports import Staged, Written
from tests.s3_support import S3Server, s3_server, signatures_unchecked

MiB = 1024 * 1024
PREFIX = "reg/"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as srv:
        yield srv


@dataclass
class Target:
    """A store, and a way to see what it really holds."""

    kind: str  # local, s3
    store: LocalStore | S3Store
    root: Path | None = None
    s3: S3Server | None = None
    bucket: str | None = None

    def objects(self) -> dict[str, bytes]:
        """Every object as stored: {full key (S3: with the prefix) or path under the root: bytes}."""
        if self.root is not None:
            return {p.relative_to(self.root).as_posix(): p.read_bytes()
                    for p in self.root.rglob("*") if p.is_file()}
        assert self.s3 is not None and self.bucket is not None
        client = self.s3.client()
        found = {}
        for obj in client.list_objects(bucket_name=self.bucket, recursive=True):
            response = client.get_object(bucket_name=self.bucket, object_name=obj.object_name)
            try:
                found[obj.object_name] = response.read()
            finally:
                response.close()
                response.release_conn()
        return found

    def stored_key(self, key: str) -> str:
        return PREFIX + key if self.kind == "s3" else key

    def pending_uploads(self) -> list[str]:
        """Multipart uploads started and neither completed nor aborted (S3 only)."""
        if self.s3 is None:
            return []
        assert self.bucket is not None
        result = self.s3.client()._list_multipart_uploads(bucket_name=self.bucket)
        return [u.object_name for u in result.uploads]


def s3_store(srv: S3Server, bucket: str, *, secret_key: str | None = None,
             public_endpoint: str | None = None) -> S3Store:
    return S3Store(S3Location(endpoint=srv.endpoint, bucket=bucket, prefix=PREFIX,
                              access_key=srv.access_key, secret_key=secret_key or srv.secret_key,
                              region=srv.region, public_endpoint=public_endpoint), threads=4)


@pytest.fixture(params=["local", "s3"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "local":
        root = tmp_path / "artifacts"
        t = Target("local", LocalStore(root, threads=4), root=root)
    else:
        srv: S3Server = request.getfixturevalue("s3")
        bucket = srv.make_bucket("store")
        t = Target("s3", s3_store(srv, bucket), s3=srv, bucket=bucket)
    yield t
    await t.store.close()


async def body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def blocks(count: int, seed: int = 6) -> Iterator[bytes]:
    """``count`` pseudo-random 1 MiB blocks, made one at a time."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randbytes(MiB)


async def generated(count: int, *, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, block in enumerate(blocks(count)):
        if i == fail_after:
            raise ConnectionResetError("the client went away")
        yield block


def written_of(data: bytes) -> Written:
    return Written(len(data), hashlib.sha256(data).hexdigest())


async def read_all(store: LocalStore | S3Store, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


async def put(store: LocalStore | S3Store, key: str, data: bytes) -> Written:
    """Stage and publish ``data`` at ``key`` (what an upload whose digest matched does)."""
    staged = await store.stage(key, body(data), len(data))
    await store.publish(staged)
    return staged.written


# -- stage, publish, discard ----------------------------------------------------------------


def staged_files(t: Target) -> dict[str, bytes]:
    """What staging keeps where no reader looks (the local store's ``.uploads/``)."""
    return {k: v for k, v in t.objects().items() if k.startswith(".uploads/")}


@pytest.mark.parametrize("known_length", [True, False], ids=["length", "no-length"])
async def test_small_and_empty_bodies_are_published_exactly(target: Target, known_length: bool) -> None:
    files = {"7/1/model.onnx": b"hello, ", "7/1/weights/part-0001.bin": b"\x00\xffworld" * 100,
             "7/1/empty.txt": b""}
    staged: list[Staged] = []
    for key, data in files.items():
        chunks = [data[:3], b"", data[3:]] if data else []  # an empty chunk on the way is no end
        staged.append(await target.store.stage(key, body(*chunks), len(data) if known_length else None))
        assert (staged[-1].key, staged[-1].written) == (key, written_of(data))

    # Received, not yet visible at the keys: a temporary file each on disk, nothing in the bucket.
    assert sorted(staged_files(target).values()) == (sorted(files.values()) if target.kind == "local" else [])
    assert target.objects() == staged_files(target) and target.pending_uploads() == []
    for key in files:
        assert await target.store.digest(key) is None

    for s in staged:
        await target.store.publish(s)

    assert target.objects() == {target.stored_key(k): v for k, v in files.items()}
    for key, data in files.items():
        assert await read_all(target.store, key) == data
        assert await target.store.digest(key) == written_of(data)
    assert target.pending_uploads() == []


async def test_a_multipart_sized_body_is_staged_then_published_exactly(target: Target) -> None:
    """40 MiB: on S3 three parts of an incomplete multipart upload until published, then one object;
    streamed through without holding the body."""
    expected = hashlib.sha256()
    for block in blocks(40):
        expected.update(block)

    staged = await target.store.stage("7/2/big.bin", generated(40), 40 * MiB)

    assert staged.written == Written(40 * MiB, expected.hexdigest())
    assert await target.store.digest("7/2/big.bin") is None, "visible before it was published"
    if target.kind == "s3":
        assert target.objects() == {} and target.pending_uploads() == ["reg/7/2/big.bin"]
    else:
        [(_, data)] = staged_files(target).items()
        assert written_of(data) == staged.written

    await target.store.publish(staged)

    assert await target.store.digest("7/2/big.bin") == staged.written
    sha, size, largest = hashlib.sha256(), 0, 0
    async for chunk in target.store.read("7/2/big.bin"):
        sha.update(chunk)
        size += len(chunk)
        largest = max(largest, len(chunk))
    assert Written(size, sha.hexdigest()) == staged.written
    assert largest <= MiB, "read() streams in blocks"
    assert target.pending_uploads() == []
    if target.kind == "s3":
        assert target.s3 is not None and target.bucket is not None
        [obj] = target.s3.client().list_objects(bucket_name=target.bucket, recursive=True)
        assert obj.object_name == "reg/7/2/big.bin" and obj.size == 40 * MiB
        # A multipart ETag ("<md5 of the part md5s>-<parts>") shows it went up in parts.
        assert (obj.etag or "").strip('"').endswith("-3"), obj.etag
    else:
        assert target.root is not None
        assert [p.relative_to(target.root).as_posix() for p in target.root.rglob("*") if p.is_file()] \
            == ["7/2/big.bin"]


async def test_a_discarded_upload_leaves_nothing(target: Target) -> None:
    small = await target.store.stage("7/8/small", body(b"small"), 5)
    big = await target.store.stage("7/8/big", generated(17), None)  # two parts on S3
    assert target.pending_uploads() == (["reg/7/8/big"] if target.kind == "s3" else [])

    await target.store.discard(small)
    await target.store.discard(big)

    assert target.objects() == {} and target.pending_uploads() == []
    assert await target.store.digest("7/8/small") is None and await target.store.digest("7/8/big") is None


@pytest.mark.parametrize("fail_after", [0, 1], ids=["at-once", "after-1MiB"])
async def test_a_body_failing_midway_leaves_nothing(target: Target, fail_after: int) -> None:
    with pytest.raises(ConnectionResetError):
        await target.store.stage("7/3/f", generated(40, fail_after=fail_after), 40 * MiB)

    assert target.objects() == {}
    assert target.pending_uploads() == []
    assert await target.store.digest("7/3/f") is None


async def test_an_s3_upload_failing_after_a_part_went_up_is_aborted(s3: S3Server) -> None:
    """The body breaks only once the first 16 MiB part is in the bucket's multipart upload (an
    error queued right behind the data would surface before any part is sent)."""
    bucket = s3.make_bucket("abort")
    client = s3.client()
    store = s3_store(s3, bucket)

    def parts_sent() -> int:
        uploads = client._list_multipart_uploads(bucket_name=bucket).uploads
        return sum(len(client._list_parts(bucket_name=bucket, object_name=u.object_name,
                                          upload_id=u.upload_id).parts) for u in uploads)

    async def breaks_after_a_part() -> AsyncIterator[bytes]:
        for block in blocks(16):
            yield block
        deadline = asyncio.get_running_loop().time() + 10
        while not await asyncio.to_thread(parts_sent):  # polls moto, no fixed wait
            assert asyncio.get_running_loop().time() < deadline, "no part was ever sent"
            await asyncio.sleep(0.02)
        raise ConnectionResetError("the client went away")

    try:
        with pytest.raises(ConnectionResetError):
            await store.stage("7/3/f", breaks_after_a_part(), 40 * MiB)
    finally:
        await store.close()
    assert client._list_multipart_uploads(bucket_name=bucket).uploads == []
    assert list(client.list_objects(bucket_name=bucket, recursive=True)) == []


async def test_a_failed_upload_can_be_retried_and_a_publish_replaces(target: Target) -> None:
    with pytest.raises(ConnectionResetError):
        await target.store.stage("7/3/f", generated(3, fail_after=2), None)
    assert await put(target.store, "7/3/f", b"second try") == written_of(b"second try")
    assert await put(target.store, "7/3/f", b"third") == written_of(b"third")
    assert target.objects() == {target.stored_key("7/3/f"): b"third"}


async def test_what_stage_reports_is_what_was_stored_even_past_the_length(target: Target) -> None:
    """The HTTP server bounds a body by its Content-Length, but Written must describe the stored
    bytes: a store either refuses such a body (leaving nothing) or says what it kept."""
    try:
        staged = await target.store.stage("7/9/f", body(b"hello", b" world"), 5)
        await target.store.publish(staged)
    except Exception:
        assert target.objects() == {}
    else:
        assert await target.store.digest("7/9/f") == staged.written


# -- copy, delete, digest of nothing ---------------------------------------------------------


async def test_copy_puts_the_bytes_at_the_target_and_keeps_the_source(target: Target) -> None:
    """A presigned upload's object, copied to a key of its own when sealing checks it (the
    presigned URL may still write the source)."""
    await put(target.store, ".uploads/tmp1", b"v1 bytes")
    await put(target.store, "7/4/model.bin", b"old bytes!")  # overwritten by the copy
    await put(target.store, "7/4/other.bin", b"kept")

    assert await target.store.copy(".uploads/tmp1", "7/4/model.bin") is True

    assert target.objects() == {target.stored_key(".uploads/tmp1"): b"v1 bytes",
                                target.stored_key("7/4/model.bin"): b"v1 bytes",
                                target.stored_key("7/4/other.bin"): b"kept"}
    assert await target.store.digest("7/4/model.bin") == written_of(b"v1 bytes")

    # The copy is its own object: what the source becomes later does not reach it.
    await put(target.store, ".uploads/tmp1", b"put again")
    assert await read_all(target.store, "7/4/model.bin") == b"v1 bytes"

    await put(target.store, ".uploads/tmp2", b"nested")
    assert await target.store.copy(".uploads/tmp2", "7/4/deep/er/x.bin") is True  # folders are made
    assert await read_all(target.store, "7/4/deep/er/x.bin") == b"nested"
    assert await read_all(target.store, ".uploads/tmp2") == b"nested"
    assert target.pending_uploads() == []


async def test_copy_of_a_missing_source_is_false_and_writes_nothing(target: Target) -> None:
    await put(target.store, "7/4/model.bin", b"stays")

    assert await target.store.copy(".uploads/never-uploaded", "7/4/new.bin") is False
    assert await target.store.copy(".uploads/never-uploaded", "7/4/model.bin") is False

    assert target.objects() == {target.stored_key("7/4/model.bin"): b"stays"}


async def test_delete_removes_one_object_and_a_missing_key_is_fine(target: Target) -> None:
    await put(target.store, "7/5/a", b"a")
    await put(target.store, "7/5/b", b"b")

    await target.store.delete("7/5/a")
    await target.store.delete("7/5/a")  # again: already gone
    await target.store.delete("7/5/never-was")
    await target.store.delete("9/9/no/such/folder")

    assert target.objects() == {target.stored_key("7/5/b"): b"b"}
    assert await target.store.digest("7/5/a") is None
    assert await target.store.digest("no/such/key") is None


async def test_reading_a_missing_key_fails(target: Target) -> None:
    """A row naming a key whose object is gone (a replace or delete committed after the row was
    read): both stores answer NotFoundError, a 404 the client can retry, not a 500 or 503."""
    with pytest.raises(NotFoundError, match="replaced or deleted"):
        await read_all(target.store, "7/6/missing")


# -- URLs ---------------------------------------------------------------------------------------


async def test_the_local_store_hands_out_no_urls(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    try:
        assert store.download_url("1/1/a.bin", "a.bin") is None
        assert store.upload_url(".uploads/x", 60) is None
        assert store.location == tmp_path.resolve().as_uri()
    finally:
        await store.close()


async def test_s3_urls_name_the_public_endpoint_without_asking_it(s3: S3Server) -> None:
    """Built from the settings as the service builds it. The public host does not exist: a network
    call (minio asking where the bucket is) would fail."""
    settings = Settings.from_env({
        "REGISTRY_DATABASE_URL": "sqlite+aiosqlite:///unused.db",
        "REGISTRY_ARTIFACTS_URL": "s3://some-bucket/reg/", "REGISTRY_S3_ENDPOINT": s3.endpoint,
        "REGISTRY_S3_ACCESS_KEY": s3.access_key, "REGISTRY_S3_SECRET_KEY": s3.secret_key,
        "REGISTRY_S3_PUBLIC_ENDPOINT": "https://files.example.invalid:9443"})
    store = artifact_store(settings.artifact_store)
    try:
        assert isinstance(store, S3Store) and store.location == "s3://some-bucket/reg/"
        down = urlsplit(store.download_url("3/1/dir/model v1.onnx", "model v1.onnx") or "")
        up = urlsplit(store.upload_url(".uploads/0a1b", 900) or "")
    finally:
        await store.close()

    assert (down.scheme, down.netloc, down.path) == (
        "https", "files.example.invalid:9443", "/some-bucket/reg/3/1/dir/model%20v1.onnx")
    query = parse_qs(down.query)
    assert query["X-Amz-Expires"] == ["300"] and "X-Amz-Signature" in query
    assert query["X-Amz-Credential"][0].startswith(f"{s3.access_key}/")
    assert query["response-content-disposition"] == ["attachment; filename*=UTF-8''model%20v1.onnx"]
    assert (up.scheme, up.netloc, up.path) == ("https", "files.example.invalid:9443",
                                               "/some-bucket/reg/.uploads/0a1b")
    assert parse_qs(up.query)["X-Amz-Expires"] == ["900"]


async def test_a_presigned_put_and_get_reach_the_bucket(s3: S3Server) -> None:
    bucket = s3.make_bucket("presign")
    store = s3_store(s3, bucket)
    data = b"uploaded straight to the bucket \xe2\x9c\x93"
    try:
        put_url = store.upload_url(".uploads/feed", 60)
        assert put_url is not None and put_url.startswith(s3.endpoint + f"/{bucket}/reg/.uploads/feed?")
        # moto 5.2.5 cannot check a query-string signature (it answers 500): see s3_support.
        with signatures_unchecked():
            async with httpx.AsyncClient() as http:
                put = await http.put(put_url, content=data)
                assert put.status_code == 200, put.text
                assert await store.digest(".uploads/feed") == written_of(data)

                assert await store.copy(".uploads/feed", "4/2/ünï code.txt") is True
                await store.delete(".uploads/feed")
                get_url = store.download_url("4/2/ünï code.txt", "ünï code.txt")
                assert get_url is not None
                got = await http.get(get_url)
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-disposition"] == \
            "attachment; filename*=UTF-8''%C3%BCn%C3%AF%20code.txt"
        assert [o.object_name for o in s3.client().list_objects(bucket_name=bucket, recursive=True)] \
            == ["reg/4/2/ünï code.txt"]
    finally:
        await store.close()


# -- signatures, keys, close ------------------------------------------------------------------


async def test_a_wrong_secret_key_is_refused_by_the_server(s3: S3Server) -> None:
    """Proves the requests are signed and the signatures checked (and a 403 is no 'missing'): every
    call of a store with a wrong secret fails with UnavailableError (503), whose cause is the
    server's SignatureDoesNotMatch; digest() and copy() do not mistake it for a missing object."""
    bucket = s3.make_bucket("badkey")
    good, bad = s3_store(s3, bucket), s3_store(s3, bucket, secret_key="not-the-secret-key")

    def refused(caught: pytest.ExceptionInfo[UnavailableError], head: bool = False) -> None:
        cause = caught.value.__cause__
        # A HEAD (minio's copy_object looks at its source first) answers 403 with no body, which
        # minio names AccessDenied.
        codes = {"SignatureDoesNotMatch", "AccessDenied"} if head else {"SignatureDoesNotMatch"}
        assert isinstance(cause, S3Error) and cause.code in codes, repr(cause)
        assert status_of(caught.value)[:2] == (503, "unavailable")

    try:
        staged = await bad.stage("1/1/a.bin", body(b"never stored"), 12)  # one part: kept in memory
        with pytest.raises(UnavailableError) as caught:
            await bad.publish(staged)
        refused(caught)

        await put(good, "1/1/b.bin", b"stored")
        await put(good, ".uploads/t", b"uploaded")
        calls = {
            "digest": lambda: bad.digest("1/1/b.bin"),
            "digest-missing": lambda: bad.digest("1/1/none"),
            "copy": lambda: bad.copy(".uploads/t", "1/1/c.bin"),
            "copy-missing": lambda: bad.copy(".uploads/none", "1/1/d.bin"),
            "delete": lambda: bad.delete("1/1/b.bin"),
            "read": lambda: read_all(bad, "1/1/b.bin"),
        }
        for name, call in calls.items():
            with pytest.raises(UnavailableError) as caught:
                await call()
            refused(caught, head=name.startswith("copy"))
        objects = {o.object_name for o in s3.client().list_objects(bucket_name=bucket, recursive=True)}
        assert objects == {"reg/1/1/b.bin", "reg/.uploads/t"}
    finally:
        await good.close()
        await bad.close()


async def test_a_local_store_that_cannot_write_its_root_is_unavailable(tmp_path: Path) -> None:
    """A file where the root folder should be (the tests run as root, so permissions would not
    stop a write): the disk's OSError is UnavailableError (503), never a FileNotFoundError."""
    root = tmp_path / "artifacts"
    root.write_bytes(b"not a folder")
    store = LocalStore(root)
    try:
        calls = {
            "stage": lambda: store.stage("1/1/a.bin", body(b"x"), 1),
            "digest": lambda: store.digest("1/1/a.bin"),
            "delete": lambda: store.delete("1/1/a.bin"),
            "read": lambda: read_all(store, "1/1/a.bin"),
        }
        for name, call in calls.items():
            with pytest.raises(UnavailableError) as caught:
                await call()
            assert isinstance(caught.value.__cause__, NotADirectoryError), name
            assert status_of(caught.value)[0] == 503
    finally:
        await store.close()
    assert root.read_bytes() == b"not a folder"


async def test_a_failing_body_raises_its_own_error_not_unavailable(target: Target) -> None:
    """The client leaving is an OSError too (ConnectionResetError): it must come back as itself,
    not as the store being unavailable."""
    failure = ConnectionResetError("the client went away")

    async def breaks() -> AsyncIterator[bytes]:
        yield b"some bytes"
        raise failure

    with pytest.raises(ConnectionResetError) as caught:
        await target.store.stage("1/1/a.bin", breaks(), 100)
    assert caught.value is failure
    assert target.objects() == {} and target.pending_uploads() == []


async def test_a_cancelled_stage_leaves_nothing_behind(target: Target) -> None:
    """The request is cancelled (the client left, the server shuts down) while the body's
    thread is mid-upload: on S3 after a part of the multipart upload went up, so the
    upload must be aborted, not left pending; on disk the temporary file must go."""
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        for block in blocks(17):
            yield block
        await never.wait()
        yield b"never"

    def started() -> bool:
        if target.kind == "local":
            return bool(staged_files(target))
        assert target.s3 is not None and target.bucket is not None
        client = target.s3.client()
        return any(client._list_parts(bucket_name=target.bucket, object_name=u.object_name,
                                      upload_id=u.upload_id).parts
                   for u in client._list_multipart_uploads(bucket_name=target.bucket).uploads)

    task = asyncio.create_task(target.store.stage("1/1/big.bin", stalls(), None))
    deadline = asyncio.get_running_loop().time() + 10
    while not await asyncio.to_thread(started):  # polls, no fixed wait
        assert not task.done(), task
        assert asyncio.get_running_loop().time() < deadline, "the upload never started"
        await asyncio.sleep(0.02)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert target.pending_uploads() == []
    assert target.objects() == {}


@pytest.mark.parametrize("key", ["../escaped", "1/1/../../../escaped", "/etc/passwd", "", ".",
                                 "1/.."])
async def test_a_local_key_outside_the_root_is_refused(tmp_path: Path, key: str) -> None:
    root = tmp_path / "artifacts"
    store = LocalStore(root)
    received = []

    async def watched() -> AsyncIterator[bytes]:
        received.append(True)
        yield b"x"

    try:
        with pytest.raises(ValueError, match="leaves the store"):
            await store.stage(key, watched(), 1)
        assert received == [], "the body was read before the key was refused"
        staged = await store.stage("1/1/ok", body(b"x"), 1)
        with pytest.raises(ValueError, match="leaves the store"):
            await store.publish(dataclasses.replace(staged, key=key))
        await store.discard(staged)
        with pytest.raises(ValueError, match="leaves the store"):
            await store.digest(key)
        with pytest.raises(ValueError, match="leaves the store"):
            await store.delete(key)
        with pytest.raises(ValueError, match="leaves the store"):
            await read_all(store, key)
        await put(store, ".uploads/t", b"x")
        with pytest.raises(ValueError, match="leaves the store"):
            await store.copy(".uploads/t", key)
        with pytest.raises(ValueError, match="leaves the store"):
            await store.copy(key, "1/1/copied")
    finally:
        await store.close()
    assert not (tmp_path / "escaped").exists()
    assert [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] == [".uploads/t"]


async def test_a_local_key_through_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "artifacts", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "7").symlink_to(outside, target_is_directory=True)
    store = LocalStore(root)
    try:
        with pytest.raises(ValueError, match="leaves the store"):
            await store.stage("7/1/model.bin", body(b"x"), 1)
    finally:
        await store.close()
    assert list(outside.iterdir()) == []


async def test_close_releases_the_store(target: Target) -> None:
    await put(target.store, "1/1/a", b"a")
    await target.store.close()
    with pytest.raises(RuntimeError, match="shutdown"):  # its threads are gone
        await target.store.digest("1/1/a")
    await target.store.close()  # twice is fine (the fixture closes it again)


# -- an endpoint that is not S3, bounded read-ahead -------------------------------------------


class NotS3(BaseHTTPRequestHandler):
    """Answers every request as a proxy in front of S3 might: 413 with a page that is no S3 XML
    (``server.page``: HTML, or bytes that are not even UTF-8). Notes each request it got."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # the whole body, so the connection stays usable
        self.server.seen.append((self.command, self.path.split("?")[0]))  # type: ignore[attr-defined]
        page: bytes = self.server.page  # type: ignore[attr-defined]
        self.send_response(413)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


@contextmanager
def not_s3(page: bytes) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotS3)
    server.daemon_threads = True
    server.seen, server.page = [], page  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


HTML = b"<html><body><h1>413 Request Entity Too Large</h1><hr>nginx</body></html>"


@pytest.mark.parametrize("page", [HTML, b"\xff\xfe\x00<html>not utf-8\x80"], ids=["html", "not-utf8"])
async def test_an_endpoint_answering_no_s3_error_is_unavailable(page: bytes) -> None:
    """Every call the store makes gets a 413 text/html page (minio: InvalidResponseError, or a
    UnicodeDecodeError for a page that is not UTF-8; a HEAD's empty answer: ServerError). Each is
    UnavailableError (503), never a 500, and never taken for a missing object: digest() is not
    None, copy() is not False, read() is not NotFoundError."""
    with not_s3(page) as server:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        store = S3Store(S3Location(endpoint=endpoint, bucket="bucket", prefix=PREFIX,
                                   access_key="key", secret_key="secret", region="us-east-1"),
                        threads=2)
        try:
            small = await store.stage("1/1/small.bin", body(b"kept in memory"), 14)  # no request
            assert server.seen == []
            calls = {
                "publish": lambda: store.publish(small),
                "stage-multipart": lambda: store.stage("1/1/big.bin", generated(17), None),
                "digest": lambda: store.digest("1/1/a.bin"),
                "copy": lambda: store.copy(".uploads/t", "1/1/c.bin"),
                "delete": lambda: store.delete("1/1/a.bin"),
                "read": lambda: read_all(store, "1/1/a.bin"),
            }
            causes = {}
            for name, call in calls.items():
                with pytest.raises(UnavailableError) as caught:
                    await call()
                assert status_of(caught.value)[:2] == (503, "unavailable"), name
                causes[name] = type(caught.value.__cause__)
        finally:
            await store.close()

    expected = InvalidResponseError if page == HTML else UnicodeDecodeError
    assert causes == {"publish": expected, "stage-multipart": expected, "digest": expected,
                      "copy": ServerError, "delete": expected, "read": expected}
    # One request per call (a 413 is not retried); the store did talk to the endpoint each time.
    assert server.seen == [("PUT", "/bucket/reg/1/1/small.bin"), ("POST", "/bucket/reg/1/1/big.bin"),
                           ("GET", "/bucket/reg/1/1/a.bin"), ("HEAD", "/bucket/reg/.uploads/t"),
                           ("DELETE", "/bucket/reg/1/1/a.bin"), ("GET", "/bucket/reg/1/1/a.bin")]


async def test_the_s3_client_pools_a_connection_for_every_thread_that_may_call_it(s3: S3Server) -> None:
    """The store's calls run on two pools of ``threads`` threads (short calls, bodies): minio's
    HTTP pool keeps 2 * threads connections, not urllib3's default 10."""
    store = S3Store(S3Location(endpoint=s3.endpoint, bucket="unused", prefix=PREFIX,
                               access_key=s3.access_key, secret_key=s3.secret_key,
                               region=s3.region), threads=12)
    try:
        assert store._client._http.connection_pool_kw["maxsize"] == 24  # noqa: SLF001
    finally:
        await store.close()


async def test_an_upload_waiting_for_a_thread_reads_nothing_ahead(target: Target, tmp_path: Path) -> None:
    """A store of one thread: while one upload holds it, a second one must not start reading its
    body (memory stays bounded by the threads, not by how many clients send at once)."""
    store: LocalStore | S3Store
    if target.kind == "local":
        store = LocalStore(tmp_path / "one-thread", threads=1)
    else:
        assert target.s3 is not None and target.bucket is not None
        store = S3Store(dataclasses.replace(target.store.loc), threads=1)  # type: ignore[union-attr]
    first_started, release, second_read = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first_body() -> AsyncIterator[bytes]:
        yield b"first "
        first_started.set()
        await release.wait()
        yield b"done"

    async def second_body() -> AsyncIterator[bytes]:
        second_read.set()
        yield b"second"

    try:
        first = asyncio.create_task(store.stage("1/1/first", first_body(), None))
        await asyncio.wait_for(first_started.wait(), timeout=10)
        second = asyncio.create_task(store.stage("1/1/second", second_body(), None))
        for _ in range(50):  # plenty of turns for a reader that was started to pull a chunk
            await asyncio.sleep(0)
        assert not second_read.is_set(), "the waiting upload read its body ahead"
        assert not second.done()

        release.set()
        staged = [await asyncio.wait_for(first, 10), await asyncio.wait_for(second, 10)]
        assert second_read.is_set()
        assert [s.written for s in staged] == [written_of(b"first done"), written_of(b"second")]
        for s in staged:
            await store.discard(s)
    finally:
        release.set()
        await store.close()
