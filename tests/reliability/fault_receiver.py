"""Webhook receivers for the chaos run, built on ``tests.e2e.receivers``.

The well-behaved subscribers are endpoints of one :class:`Receiver` that always answers 200 (and
the ``gone`` endpoint, told to answer 410 at some point). The faulty subscriber lives alone on a
:class:`FaultReceiver`, so closing its port ("down") touches nobody else; besides the modes a
:class:`~tests.e2e.receivers.Reply` can play (hang past the webhook timeout, 500), it can reset
the connection: the request is read and recorded, then the socket is closed with ``SO_LINGER``
0, which sends a TCP RST instead of an answer.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler

from tests.e2e.receivers import OK, PREFIX, Endpoint, Received, Receiver, Reply, _verify
from tests.reliability.profile import WEBHOOK_TIMEOUT

HANG = Reply(200, delay=WEBHOOK_TIMEOUT + 3.0)  # answered only after the sender gave up
MODES = {"ok": OK, "hang": HANG, "error500": Reply(500)}


class FaultReceiver(Receiver):
    """A receiver whose endpoints can also be told to reset every connection."""

    def __init__(self) -> None:
        self.resetting: set[str] = set()  # endpoint names
        super().__init__()

    def set_mode(self, endpoint: Endpoint, mode: str) -> None:
        """``ok``, ``hang``, ``error500`` or ``reset``, for every later request."""
        with self.lock:
            if mode == "reset":
                self.resetting.add(endpoint.name)
            else:
                self.resetting.discard(endpoint.name)
        if mode != "reset":
            endpoint.answer(then=MODES[mode])

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path[len(PREFIX):] if h.path.startswith(PREFIX) else ""
        with self.lock:
            reset = name in self.resetting
        if not reset:
            super()._handle(h)
            return
        raw = h.rfile.read(int(h.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        verified, error = _verify(self.endpoints[name].secrets, raw, headers)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.lock:
            record = Received(name, h.command, len(self.log), time.time(), headers.get("webhook-id"),
                              headers, raw, body, verified, error)
            record.answered_at = record.at  # answered by the reset: not in flight any more
            self.log.append(record)
        # Linger 0 makes close() send RST; the stream objects hold the socket open until closed.
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.rfile.close()
        h.wfile.close()
        h.connection.close()
        # http.server flushes and closes the streams after us: give it harmless ones.
        h.rfile, h.wfile = io.BytesIO(), io.BytesIO()
        h.close_connection = True
