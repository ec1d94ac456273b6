"""Serve an ASGI app with hypercorn on 127.0.0.1, on a free port, in a background thread with its own event loop.

The listening socket is bound (port 0) and put in listen mode before the thread starts, so the URL is usable the
moment `serve` yields: connections wait in the backlog until hypercorn accepts them. Sync and async tests can both
use it, since nothing runs on the test's own loop.

    with serve(FakeOpenAI()) as (url, fake):
        httpx.post(f"{url}/v1/chat/completions", ...)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

App = TypeVar("App")


class LoopbackServer:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"fake-upstream-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)
        if self._failure is not None:
            raise RuntimeError(f"fake upstream on port {self.port} failed to start") from self._failure

    def stop(self) -> None:
        close = getattr(self.app, "close", None)
        if close is not None:
            close()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError(f"fake upstream on port {self.port} did not stop within 10 s")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # noqa: BLE001 - surfaced to the test thread by start()/stop()
            self._failure = error
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        config = Config()
        # Hand the descriptor over: hypercorn wraps it in its own socket object and closes it at shutdown.
        config.bind = [f"fd://{self._sock.detach()}"]
        config.graceful_timeout = 1.0
        config.keep_alive_timeout = 30.0
        config.accesslog = None
        config.errorlog = None  # a dropped connection is a scripted fault here, not an error worth printing
        self._ready.set()
        await hypercorn_serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]


@contextmanager
def serve(app: App) -> Iterator[tuple[str, App]]:
    """Yields (base URL, app) while the app serves on 127.0.0.1; stops it on exit."""
    server = LoopbackServer(app)
    server.start()
    try:
        yield server.url, app
    finally:
        server.stop()
