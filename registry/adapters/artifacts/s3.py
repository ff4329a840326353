"""Artifacts in an S3 bucket (MinIO, AWS, ...), through the blocking ``minio`` client run in a
bounded thread pool. Every client call passes keyword arguments (minio 8 makes them keyword-only).

Uploads stream in parts of ``PART_SIZE`` with one part in flight while the next is received, so a
20 GiB artifact never sits in memory, and stay an incomplete multipart upload until the digest
was checked. Downloads are presigned for ``REGISTRY_S3_PUBLIC_ENDPOINT``
(the address clients reach, which may differ from the one the service uses).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import Part
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

from registry.adapters.artifacts.body import BlockingBody
from registry.domain.errors import NotFoundError, UnavailableError
from registry.services.ports import Staged, Written

PART_SIZE = 16 * 1024 * 1024
DOWNLOAD_TTL = timedelta(minutes=5)
BLOCK = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Multipart:
    """An incomplete multipart upload. minio 7's public ``put_object`` completes the upload as
    soon as the stream ends; keeping it open until the digest is checked needs its per-part
    calls (``_create_multipart_upload``, ``_upload_part``, ``_complete_multipart_upload``,
    ``_abort_multipart_upload``), which is why minio is pinned below 8."""

    name: str
    upload_id: str
    parts: list[Part]


@dataclass(frozen=True, slots=True)
class S3Location:
    endpoint: str  # http(s)://host[:port]
    bucket: str
    prefix: str  # "" or ending in "/"
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    public_endpoint: str | None = None


def _client(endpoint: str, loc: S3Location, connections: int = 10) -> Minio:
    parts = urlsplit(endpoint)
    # minio's own HTTP pool, with room for every thread that calls it.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=300, read=300), maxsize=connections,
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))
    # The region is given, so presigning never asks the server where the bucket is.
    return Minio(endpoint=parts.netloc, access_key=loc.access_key, secret_key=loc.secret_key,
                 region=loc.region, secure=parts.scheme == "https", http_client=http)


class S3Store:
    def __init__(self, loc: S3Location, threads: int = 16) -> None:
        self.loc = loc
        self.location = f"s3://{loc.bucket}/{loc.prefix}"
        self._client = _client(loc.endpoint, loc, connections=2 * threads)
        self._public = _client(loc.public_endpoint or loc.endpoint, loc)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3")
        # Receiving a body holds a thread as long as its client is slow: a pool of its own, so
        # slow uploads never queue downloads and the short calls made under the model's lock.
        self._bodies = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3-in")
        # An upload waiting for a thread reads nothing ahead: memory stays bounded by threads.
        self._slots = asyncio.Semaphore(threads)

    def _key(self, key: str) -> str:
        return self.loc.prefix + key

    async def _run(self, fn: Callable[[], T], pool: ThreadPoolExecutor | None = None) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool or self._pool, fn)
        # S3 refused, is unreachable, or a proxy in front of it answered something else.
        except (MinioException, HTTPError, UnicodeDecodeError) as exc:
            raise UnavailableError(f"the artifact store failed: {exc}") from exc

    async def stage(self, key: str, body: AsyncIterator[bytes], length: int | None) -> Staged:
        """A body of one part is kept in memory (at most ``PART_SIZE``) and PUT when published;
        a larger one goes up as an incomplete multipart upload, which no reader sees until
        ``publish`` completes it and which ``discard`` aborts, so no copy of the bytes is made."""
        async with self._slots:
            reader = BlockingBody(body, asyncio.get_running_loop())
            reader.start()
            job = asyncio.ensure_future(self._run(
                lambda: self._upload_parts(self._key(key), reader), self._bodies))
            try:
                token = await asyncio.shield(job)  # cancelled: abort what the thread leaves, below
            except BaseException:
                await reader.stop()  # wakes a thread still waiting for body
                done = await asyncio.gather(job, return_exceptions=True)
                if isinstance(done[0], _Multipart):
                    await self.discard(Staged(key, reader.written(), done[0]))
                raise
            await reader.stop()
        return Staged(key, reader.written(), token)

    def _upload_parts(self, name: str, reader: BlockingBody) -> bytes | _Multipart:
        data = reader.read(PART_SIZE)
        if len(data) < PART_SIZE:
            return data
        client = self._client
        upload_id = client._create_multipart_upload(  # noqa: SLF001 - see _Multipart
            bucket_name=self.loc.bucket, object_name=name,
            headers={"Content-Type": "application/octet-stream"})
        parts: list[Part] = []
        try:
            while data:
                number = len(parts) + 1
                etag = client._upload_part(  # noqa: SLF001
                    bucket_name=self.loc.bucket, object_name=name, data=data, headers=None,
                    upload_id=upload_id, part_number=number)
                parts.append(Part(part_number=number, etag=etag))
                del data  # let the sent part go before the next one is read
                data = reader.read(PART_SIZE)
        except BaseException:
            client._abort_multipart_upload(  # noqa: SLF001
                bucket_name=self.loc.bucket, object_name=name, upload_id=upload_id)
            raise
        return _Multipart(name, upload_id, parts)

    async def publish(self, staged: Staged) -> None:
        name, token = self._key(staged.key), staged.token
        if isinstance(token, _Multipart):
            await self._run(lambda: self._client._complete_multipart_upload(  # noqa: SLF001
                bucket_name=self.loc.bucket, object_name=name, upload_id=token.upload_id,
                parts=token.parts))
        else:
            await self._run(lambda: self._client.put_object(
                bucket_name=self.loc.bucket, object_name=name, data=io.BytesIO(token),
                length=len(token)))

    async def discard(self, staged: Staged) -> None:
        token = staged.token
        if isinstance(token, _Multipart):
            await self._run(lambda: self._client._abort_multipart_upload(  # noqa: SLF001
                bucket_name=self.loc.bucket, object_name=token.name, upload_id=token.upload_id))

    async def copy(self, source: str, target: str) -> bool:
        src, dst = self._key(source), self._key(target)

        def server_side() -> bool:  # minio switches to a multipart copy above CopyObject's 5 GiB
            try:
                self._client.copy_object(bucket_name=self.loc.bucket, object_name=dst,
                                         source=CopySource(bucket_name=self.loc.bucket, object_name=src))
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return False
                raise
            return True

        return await self._run(server_side)

    async def delete(self, key: str) -> None:
        name = self._key(key)
        await self._run(lambda: self._client.remove_object(bucket_name=self.loc.bucket,
                                                           object_name=name))

    async def digest(self, key: str) -> Written | None:
        name = self._key(key)

        def hash_object() -> Written | None:
            try:
                response = self._client.get_object(bucket_name=self.loc.bucket, object_name=name)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return None
                raise
            sha, size = hashlib.sha256(), 0
            try:
                for block in response.stream(BLOCK):
                    sha.update(block)
                    size += len(block)
            finally:
                response.close()
                response.release_conn()
            return Written(size, sha.hexdigest())

        return await self._run(hash_object)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        name = self._key(key)

        def get() -> Any:
            try:
                return self._client.get_object(bucket_name=self.loc.bucket, object_name=name)
            except S3Error as exc:
                if exc.code == "NoSuchKey":  # a replace or delete committed after the row was read
                    raise NotFoundError("the file was replaced or deleted while it was read; "
                                        "retry") from None
                raise

        response = await self._run(get)
        blocks = response.stream(BLOCK)
        try:
            while block := await self._run(lambda: next(blocks, b"")):
                yield block
        finally:
            response.close()
            response.release_conn()

    def download_url(self, key: str, filename: str) -> str | None:
        disposition = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
        return self._public.presigned_get_object(
            bucket_name=self.loc.bucket, object_name=self._key(key), expires=DOWNLOAD_TTL,
            response_headers={"response-content-disposition": disposition})

    def upload_url(self, key: str, ttl: float) -> str | None:
        return self._public.presigned_put_object(bucket_name=self.loc.bucket,
                                                 object_name=self._key(key),
                                                 expires=timedelta(seconds=ttl))

    async def problem(self) -> str | None:
        return None  # not probed: a bucket request per readiness check would cost more than it tells

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._bodies.shutdown(wait=False, cancel_futures=True)
