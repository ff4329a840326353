"""A client that stops sending in the middle of a request body gets ``408 Request Timeout`` after
``idle`` seconds without a byte, and its connection is closed.

The ASGI server has no such bound: a client that promised a Content-Length and then went quiet
held its connection (and a worker's pending read) for ever. The clock restarts with every chunk,
so a slow but steady upload is never cut; only silence is.
"""

from __future__ import annotations

import asyncio

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from registry.api.errors import send_problem


class BodyIdleTimeout:
    def __init__(self, app: ASGIApp, idle: float) -> None:
        self.app = app
        self.idle = idle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = False
        timed_out = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_read, timed_out
            if body_read or timed_out:  # after the body, the server only reports a disconnect
                return await receive()
            try:
                async with asyncio.timeout(self.idle):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                # To the app, a client that left: it stops reading and answers nobody.
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out and not started:
                return  # the 408 below answers instead of what the app made of the "disconnect"
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)
        if timed_out and not started:
            await send_problem(send, 408, "request_timeout", "Request timeout",
                               f"no part of the request body arrived for {self.idle:g} s",
                               [(b"connection", b"close")])

