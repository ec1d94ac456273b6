"""Connection-level limits: what a hostile local process can do to the server before any route is chosen.

    ServerLimits      the limits and their defaults (docs/security.md)
    BodyBudget        bytes of request bodies in flight, across every request of the process
    EdgeLimits(app)   the ASGI middleware both servers run the app behind

The uvicorn protocol (`ccm.core.server.HttpToolsOneWrite`) applies what only a connection can see: the time to
receive a request's head, the head's size, the header count while parsing, and the number of connections. Hypercorn
gets its own equivalents in its config where it has them. `EdgeLimits` applies the rest to either server:

- a request with both `Transfer-Encoding` and `Content-Length` is refused with 400 and the connection closed (it is
  how a request is smuggled past a proxy that reads the other header; uvicorn's parser refuses it already, hypercorn
  honoured Transfer-Encoding);
- more than `max_headers` headers: 431;
- the body budget: the bytes of request bodies the app has been handed and still holds (a body is held until its
  answer is done), counted as they arrive, across every request of the process. A request whose Content-Length
  would not fit gets 529 `overloaded_error` at once (what Anthropic answers when it is overloaded, and what Claude
  Code retries with backoff), its body unread; one whose body runs past the budget while arriving (others filled it
  meanwhile, or it is chunked) gets the same 529 instead of the rest being read, its connection closed. Counting
  bytes received rather than reserving Content-Length keeps idle connections that declare a large body from
  holding the budget; refusing rather than pausing reads (backpressure) keeps it deadlock-free, since paused
  uploads would each hold part of the budget while waiting for more of it.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Awaitable
from dataclasses import field

import orjson

from ccm.core.types import ASGIApp, Message, Receive, Scope, Send
from ccm.frozen import frozen

log = logging.getLogger("ccm.core")

MB = 1024 * 1024


def _default_max_connections() -> int:
    """Half of what the file-descriptor limit leaves after 64 for files and the like: each client connection may
    need an upstream connection of its own. At most 2,048."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 2048
    return max(16, min(2048, (soft - 64) // 2))


@frozen
class ServerLimits:
    head_timeout: float = 10.0  # seconds from a connection's (or a request's) first byte to the end of its headers
    max_head_bytes: int = 64 * 1024  # the request line and headers together
    max_headers: int = 100
    max_connections: int = field(default_factory=_default_max_connections)
    body_budget: int = 256 * MB  # request bodies in flight, all requests of the process together


class BodyBudget:
    """A count of bytes reserved against a limit (one event loop: no lock)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, size: int) -> bool:
        return self.used + size <= self.limit

    def reserve(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


async def _refuse(send: Send, status: int, error_type: str, message: str, retry: bool = False) -> None:
    body = error_body(error_type, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if retry:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class EdgeLimits:
    """The app behind the limits any server gets (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: ServerLimits | None = None) -> None:
        self.app = app
        self.limits = limits or ServerLimits()
        self.budget = BodyBudget(self.limits.body_budget)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > self.limits.max_headers:
            await _refuse(send, 431, "invalid_request_error",
                          f"Request has more than {self.limits.max_headers} headers")
            return
        length: bytes | None = None
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if chunked and length is not None:
            await _refuse(send, 400, "invalid_request_error",
                          "Request has both Transfer-Encoding and Content-Length")
            return
        if length is not None and len(length) > 18:  # past any real body (and int() refuses 4,300 digits)
            await _refuse(send, 400, "invalid_request_error", "invalid Content-Length header")
            return
        declared = int(length) if length is not None and length.isdigit() else 0  # a bad one is the app's 400
        if declared and not self.budget.fits(declared):
            await self._overloaded(send)
            return
        if not (declared or chunked):
            await self.app(scope, receive, send)
            return
        # The app, its body's bytes counted against the budget as it reads them, given back when it is done. The
        # send wrapper is a plain function handing back the server's awaitable: it sits under every event of a
        # stream, and a coroutine of its own there cost a frame per event.
        budget = self.budget
        held = 0
        cut_off = started = False

        async def counted_receive() -> Message:
            nonlocal held, cut_off
            if cut_off:
                return {"type": "http.disconnect"}
            message = await receive()
            size = len(message.get("body", b""))
            if size:
                if not budget.reserve(size):
                    cut_off = True
                    return {"type": "http.disconnect"}  # the app stops reading; the 529 is answered here
                held += size
            return message

        def watched_send(message: Message) -> Awaitable[None]:
            nonlocal started
            if not started:
                started = message["type"] == "http.response.start"
            return send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        finally:
            budget.release(held)
        if cut_off and not started:
            await self._overloaded(send)

    async def _overloaded(self, send: Send) -> None:
        await _refuse(send, 529, "overloaded_error",
                      f"ccm is holding {self.budget.limit // MB} MB of request bodies already; retry shortly", True)
