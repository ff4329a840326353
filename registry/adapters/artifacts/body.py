"""A request body read by a worker thread: the blocking S3 client and file writes take a
file-like ``read(n)``, while the body arrives as an async iterator on the event loop.

A task on the loop reads ahead into a bounded queue (so receiving the next part overlaps with
sending the last one, and memory stays bounded); the thread takes what is queued in batches,
hashes it, and hands back exactly ``n`` bytes (the S3 client appends what ``read`` returns to its
part buffer, so short reads would cost quadratic copying).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from registry.services.ports import Written

READ_AHEAD_CHUNKS = 64  # ASGI servers hand over at most 256 KiB per message: <= 16 MiB queued
_END = object()


class BodyAbandoned(Exception):
    """The body stopped being fed before its end."""


class BlockingBody:
    def __init__(self, body: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._body = body
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=READ_AHEAD_CHUNKS)
        self._feeder: asyncio.Task[None] | None = None
        self._pending: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._sha = hashlib.sha256()
        self.size = 0
        # What feeding the body raised (the client left, too large): the caller's, not the store's.
        self.failure: Exception | None = None

    def start(self) -> None:
        self._feeder = self._loop.create_task(self._feed())

    async def stop(self) -> None:
        """Stop reading ahead (the thread finished, failed, or was abandoned). A thread still
        reading is woken with an error instead of waiting for a body nobody feeds."""
        if self._feeder is not None and not self._feeder.done():
            self._feeder.cancel()
            try:
                await self._feeder
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(BodyAbandoned("the upload was abandoned"))

    async def _feed(self) -> None:
        try:
            async for chunk in self._body:
                if chunk:
                    await self._queue.put(chunk)
        except Exception as exc:  # the thread re-raises it, and the store cleans up
            await self._queue.put(exc)
            return
        await self._queue.put(_END)

    async def _take(self) -> list[Any]:
        items = [await self._queue.get()]
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def read(self, n: int = -1) -> bytes:
        """Called in a worker thread: up to ``n`` bytes (all that is left when ``n`` < 0). Whole
        chunks are handed on and only the last one is split, so a part costs one copy."""
        while not self._done and (n < 0 or self._buffered < n):
            for item in asyncio.run_coroutine_threadsafe(self._take(), self._loop).result():
                if item is _END:
                    self._done = True
                elif isinstance(item, Exception):
                    self._done = True
                    self.failure = item
                    raise item
                else:
                    self._sha.update(item)
                    self.size += len(item)
                    self._pending.append(item)
                    self._buffered += len(item)
        if n < 0 or self._buffered <= n:
            taken, self._pending, self._buffered = list(self._pending), deque(), 0
            return b"".join(taken)
        taken, size = [], 0
        while size < n:
            chunk = self._pending.popleft()
            if size + len(chunk) > n:
                cut = n - size
                self._pending.appendleft(chunk[cut:])
                chunk = chunk[:cut]
            taken.append(chunk)
            size += len(chunk)
        self._buffered -= n
        return b"".join(taken)

    def written(self) -> Written:
        return Written(self.size, self._sha.hexdigest())
