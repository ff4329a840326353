"""Artifacts in a folder on the local disk: the embedded default (``<data dir>/artifacts``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from registry.adapters.artifacts.body import BlockingBody
from registry.domain.errors import NotFoundError, UnavailableError
from registry.services.ports import Staged, Written

BLOCK = 1024 * 1024
T = TypeVar("T")


class LocalStore:
    def __init__(self, root: Path, threads: int = 8) -> None:
        self.root = root.resolve()
        self.location = self.root.as_uri()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="artifacts")
        # Receiving a body holds a thread as long as its client is slow: a pool of its own, so
        # slow uploads never queue downloads and the short calls made under the model's lock.
        self._bodies = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="artifacts-in")
        # An upload waiting for a thread reads nothing ahead: memory stays bounded by threads.
        self._slots = asyncio.Semaphore(threads)

    def _file(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys come from checked artifact paths; this holds even if a check were missed.
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"artifact key {key!r} leaves the store")
        return path

    async def _run(self, fn: Callable[[], T], pool: ThreadPoolExecutor | None = None,
                   body: BlockingBody | None = None) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool or self._pool, fn)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if body is not None and exc is body.failure:
                raise  # the request's body failed (the client left), not the disk
            # A full or failing disk: the store is unavailable, not a bug of ours.
            raise UnavailableError(f"the artifact store failed: {exc.strerror or exc}") from exc

    async def stage(self, key: str, body: AsyncIterator[bytes], length: int | None) -> Staged:
        """Into ``.uploads/<random>`` beside the files (one file system, so publishing is a
        rename), flushed to disk before it counts as received."""
        self._file(key)  # refuse a bad key before receiving anything
        temp = self._file(f".uploads/{uuid.uuid4().hex}")
        reader = BlockingBody(body, asyncio.get_running_loop())

        def copy() -> None:
            temp.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as out:
                while data := reader.read(BLOCK):
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())

        async with self._slots:
            reader.start()
            job = asyncio.ensure_future(self._run(copy, self._bodies, reader))
            try:
                await asyncio.shield(job)  # cancelled: still clean up after the thread, below
            except BaseException:
                await reader.stop()  # wakes a thread still waiting for body
                await asyncio.gather(job, return_exceptions=True)
                await self._run(lambda: temp.unlink(missing_ok=True))
                raise
            await reader.stop()
        return Staged(key, reader.written(), temp)

    async def publish(self, staged: Staged) -> None:
        target = self._file(staged.key)

        def rename() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged.token, target)

        await self._run(rename)

    async def discard(self, staged: Staged) -> None:
        await self._run(lambda: Path(staged.token).unlink(missing_ok=True))

    async def copy(self, source: str, target: str) -> bool:
        src, dst = self._file(source), self._file(target)

        def copy_file() -> bool:
            if not src.is_file():
                return False
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            return True

        return await self._run(copy_file)

    async def delete(self, key: str) -> None:
        path = self._file(key)
        # The folders of this write (below <model id>/<version>/, which other writes share).
        own = [path.parents[i] for i in range(max(0, key.count("/") - 2))]

        def remove() -> None:
            path.unlink(missing_ok=True)
            for folder in own:
                try:
                    folder.rmdir()
                except OSError:  # not empty (or gone): the rest is someone else's
                    break

        await self._run(remove)

    async def digest(self, key: str) -> Written | None:
        path = self._file(key)

        def hash_file() -> Written | None:
            sha, size = hashlib.sha256(), 0
            try:
                with open(path, "rb") as f:
                    while block := f.read(BLOCK):
                        sha.update(block)
                        size += len(block)
            except FileNotFoundError:
                return None
            return Written(size, sha.hexdigest())

        return await self._run(hash_file)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        try:
            f = await self._run(lambda: open(self._file(key), "rb"))  # noqa: SIM115 - closed below
        except FileNotFoundError:  # a replace or delete committed after the row was read
            raise NotFoundError("the file was replaced or deleted while it was read; retry") from None
        try:
            while block := await self._run(lambda: f.read(BLOCK)):
                yield block
        finally:
            await self._run(f.close)

    def download_url(self, key: str, filename: str) -> str | None:
        return None  # streamed through the service

    def upload_url(self, key: str, ttl: float) -> str | None:
        return None  # a client cannot write to our disk directly

    async def problem(self) -> str | None:
        """The folder must be there (serve and worker make it at start) and writable: a replica whose folder
        is missing, another disk's, or read-only would answer 404 or fail on every file."""
        def check() -> str | None:
            if not self.root.is_dir():
                return f"the artifact folder {self.root} does not exist"
            if not os.access(self.root, os.W_OK | os.X_OK):
                return f"the artifact folder {self.root} is not writable"
            return None
        return await self._run(check)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._bodies.shutdown(wait=False, cancel_futures=True)
