"""The ASGI machinery every fake upstream shares: read and record the request, route it to the flavour's handler,
pick the scripted behaviour, write the answer (whole, or frame by frame with delays and faults).

A flavour subclass (`FakeOpenAI`, `FakeAnthropic`) supplies `routes` (method, path) → handler, `error_answer`
(its protocol's error body) and `render` (a `Reply` in its protocol). Handlers return an `Answer`, or raise
`Rejected` for a request the real API would refuse; the refusal is recorded on the exchange so a test can print why.

`WholeBodyFake` is the lighter base of the fakes that answer each request in one piece (Gemini, Responses).

Waits (hangs, trickles) end early when the client disconnects or the server shuts down, so a fake never keeps a
test, or the server thread, alive after it is done.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .script import Behaviour, Exchange, Hang, Raw, Reply, Status, StreamFault

Headers = Sequence[tuple[str, str]]


@dataclass
class Answer:
    status: int
    headers: Headers
    body: bytes = b""
    frames: list[bytes] | None = None  # a streamed answer: one write per frame
    chunk_delay: float = 0.0
    fault: StreamFault | None = None
    fault_frame: bytes = b""  # what a `malformed` / `error` fault writes
    hang_before: float = 0.0


@dataclass
class Rejected(Exception):
    status: int
    message: str
    error_type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: Headers = field(default_factory=tuple)


Handler = Callable[[Exchange], Answer]


def stream_answer(reply: Reply, frames: list[bytes], headers: Headers, *, error_frame: bytes,
                  malformed_frame: bytes) -> Answer:
    """A streamed reply: its frames, paced and faulted as `reply` says; an `error` fault writes the flavour's
    `error_frame`, a `malformed` one its `malformed_frame`."""
    return Answer(
        200,
        [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"), *headers],
        frames=frames,
        chunk_delay=reply.chunk_delay,
        fault=reply.fault,
        fault_frame=error_frame if reply.fault and reply.fault.kind == "error" else malformed_frame,
    )

DEFAULT_REPLY = Reply(text="Hello from the fake upstream.")


class FakeUpstream(ABC):
    """Base of the fakes. `script(...)` queues behaviours; `default` answers when the queue is empty."""

    routes: dict[tuple[str, str], Handler]

    def __init__(self, default: Behaviour | None = None) -> None:
        self.default: Behaviour = default if default is not None else DEFAULT_REPLY
        self.exchanges: list[Exchange] = []
        self._queue: deque[Behaviour] = deque()
        self._closing = threading.Event()
        self._in_flight = 0
        self.crashes: list[str] = []

    # --- the test's side ---------------------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Scripted behaviours not consumed yet."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now: a leak check after a test expects 0."""
        return self._in_flight

    @property
    def connections(self) -> int:
        """Distinct client connections (source ports) seen: shows whether a client pools its connections."""
        return len({e.client_port for e in self.exchanges})

    def requests(self, path: str | None = None) -> list[Exchange]:
        return [e for e in self.exchanges if path is None or e.path == path]

    @property
    def rejections(self) -> list[str]:
        return [f"{e.method} {e.path}: {e.status} {e.rejection}" for e in self.exchanges if e.rejection]

    def reset(self, default: Behaviour | None = None) -> None:
        """Forget the script and the recorded exchanges: one fake can serve a module of tests."""
        self._queue.clear()
        self.exchanges = []
        self.crashes = []
        self.default = default if default is not None else DEFAULT_REPLY

    def close(self) -> None:
        """Called by the server before it stops: ends every pending wait."""
        self._closing.set()

    # --- flavour hooks -----------------------------------------------------------------------------------------

    @abstractmethod
    def error_answer(self, rejected: Rejected) -> Answer: ...

    @abstractmethod
    def render(self, reply: Reply, exchange: Exchange) -> Answer: ...

    def scripted_answer(self, exchange: Exchange) -> Answer:
        """The answer of the next scripted behaviour, or of `default` when the script is used up."""
        return self.answer(self._queue.popleft() if self._queue else self.default, exchange)

    def answer(self, behaviour: Behaviour, exchange: Exchange) -> Answer:
        """A behaviour (callables resolved against the request) turned into the bytes to write."""
        while callable(behaviour) and not isinstance(behaviour, (Reply, Status, Hang, Raw)):
            behaviour = behaviour(exchange)
        if isinstance(behaviour, Reply):
            return self.render(behaviour, exchange)
        if isinstance(behaviour, Status):
            answer = self.error_answer(Rejected(behaviour.status, behaviour.message, headers=behaviour.headers))
            if behaviour.body is not None:
                answer.body = behaviour.body
            return answer
        if isinstance(behaviour, Raw):
            return Answer(behaviour.status, [("content-type", behaviour.content_type), *behaviour.headers],
                          behaviour.body)
        if isinstance(behaviour, Hang):
            then = self.answer(behaviour.then if behaviour.then is not None else self.default, exchange)
            then.hang_before = behaviour.seconds
            return then
        raise TypeError(f"not a behaviour: {behaviour!r}")

    # --- ASGI --------------------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
        client = scope.get("client") or ("", 0)
        exchange = Exchange(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            raw=bytes(raw),
            client_port=int(client[1]),
        )
        self.exchanges.append(exchange)
        self._in_flight += 1
        try:
            await self._serve(exchange, receive, send)
        except Exception:  # a bug in the fake itself: keep it visible to the test, which checks `crashes`
            self.crashes.append(f"{exchange.method} {exchange.path}: {traceback.format_exc()}")
            raise
        finally:
            self._in_flight -= 1
            exchange.done = True

    async def _serve(self, exchange: Exchange, receive: Any, send: Any) -> None:
        handler = self.routes.get((exchange.method, exchange.path))
        try:
            if handler is None:
                raise Rejected(404, f"Invalid URL ({exchange.method} {exchange.path})", "not_found_error")
            answer = handler(exchange)
        except Rejected as rejected:
            exchange.rejection = rejected.message
            answer = self.error_answer(rejected)
        disconnected = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, disconnected))
        try:
            await self._write(answer, exchange, send, disconnected)
        finally:
            watcher.cancel()
            exchange.disconnected = exchange.disconnected or disconnected.is_set()

    async def _write(self, answer: Answer, exchange: Exchange, send: Any, disconnected: asyncio.Event) -> None:
        if answer.hang_before and not await self._pause(answer.hang_before, disconnected):
            return
        exchange.status = answer.status
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers],
            }
        )
        if answer.frames is None:
            exchange.sent += answer.body
            await send({"type": "http.response.body", "body": answer.body})
            return
        fault = answer.fault
        for position, frame in enumerate(answer.frames):
            if fault is not None and position == fault.after:
                await self._fail_stream(fault, answer, exchange, send, disconnected)
                return
            if position and answer.chunk_delay and not await self._pause(answer.chunk_delay, disconnected):
                return
            if disconnected.is_set():
                return
            exchange.sent += frame
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _fail_stream(
        self, fault: StreamFault, answer: Answer, exchange: Exchange, send: Any, disconnected: asyncio.Event
    ) -> None:
        if fault.kind == "hang":
            await self._pause(fault.seconds, disconnected)
            return  # returning without the final body message drops the connection
        if fault.kind == "close":
            return
        if fault.kind == "truncate":
            await send({"type": "http.response.body", "body": b""})
            return
        exchange.sent += answer.fault_frame
        await send({"type": "http.response.body", "body": answer.fault_frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _pause(self, seconds: float, disconnected: asyncio.Event) -> bool:
        """Sleep up to `seconds`; False when the client left or the server is stopping first."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return True
            if self._closing.is_set():
                return False
            try:
                await asyncio.wait_for(disconnected.wait(), timeout=min(left, 0.05))
                return False
            except TimeoutError:
                continue


async def _watch_disconnect(receive: Any, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        continue
    disconnected.set()


class WholeBodyFake(ABC):
    """Base of the simpler fakes (Gemini, Responses) that answer each request with one whole body, computed from the
    request by `respond`; the ASGI side (lifespan, reading the body, writing the answer) is this class's, and so is
    the script: `script(*turns)` queues turns, `default` answers when the queue is empty. A turn is a list of the
    flavour's response parts, or a callable(request body) returning one."""

    default: Any
    _turns: deque[Any]

    def script(self, *turns: Any) -> None:
        self._turns.extend(turns)

    def next_turn(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        turn = self._turns.popleft() if self._turns else self.default
        return turn(body) if callable(turn) else turn

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = (await receive())["type"]
                await send({"type": f"{event}.complete"})
                if event == "lifespan.shutdown":
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, content_type, payload = self.respond(scope, raw)
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": payload})

    @abstractmethod
    def respond(self, scope: dict[str, Any], raw: bytes) -> tuple[int, bytes, bytes]:
        """(status, content type, body) for one request."""


def json_body(exchange: Exchange, flavour_message: str) -> Any:
    """The request's JSON, parsed once and kept on the exchange; `Rejected` 400 when it is not JSON."""
    try:
        exchange.json = orjson.loads(exchange.raw)
    except orjson.JSONDecodeError:
        raise Rejected(400, flavour_message) from None
    return exchange.json
