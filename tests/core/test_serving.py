"""Serving choices made for speed: `ccm run --server`, each server's graceful stop, and the tokenizer loaded at
startup on a thread (startup does not wait for it)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import ccm.tokens
from ccm.core.app import App
from ccm.service import Service, ServiceOptions, build_service
from ccm.table import Model
from tests.conftest import REPO
from tests.core.conftest import make_table, message_body

ROUTES = """\
provider anth {
  type anthropic
  url  "http://127.0.0.1:9"
}
model main = anth/claude-x
route {
  default -> main
}
"""


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_each_server_serves_and_stops_gracefully_with_status_0(server: str, tmp_path: Path) -> None:
    routes = tmp_path / "routes.ccm"
    routes.write_text(ROUTES)
    process = subprocess.Popen(
        [sys.executable, "-c", "from ccm.cli.main import main; main()", "run", str(routes), "--port", "0",
         "--server", server],
        cwd=tmp_path, env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        listening = None
        deadline = time.monotonic() + 20
        while listening is None and time.monotonic() < deadline:
            listening = re.search(r"listening on http://(\S+) \((\w+)\)", process.stderr.readline())
        assert listening is not None and listening.group(2) == server
        health = httpx.get(f"http://{listening.group(1)}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(20)
    assert status == 0


def test_an_unknown_server_is_refused(tmp_path: Path) -> None:
    routes = tmp_path / "routes.ccm"
    routes.write_text(ROUTES)
    result = subprocess.run(
        [sys.executable, "-c", "from ccm.cli.main import main; main()", "run", str(routes), "--server", "gunicorn"],
        cwd=tmp_path, env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path)}, capture_output=True, text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "gunicorn" in result.stderr


async def start_and_stop(service: Service) -> None:
    """Run the service's ASGI lifespan: startup, then shutdown."""
    messages = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await service.app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def service_of(tmp_path: Path, text: str, **options: Any) -> Service:
    routes = tmp_path / "routes.ccm"
    routes.write_text(text)
    return build_service(routes, {}, ServiceOptions(watch=False, **options))


Gates = tuple[threading.Event, threading.Event]  # (the load started, release the load)


@pytest.fixture
def slow_encoding(monkeypatch: pytest.MonkeyPatch) -> Gates:
    """`load_encoding` replaced by one that reports it started and then blocks until released."""
    started, release = threading.Event(), threading.Event()

    def load() -> None:
        started.set()
        release.wait(10)

    monkeypatch.setattr(ccm.tokens, "load_encoding", load)
    return started, release


async def test_startup_does_not_load_the_tokenizer_even_when_requests_are_counted(
    slow_encoding: Gates, tmp_path: Path
) -> None:
    started, release = slow_encoding
    # a model with a declared context: dispatch counts requests, but only those whose size does not rule it out
    await start_and_stop(service_of(tmp_path, ROUTES.replace("anth/claude-x", "anth/claude-x { context 200k }")))
    assert not started.wait(0.2)
    release.set()


async def test_a_request_too_small_to_reach_any_threshold_is_routed_without_the_tokenizer(
    slow_encoding: Gates, harness_factory: Any
) -> None:
    started, release = slow_encoding
    table = make_table(models=[Model(name="main", provider="anth", model="claude-upstream-1", context=200_000)])
    harness = harness_factory(table)
    app = App(harness.app.holder, records=harness.app.records)  # the real local counter
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        answer = await client.post("/v1/messages", json=message_body())
    assert answer.status_code == 200 and not started.is_set()
    release.set()


async def test_a_request_that_needs_a_count_loads_the_tokenizer_on_a_thread(
    monkeypatch: pytest.MonkeyPatch, harness_factory: Any
) -> None:
    started, release = threading.Event(), threading.Event()
    real_load = ccm.tokens.load_encoding

    def load() -> Any:
        started.set()
        release.wait(10)
        return real_load()

    monkeypatch.setattr(ccm.tokens, "load_encoding", load)
    # a context so small that the body's size cannot rule out a count
    table = make_table(models=[Model(name="main", provider="anth", model="claude-upstream-1", context=100)])
    harness = harness_factory(table)
    app = App(harness.app.holder, records=harness.app.records)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        routed = asyncio.create_task(client.post("/v1/messages", json=message_body()))
        while not started.is_set():
            await asyncio.sleep(0.01)
        assert (await client.get("/health")).status_code == 200  # the loop serves while the tokenizer loads
        assert not routed.done()
        release.set()
        assert (await routed).status_code == 200


async def test_no_tokenizer_load_when_nothing_is_counted_locally(slow_encoding: Gates, tmp_path: Path) -> None:
    started, release = slow_encoding
    # forwarded counts, no tokens rule, no context
    await start_and_stop(service_of(tmp_path, "settings { count_tokens anth }\n" + ROUTES))
    assert not started.wait(0.2)
    release.set()


async def test_a_table_counting_only_for_count_tokens_loads_the_tokenizer_on_the_first_count_on_a_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started, release = threading.Event(), threading.Event()
    real_load = ccm.tokens.load_encoding

    def load() -> Any:  # a slow load that ends with the real tokenizer
        started.set()
        release.wait(10)
        return real_load()

    monkeypatch.setattr(ccm.tokens, "load_encoding", load)
    service = service_of(tmp_path, ROUTES)  # count_tokens answered locally; no tokens rule, no context
    await start_and_stop(service)
    assert not started.wait(0.2)  # not at startup
    app = service.api
    body = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        counts = [asyncio.create_task(client.post("/v1/messages/count_tokens", json=body)) for _ in range(3)]
        while not started.is_set():  # the first count started the load, on a thread...
            await asyncio.sleep(0.01)
        health = await client.get("/health")  # ...and the event loop keeps serving meanwhile
        assert health.status_code == 200 and not any(count.done() for count in counts)
        release.set()
        answers = [await count for count in counts]
    # the three counts waited for that one load, then counted
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert len({answer.json()["input_tokens"] for answer in answers}) == 1


async def test_no_tokenizer_load_with_an_injected_counter(slow_encoding: Gates, tmp_path: Path) -> None:
    started, release = slow_encoding
    await start_and_stop(service_of(tmp_path, ROUTES, count_tokens=lambda body: 1))
    assert not started.wait(0.2)
    release.set()
