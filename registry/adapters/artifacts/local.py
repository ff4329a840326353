"""Artifacts in a folder on the local disk: the embedded default (``<data dir>/artifacts``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from registry.adapters.artifacts.body import BlockingBody
from registry.services.ports import Staged, Written

BLOCK = 1024 * 1024
T = TypeVar("T")


class LocalStore:
    def __init__(self, root: Path, threads: int = 8) -> None:
        self.root = root.resolve()
        self.location = self.root.as_uri()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="artifacts")

    def _file(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys come from checked artifact paths; this holds even if a check were missed.
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"artifact key {key!r} leaves the store")
        return path

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def stage(self, key: str, body: AsyncIterator[bytes], length: int | None) -> Staged:
        """Into ``.uploads/<random>`` next to the files (one file system, so publishing is a
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

        reader.start()
        job = asyncio.ensure_future(self._run(copy))
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
            os.replace(staged.token, target)  # atomic: readers see the old file or the new one

        await self._run(rename)

    async def discard(self, staged: Staged) -> None:
        await self._run(lambda: Path(staged.token).unlink(missing_ok=True))

    async def move(self, source: str, target: str, size: int) -> None:
        src, dst = self._file(source), self._file(target)

        def rename() -> None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)  # atomic on one file system: readers see the old or the new file

        await self._run(rename)

    async def delete(self, key: str) -> None:
        path = self._file(key)
        await self._run(lambda: path.unlink(missing_ok=True))

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
        f = await self._run(lambda: open(self._file(key), "rb"))  # noqa: SIM115 - closed below
        try:
            while block := await self._run(lambda: f.read(BLOCK)):
                yield block
        finally:
            await self._run(f.close)

    def download_url(self, key: str, filename: str) -> str | None:
        return None  # streamed through the service

    def upload_url(self, key: str, ttl: float) -> str | None:
        return None  # a client cannot write to our disk directly

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
