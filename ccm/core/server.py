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
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("ccm.core")

GRACEFUL_SECONDS = 30.0  # long enough for most streams in flight to finish on Ctrl-C / SIGTERM
KEEP_ALIVE_SECONDS = 75  # Claude Code keeps connections between turns; don't drop them every 5 s
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


def hypercorn_config(sock: socket.socket, workers: int = 1) -> Any:
    from hypercorn.config import Config

    config = Config()
    # hypercorn adopts the descriptor; `detach` hands it over so our socket object never closes it behind its back
    config.bind = [f"fd://{sock.detach()}"]
    config.workers = workers
    config.graceful_timeout = GRACEFUL_SECONDS
    config.accesslog = None  # the app logs one line per request itself (ccm.request)
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
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
    """uvicorn's httptools protocol, writing through `_HeadWithBody`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_HeadWithBody(transport))  # type: ignore[arg-type]


class UvicornServer(uvicorn.Server):
    """uvicorn's server, ending a graceful stop with exit status 0 as hypercorn does: uvicorn re-raises the stop
    signal once it has shut down, so the process would otherwise end "killed by SIGTERM"."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        self.should_exit = True


def uvicorn_config(app: Any, workers: int = 1) -> uvicorn.Config:
    _quiet("uvicorn.error")  # its start/stop chatter at INFO; ccm logs its own lines, uvicorn's errors still show
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        interface="asgi3",  # the app is ASGI 3: skip uvicorn's per-app detection
        lifespan="on",  # the reloader and the clients' shutdown live in the lifespan
        http=HttpToolsOneWrite,
        ws="none",
        proxy_headers=False,  # no X-Forwarded-* rewriting middleware on every request: ccm does not use the client IP
        server_header=False,
        access_log=False,  # the app logs one line per request itself (ccm.request)
        log_config=None,  # keep ccm's logging set-up
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
    )


def serve(app: Any, host: str, port: int, server: str = DEFAULT_SERVER) -> None:
    """Serve `app` in this process until a shutdown signal."""
    sock = bind(host, port)
    log.info("listening on http://%s (%s)", _address(sock), server)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if server == "uvicorn":
            runner.run(UvicornServer(uvicorn_config(app)).serve(sockets=[sock]))
        else:
            from hypercorn.asyncio import serve as hypercorn_serve

            runner.run(hypercorn_serve(app, hypercorn_config(sock)))


def serve_workers(app_factory: str, host: str, port: int, workers: int, server: str = DEFAULT_SERVER) -> int:
    """Serve with `workers` processes, each building its app with `app_factory` (`module:function`). Returns the
    exit code."""
    sock = bind(host, port)
    address = _address(sock)
    log.info("listening on http://%s with %d %s workers", address, workers, server)
    if server == "uvicorn":
        from uvicorn.supervisors import Multiprocess

        config = uvicorn_config(app_factory, workers)
        Multiprocess(config, sockets=[sock]).run()
        return 0
    from hypercorn.run import run as hypercorn_run

    config = hypercorn_config(sock, workers)
    config.application_path = f"{app_factory}()"
    config.worker_class = "uvloop" if loop_factory() is not asyncio.new_event_loop else "asyncio"
    return int(hypercorn_run(config))


def _quiet(name: str) -> None:
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
