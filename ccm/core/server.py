"""Serving the app: socket binding, the ASGI server, the event loop, workers, graceful shutdown.

`serve(app, host, port, server=...)` runs one process on uvloop when it is installed (asyncio otherwise) until
SIGINT/SIGTERM, then stops accepting, lets in-flight requests finish for up to `GRACEFUL_SECONDS`, and closes the
providers' clients through the app's lifespan shutdown. The listening socket is bound here, before the server
starts, so port 0 works and the log names the real address.

Two servers can run the (plain ASGI) app, chosen by `ccm run --server`:

    uvicorn    the default: with httptools' parser it costs a fraction of hypercorn's time per request
               (docs/performance-notes.md)
    hypercorn  pure Python (h11/h2); also what the core's tests serve with

With `workers > 1` the server spawns that many processes sharing the socket; each builds its own app by calling the
factory the caller names (`module:function`, e.g. `ccm.service:worker_app`), since apps cannot cross a process
boundary: the caller passes what the factory needs in the environment.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ccm.core.limits import EdgeLimits, ServerLimits, error_body

log = logging.getLogger("ccm.core")

GRACEFUL_SECONDS = 30.0  # long enough for most streams in flight to finish on Ctrl-C / SIGTERM
KEEP_ALIVE_SECONDS = 75  # Claude Code keeps connections between turns; don't drop them every 5 s
APP_FACTORY_VARIABLE = "CCM_APP_FACTORY"
SERVERS = ("uvicorn", "hypercorn")
DEFAULT_SERVER = "uvicorn"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    # listening right away: connections made as soon as the address is logged wait in the backlog, not refused
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def hypercorn_config(sock: socket.socket, workers: int = 1, limits: ServerLimits | None = None) -> Any:
    """Hypercorn's config, with its equivalents of ccm's connection-level limits where it has them: the request head
    is capped (h11 answers 400 past `max_head_bytes`, HTTP/2 header lists likewise); a connection's head has until
    the keep-alive timeout (75 s), hypercorn's only timer before a request starts (its `read_timeout` bounds every
    read, so would cut streams whose client sends nothing for a while). It has no connection cap."""
    from hypercorn.config import Config

    limits = limits or ServerLimits()
    config = Config()
    # hypercorn adopts the descriptor; `detach` hands it over so our socket object never closes it behind its back
    config.bind = [f"fd://{sock.detach()}"]
    config.workers = workers
    config.graceful_timeout = GRACEFUL_SECONDS
    config.accesslog = None  # the app logs one line per request itself (ccm.request)
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    config.h11_max_incomplete_size = limits.max_head_bytes
    config.h2_max_header_list_size = limits.max_head_bytes
    return config


class _HeadWithBody:
    """A connection's transport that sends a response's head together with the first body bytes.

    uvicorn writes a response's status line and headers as soon as the app starts the response, and the body with
    a write of its own: two syscalls and two TCP segments for every answer, and a client woken twice. The app sends
    the start and the body (or a stream's first event) one right after the other, so the head is held until the
    next write joins it; if none comes in this turn of the event loop, it goes out alone when the turn ends."""

    __slots__ = ("_transport", "_head", "_loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1.1 "):  # a head (a body chunk that looks like one only waits for the turn)
            self._head = data
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # the rest of asyncio.Transport: pause_reading, get_extra_info…
        return getattr(self._transport, name)


class HttpToolsOneWrite(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through `_HeadWithBody`, with the limits only a connection can apply
    (`ccm.core.limits`): a connection over `max_connections` gets 529 and is closed (with one log line when the cap
    is reached); a request whose head (request line and headers) is not complete `head_timeout` seconds after its
    first byte, or after the connection opened, gets 408 and is closed (idle and 1-byte-per-second connections were
    held forever); a head over `max_head_bytes`, or with more than `max_headers` headers, gets 431 (a 16 MB header
    was accepted, and four unfinished 300 MB ones took 839 MB)."""

    limits: ClassVar[ServerLimits] = ServerLimits()

    @classmethod
    def with_limits(cls, limits: ServerLimits) -> type[HttpToolsOneWrite]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the bytes arriving are a request's head
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes of the head so far, for a blank line split across two reads
        self._too_many_headers = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_HeadWithBody(transport))  # type: ignore[arg-type]
        if _capacity.full(len(self.connections), self.limits.max_connections):
            self._refuse(529, "overloaded_error", "ccm has too many connections open; retry shortly")
            return
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            if end < 0 and self._head_tail:
                joined = (self._head_tail + data[:3]).find(b"\r\n\r\n")
                end = joined - len(self._head_tail) if joined >= 0 else -1
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(431, "invalid_request_error",
                             f"Request header fields are larger than {self.limits.max_head_bytes} bytes")
                return
            self._head_tail = data[-3:]
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.limits.max_headers:
            self._too_many_headers = True  # and kept no more of them
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._in_head = False
        if self._too_many_headers:
            self._refuse(431, "invalid_request_error", f"Request has more than {self.limits.max_headers} headers")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_head, self._head_bytes, self._head_tail = True, 0, b""  # what follows is the next request's head

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408, "invalid_request_error",
                         f"Request headers were not received within {self.limits.head_timeout:g} s")

    def _refuse(self, status: int, error_type: str, message: str) -> None:
        """Answer `status` with an Anthropic error and close the connection; nothing more is read from it."""
        self._refused = True
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        body = error_body(error_type, message)
        head = [STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
        if status == 529:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()


class _Capacity:
    """Whether the connection cap is reached, logging once each time it is (not once per refused connection)."""

    def __init__(self) -> None:
        self.reached = False

    def full(self, open_connections: int, limit: int) -> bool:
        if open_connections > limit:
            if not self.reached:
                self.reached = True
                log.warning("connection limit reached: %d connections open; new ones are refused (529) until some "
                            "close", limit)
            return True
        if self.reached and open_connections <= limit * 0.9:
            self.reached = False
            log.info("connections back under the limit (%d open, limit %d)", open_connections, limit)
        return False


_capacity = _Capacity()


class UvicornServer(uvicorn.Server):
    """uvicorn's server, ending a graceful stop with exit status 0 as hypercorn does: uvicorn re-raises the stop
    signal once it has shut down, so the process would otherwise end "killed by SIGTERM"."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        self.should_exit = True


def uvicorn_config(app: Any, workers: int = 1, limits: ServerLimits | None = None) -> uvicorn.Config:
    _quiet("uvicorn.error")  # its start/stop chatter at INFO; ccm logs its own lines, uvicorn's errors still show
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        interface="asgi3",  # the app is ASGI 3: skip uvicorn's per-app detection
        lifespan="on",  # the reloader and the clients' shutdown live in the lifespan
        # worker processes import the protocol by name, so only the default limits reach them
        http=HttpToolsOneWrite if limits is None else HttpToolsOneWrite.with_limits(limits),
        ws="none",
        proxy_headers=False,  # no X-Forwarded-* rewriting middleware on every request: ccm does not use the client IP
        server_header=False,
        access_log=False,  # the app logs one line per request itself (ccm.request)
        log_config=None,  # keep ccm's logging set-up
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
    )


def serve(app: Any, host: str, port: int, server: str = DEFAULT_SERVER, limits: ServerLimits | None = None) -> None:
    """Serve `app` in this process until a shutdown signal, behind the connection-level limits (`ccm.core.limits`)."""
    limits = limits or ServerLimits()
    sock = bind(host, port)
    log.info("listening on http://%s (%s)", _address(sock), server)
    _on_asyncio()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if server == "uvicorn":
            runner.run(UvicornServer(uvicorn_config(EdgeLimits(app, limits), limits=limits)).serve(sockets=[sock]))
        else:
            from hypercorn.asyncio import serve as hypercorn_serve

            runner.run(hypercorn_serve(EdgeLimits(app, limits), hypercorn_config(sock, limits=limits)))  # type: ignore[arg-type]


def serve_workers(app_factory: str, host: str, port: int, workers: int, server: str = DEFAULT_SERVER) -> int:
    """Serve with `workers` processes, each building its app with `app_factory` (`module:function`) and serving it
    behind the default connection-level limits (`limited_worker_app`). Returns the exit code."""
    sock = bind(host, port)
    address = _address(sock)
    log.info("listening on http://%s with %d %s workers", address, workers, server)
    os.environ[APP_FACTORY_VARIABLE] = app_factory  # what limited_worker_app builds, in each worker
    if server == "uvicorn":
        from uvicorn.supervisors import Multiprocess

        config = uvicorn_config(f"{__name__}:limited_worker_app", workers)
        Multiprocess(config, sockets=[sock]).run()
        return 0
    from hypercorn.run import run as hypercorn_run

    config = hypercorn_config(sock, workers)
    config.application_path = f"{__name__}:limited_worker_app()"
    config.worker_class = "uvloop" if loop_factory() is not asyncio.new_event_loop else "asyncio"
    return int(hypercorn_run(config))


def limited_worker_app() -> Any:
    """A worker's app: the one `serve_workers` was asked to build (named in CCM_APP_FACTORY), behind `EdgeLimits`."""
    module, _, name = os.environ[APP_FACTORY_VARIABLE].partition(":")
    _on_asyncio()  # in the worker's main task: the connections' tasks, made after it, copy its context
    return EdgeLimits(getattr(importlib.import_module(module), name)())


def _on_asyncio() -> None:
    """Tell anyio (through sniffio's context variable) that the event loop is asyncio's, as `anyio.run` does: else
    each anyio call on a request's path (a cancel scope, `current_time`) sniffs for the running library again
    (~9k instructions each, a few a request). The server's tasks copy this context."""
    try:
        import sniffio
    except ImportError:  # without sniffio, anyio asks asyncio for its running loop: cheap already
        return
    sniffio.current_async_library_cvar.set("asyncio")


def _quiet(name: str) -> None:
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
