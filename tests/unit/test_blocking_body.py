"""BlockingBody: an async body read with a blocking ``read(n)`` from a worker thread, on a real
event loop and a real thread (``loop.run_in_executor``), as the stores use it."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from registry.adapters.artifacts.body import READ_AHEAD_CHUNKS, BlockingBody, BodyAbandoned

T = TypeVar("T")
WAIT = 10.0  # seconds before a stuck thread fails the test instead of hanging it


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="body-test")
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


async def in_thread(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
    return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, fn), WAIT)


async def chunks_of(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)  # hand the loop over, as a network body does
        yield part


def random_parts(seed: int, count: int, largest: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice([0, 1, 7, rng.randrange(1, largest)])) for _ in range(count)]


def start(body: AsyncIterator[bytes]) -> BlockingBody:
    reader = BlockingBody(body, asyncio.get_running_loop())
    reader.start()
    return reader


@pytest.mark.parametrize(("n", "largest"), [(1, 100), (1000, 20000), (4096, 20000),
                                             (65536, 20000), (1 << 20, 20000)])
async def test_read_n_returns_exactly_n_bytes_until_the_end(pool: ThreadPoolExecutor, n: int,
                                                            largest: int) -> None:
    parts = random_parts(n, 300, largest)
    whole = b"".join(parts)
    reader = start(chunks_of(parts))

    def read_all() -> list[bytes]:
        got = []
        while data := reader.read(n):
            got.append(data)
        got.append(reader.read(n))  # after the end: still empty, never blocks
        return got

    try:
        got = await in_thread(pool, read_all)
    finally:
        await reader.stop()
    assert b"".join(got) == whole
    assert all(len(g) == n for g in got[:-2])
    assert 0 < len(got[-2]) <= n and got[-1] == b""
    written = reader.written()
    assert (written.size, written.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())


async def test_read_minus_one_returns_the_rest(pool: ThreadPoolExecutor) -> None:
    parts = random_parts(1, 200, 5000)
    whole = b"".join(parts)
    reader = start(chunks_of(parts))

    def read() -> tuple[bytes, bytes, bytes, bytes]:
        return reader.read(10), reader.read(0), reader.read(-1), reader.read(-1)

    try:
        first, nothing, rest, after = await in_thread(pool, read)
    finally:
        await reader.stop()
    assert (first, nothing, rest, after) == (whole[:10], b"", whole[10:], b"")
    assert reader.written().sha256 == hashlib.sha256(whole).hexdigest()
    assert reader.written().size == len(whole)


async def test_empty_body(pool: ThreadPoolExecutor) -> None:
    reader = start(chunks_of([]))
    try:
        assert await in_thread(pool, lambda: reader.read(100)) == b""
    finally:
        await reader.stop()
    assert reader.written().size == 0
    assert reader.written().sha256 == hashlib.sha256(b"").hexdigest()


async def test_an_error_in_the_body_surfaces_in_the_reading_thread(pool: ThreadPoolExecutor) -> None:
    class ClientGone(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"a" * 100
        await asyncio.sleep(0)
        yield b"b" * 100
        raise ClientGone("the client disconnected")

    reader = start(failing())
    got: list[bytes] = []

    def read_all() -> None:
        while data := reader.read(64):
            got.append(data)

    assert reader.failure is None
    try:
        with pytest.raises(ClientGone, match="disconnected") as caught:
            await in_thread(pool, read_all)
    finally:
        await reader.stop()
    assert len(b"".join(got)) < 200  # the thread never saw a clean end
    # The store tells the body's own failure from its disk's by identity (both may be OSError).
    assert reader.failure is caught.value


async def test_a_body_read_to_its_end_has_no_failure(pool: ThreadPoolExecutor) -> None:
    reader = start(chunks_of([b"a" * 10, b"", b"b" * 5]))
    try:
        assert await in_thread(pool, lambda: reader.read(-1)) == b"a" * 10 + b"b" * 5
        assert await in_thread(pool, lambda: reader.read(4)) == b""
    finally:
        await reader.stop()
    assert reader.failure is None


async def test_stop_wakes_a_thread_blocked_in_read(pool: ThreadPoolExecutor) -> None:
    closed = asyncio.Event()

    async def never_ends() -> AsyncIterator[bytes]:
        try:
            yield b"x" * 10
            await asyncio.Event().wait()
            yield b"unreachable"
        finally:
            closed.set()

    loop = asyncio.get_running_loop()
    reader = start(never_ends())
    reading = loop.run_in_executor(pool, lambda: reader.read(-1))
    try:
        deadline = loop.time() + WAIT
        while reader.size == 0 and loop.time() < deadline:  # the thread took the first chunk
            await asyncio.sleep(0.001)
        assert reader.size == 10
        assert not reading.done()  # blocked: read(-1) waits for an end that never comes
        await reader.stop()
        with pytest.raises(BodyAbandoned):
            await asyncio.wait_for(reading, WAIT)
    finally:
        if not reading.done():  # the test failed: unblock the thread so the run can end
            reader._queue.put_nowait(BodyAbandoned("test cleanup"))
    assert closed.is_set()  # the body's generator was closed, not left suspended
    assert reader.written().size == 10


async def test_stop_before_the_thread_reads_makes_read_fail(pool: ThreadPoolExecutor) -> None:
    async def never_ends() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    reader = start(never_ends())
    await asyncio.sleep(0)
    await reader.stop()
    with pytest.raises(BodyAbandoned) as caught:
        await in_thread(pool, lambda: reader.read(10))
    assert reader.failure is caught.value and not isinstance(caught.value, OSError)


async def test_read_ahead_is_bounded(pool: ThreadPoolExecutor) -> None:
    total = 10 * READ_AHEAD_CHUNKS
    pulled = 0

    async def fast() -> AsyncIterator[bytes]:
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield i.to_bytes(4, "big")  # never awaits: only the queue's bound can stop it

    reader = start(fast())
    for _ in range(3 * total):  # plenty of turns of the loop for an unbounded feeder to finish
        await asyncio.sleep(0)
    # READ_AHEAD_CHUNKS queued, plus the one the feeder holds while waiting for room.
    assert READ_AHEAD_CHUNKS <= pulled <= READ_AHEAD_CHUNKS + 1
    assert reader.size == 0  # the thread took nothing

    data = await in_thread(pool, lambda: reader.read(4 * 3))  # room again: the feeder goes on
    assert data == b"".join(i.to_bytes(4, "big") for i in range(3))
    for _ in range(3 * total):
        await asyncio.sleep(0)
    # The thread's one take emptied the queue (a batch), so at most one more queue-full is pulled.
    assert pulled <= 2 * READ_AHEAD_CHUNKS + 2

    rest = await in_thread(pool, lambda: reader.read(-1))
    await reader.stop()
    assert data + rest == b"".join(i.to_bytes(4, "big") for i in range(total))
    assert pulled == total


async def test_stop_ends_read_ahead_of_an_abandoned_body(pool: ThreadPoolExecutor) -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100 * READ_AHEAD_CHUNKS):  # finite, so an unbounded feeder fails, not hangs
            pulled += 1
            yield b"z" * 1024

    reader = start(endless())
    await asyncio.sleep(0)
    assert pulled <= READ_AHEAD_CHUNKS + 1
    await reader.stop()
    before = pulled
    for _ in range(100):
        await asyncio.sleep(0)
    assert pulled == before
    with pytest.raises(BodyAbandoned):
        await in_thread(pool, lambda: reader.read(-1))
