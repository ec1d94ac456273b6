"""The reload suite's harness: a route file on disk, served by the real app under hypercorn on 127.0.0.1 (in this
test's event loop, so the reloader's SIGHUP handler and watcher run as they do under `ccm run`), against
`FakeAnthropic` on loopback.

Each valid version of the file routes `main` to a different upstream model (`model-v1`, `model-v2`, …); the fake
echoes the model it was asked for, so every answer names the table that served it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from ccm.core.reload import Reloader
from ccm.core.runtime import RuntimeHolder
from ccm.service import ServiceOptions, build_service
from tests.fakes import FakeAnthropic, Reply, serve

UPSTREAM_KEY = "sk-ant-fake"
REQUEST = {"model": "claude-sonnet-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "ccm-local"}


def routes(version: int, *, provider: str = "up", url_variable: str = "UPSTREAM_URL", tests: str = "") -> str:
    """A valid route file whose `main` model is `model-v{version}` on `provider`."""
    return f"""# version {version}
provider {provider} {{
  type anthropic
  url  env("{url_variable}")
  key  env("UPSTREAM_KEY")
}}

model main = {provider}/model-v{version}
model spare = {provider}/spare-model

route {{
  default -> main
}}

test "everything goes to main" {{
  request {{ model: "claude-sonnet-4-5", max_tokens: 32, messages: [{{ role: "user", content: "hi" }}] }}
  expect main
}}
{tests}"""


# An unknown model on line 12: the compiler must reject it with file, line, column and a caret.
BROKEN = routes(99).replace("default -> main", "default -> mian")
# Compiles, but its own test expects the wrong model.
FAILING_TEST = routes(98).replace("expect main", "expect spare")


@dataclass
class Served:
    url: str
    client: httpx.AsyncClient
    holder: RuntimeHolder
    reloader: Reloader
    route_file: Path

    def serving(self) -> str:
        """The upstream model the current table routes to."""
        return self.holder.current.table.models["main"].model

    async def ask(self, **extra: Any) -> httpx.Response:
        return await self.client.post("/v1/messages", json={**REQUEST, **extra}, headers=HEADERS)

    async def health(self) -> dict[str, Any]:
        response = await self.client.get("/health")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until `check()` holds (polling every 5 ms), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def serve_routes(
    route_file: Path, environ: Mapping[str, str], arrivals: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[Served]:
    """Serve the file with reload. With `arrivals`, each request carrying `x-test-id` is recorded there with the
    upstream model the table current at its arrival routes `main` to."""
    service = build_service(route_file, environ, ServiceOptions(count_tokens=lambda body: 1, **options))
    holder, reloader = service.holder, service.reloader
    app = service.app
    if arrivals is not None:
        app = _recording_arrivals(app, holder, arrivals)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.graceful_timeout = 2.0
    stop = asyncio.Event()
    server = asyncio.ensure_future(hypercorn_serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            served = Served(url, client, holder, reloader, route_file)
            await _until_up(client, server)
            yield served
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


def _recording_arrivals(app: Any, holder: RuntimeHolder, arrivals: dict[str, str]) -> Any:
    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-id":
                    # Nothing awaits between here and the app's own read of `holder.current`: the same runtime.
                    arrivals[value.decode()] = holder.current.table.models["main"].model
        await app(scope, receive, send)

    return recording


async def _until_up(client: httpx.AsyncClient, server: asyncio.Future[Any]) -> None:
    deadline = time.monotonic() + 10
    while True:
        if server.done():
            server.result()  # raises why it stopped
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the server did not answer /health within 10 s")
        await asyncio.sleep(0.01)


@pytest.fixture
def upstream() -> Iterator[tuple[str, FakeAnthropic]]:
    with serve(FakeAnthropic(UPSTREAM_KEY, default=Reply(text="Hello from the fake upstream."))) as (url, fake):
        yield url, fake
    assert not fake.crashes, "\n".join(fake.crashes)


@pytest.fixture
def environ(upstream: tuple[str, FakeAnthropic]) -> dict[str, str]:
    return {"UPSTREAM_URL": upstream[0], "UPSTREAM_KEY": UPSTREAM_KEY}


def write(path: Path, text: str) -> None:
    """Save like an editor that writes in place."""
    path.write_text(text)


def save_by_rename(path: Path, text: str) -> None:
    """Save like an editor that writes a temporary file and renames it over the original (vim, JetBrains)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
