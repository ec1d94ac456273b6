"""Serving the app with hypercorn: socket binding, the event loop, workers, graceful shutdown.

`serve(app, host, port)` runs one process on uvloop when it is installed (asyncio otherwise) until SIGINT/SIGTERM,
then stops accepting, lets in-flight requests finish for up to `GRACEFUL_SECONDS`, and closes the providers'
clients through the app's lifespan shutdown. The listening socket is bound here, before hypercorn starts, so port 0
works and the log names the real address.

With `workers > 1` hypercorn spawns that many processes sharing the socket; each builds its own app from the route
file (`worker_app`, which reads `CCM_ROUTES_FILE`), since apps cannot cross a process boundary.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ccm.core")

GRACEFUL_SECONDS = 30.0  # long enough for most streams in flight to finish on Ctrl-C / SIGTERM
ROUTES_FILE_VARIABLE = "CCM_ROUTES_FILE"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop  # type: ignore[no-any-return]


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
    config.keep_alive_timeout = 75  # Claude Code keeps connections between turns; don't drop them every 5 s
    return config


def serve(app: Any, host: str, port: int) -> None:
    """Serve `app` in this process until a shutdown signal."""
    from hypercorn.asyncio import serve as hypercorn_serve

    sock = bind(host, port)
    address = _address(sock)
    config = hypercorn_config(sock)
    log.info("listening on http://%s", address)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(hypercorn_serve(app, config))


def serve_workers(routes_file: str, host: str, port: int, workers: int) -> int:
    """Serve with `workers` processes, each building its app from `routes_file`. Returns the exit code."""
    from hypercorn.run import run as hypercorn_run

    sock = bind(host, port)
    address = _address(sock)
    os.environ[ROUTES_FILE_VARIABLE] = os.path.abspath(routes_file)
    config = hypercorn_config(sock, workers)
    config.application_path = "ccm.core.server:worker_app()"
    config.worker_class = "uvloop" if loop_factory() is not asyncio.new_event_loop else "asyncio"
    log.info("listening on http://%s with %d workers", address, workers)
    return int(hypercorn_run(config))


def worker_app() -> Any:
    """The app of one spawned worker (called by hypercorn in the worker process)."""
    from ccm.cli.serve import build_app, configure_logging, load_table, with_reload

    configure_logging(os.environ.get("CCM_LOG_LEVEL", "info"))
    table = load_table(os.environ[ROUTES_FILE_VARIABLE], report=False)  # the parent reported warnings once
    return with_reload(build_app(table, os.environ, report=False), os.environ[ROUTES_FILE_VARIABLE], os.environ)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
