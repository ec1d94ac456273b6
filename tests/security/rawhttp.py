"""Raw HTTP/1.1 over sockets for the connection-level tests, and ccm's own uvicorn set-up serving a small app in a
background thread with chosen limits (what `ccm run` serves with, limits aside)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from ccm.core.limits import EdgeLimits, ServerLimits
from ccm.core.server import UvicornServer, bind, uvicorn_config


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(*, method: str = "POST", path: str = "/v1/messages", body_length: int | None = 0,
         headers: Mapping[str, str] | None = None, **more: str) -> bytes:
    """A request head; header names may be written with `_` for `-`."""
    fields = {**(headers or {}), **more}
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1",
             *(f"{k.replace('_', '-')}: {v}" for k, v in fields.items())]
    if body_length is not None:
        lines.append(f"content-length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout: float = 10.0) -> Response | None:
    """The next response on `sock`, or None when the connection ends first."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        data += chunk
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Response(int(status_line.split()[1]), headers, rest[:length])


def closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the server ends the connection within `timeout` (whatever it answers first is read and dropped)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send what the server lets us: False once it has closed the connection."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers its size; handles the lifespan uvicorn runs."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = orjson.dumps({"size": size})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def limited_server(limits: ServerLimits, app: Any = echo_app) -> Iterator[int]:
    """ccm's uvicorn (its protocol and EdgeLimits) serving `app` on a free port in a thread; yields the port."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = UvicornServer(uvicorn_config(EdgeLimits(app, limits), limits=limits))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(10)
        sock.close()
