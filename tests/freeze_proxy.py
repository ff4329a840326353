"""A TCP proxy in front of PostgreSQL that a test can freeze and release.

Frozen, it accepts connections and reads what clients send but passes nothing on in either
direction, as a database whose host stalls would: sockets stay open, nothing answers, nothing is
refused. Released, it delivers what it held and carries on. The shared cluster itself is never
stopped or signalled.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.engine import make_url


class FreezeProxy:
    """``with FreezeProxy("127.0.0.1", 5432) as proxy: url = proxy.url_for(database_url)``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="freeze-proxy", daemon=True)

    @classmethod
    def for_url(cls, database_url: str) -> FreezeProxy:
        url = make_url(database_url)
        return cls(url.host or "127.0.0.1", url.port or 5432)

    def url_for(self, database_url: str) -> str:
        """``database_url`` pointed at this proxy."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)

    def start(self) -> FreezeProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def freeze(self) -> None:
        """From now on nothing passes, in either direction, on old or new connections."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> FreezeProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- in the proxy's own event loop ---------------------------------------------------------

    def _call(self, coro) -> object:  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self._flowing.set()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        try:
            await self._flowing.wait()  # a stalled host does not answer a new session either
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(client_writer)
            client_writer.close()
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(self._pipe(client_reader, upstream_writer),
                             self._pipe(upstream_reader, client_writer), return_exceptions=True)
        self._writers.discard(client_writer)
        self._writers.discard(upstream_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
