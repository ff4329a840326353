"""A client that stops sending mid-body is answered 408 after the idle time and disconnected;
one that sends slowly but steadily is served (the clock restarts with every chunk)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import Server, server_for

IDLE = 1.0


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_for("sqlite", tmp_path_factory.mktemp("slow-body"),
                    extra_env={"REGISTRY_BODY_IDLE_TIMEOUT": str(IDLE)}) as srv:
        yield srv


def _connect(server: Server) -> socket.socket:
    url = urlsplit(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=30)


def _head(server: Server, length: int) -> bytes:
    return (f"POST /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):  # b"" once the server closed the connection
        data += chunk
    return data


def test_a_body_that_stops_arriving_gets_408_and_the_connection_is_closed(idle_server: Server) -> None:
    with _connect(idle_server) as sock:
        sock.sendall(_head(idle_server, 100) + b'{"name": "hal')
        started = time.monotonic()
        answer = _read_all(sock)  # returns only because the server closes the connection
        took = time.monotonic() - started
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    problem = json.loads(body)
    assert problem["code"] == "request_timeout" and problem["status"] == 408
    assert IDLE <= took < IDLE + 3, took
    assert '"status": 500' not in Path(idle_server.log).read_text()


def test_a_slow_but_steady_body_is_served(idle_server: Server) -> None:
    body = json.dumps({"name": "slow-but-steady"}).encode()
    with _connect(idle_server) as sock:
        sock.sendall(_head(idle_server, len(body)))
        for i in range(0, len(body), 4):  # in all longer than the idle time, never idle that long
            sock.sendall(body[i:i + 4])
            time.sleep(IDLE / 4)
        status = sock.recv(65536).partition(b"\r\n")[0]
    assert status == b"HTTP/1.1 201 Created"
