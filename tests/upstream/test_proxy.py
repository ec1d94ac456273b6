"""A proxy named in the environment is honoured: httpx applies HTTP_PROXY/HTTPS_PROXY/ALL_PROXY/NO_PROXY only to a
client built without a transport of its own, so `make_client` builds that one when the environment names a proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from ccm.table import Literal_, Provider, Timeouts
from ccm.upstream.client import PooledClient, iter_body, make_client, open_response, read_body, resolve_endpoint
from ccm.upstream.http1 import Http1Transport

ANSWER = b'{"ok":true}'
pytestmark = pytest.mark.usefixtures("without_proxies")  # each test names the proxy it wants


@asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Answers every request with ANSWER and records its request line (a proxy sees the absolute URL there)."""
    lines: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines.append(head.split(b"\r\n", 1)[0])
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(ANSWER), ANSWER))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", lines
    finally:
        server.close()


async def post(url: str) -> bytes:
    provider = Provider(name="up", type="openai", url=Literal_(value=url), auth="bearer")
    client = make_client(provider)
    try:
        response = await open_response(client, resolve_endpoint(provider, {}), f"{url}/chat/completions", b"{}", [])
        try:
            return await read_body(response, Timeouts())
        finally:
            await response.aclose()
    finally:
        await client.aclose()


def test_without_a_proxy_the_client_uses_ccms_transport() -> None:
    client = make_client(Provider(name="up", type="openai", url=Literal_(value="http://x"), auth="bearer"))
    assert isinstance(client, PooledClient) and isinstance(client.direct, Http1Transport)


async def test_a_proxy_named_in_the_environment_carries_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    async with recording_server() as (proxy, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        assert await post("http://upstream.invalid/v1") == ANSWER
    assert seen == [b"POST http://upstream.invalid/v1/chat/completions HTTP/1.1"]


async def test_no_proxy_sends_its_hosts_straight(monkeypatch: pytest.MonkeyPatch) -> None:
    async with recording_server() as (proxy, through_proxy), recording_server() as (upstream, straight):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert await post(f"{upstream}/v1") == ANSWER
    assert through_proxy == [] and straight == [b"POST /v1/chat/completions HTTP/1.1"]


async def test_through_a_proxy_a_gap_within_idle_is_not_cut_at_first_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's own transport times every socket read with `read`: it gets the longer of first_byte and idle, and the
    head's wait is bounded by first_byte separately."""

    async def thinking(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nevent 1\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)  # longer than first_byte, within idle
        writer.write(b"7\r\nevent 2\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(thinking, "127.0.0.1", 0)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    timeouts = Timeouts(first_byte=0.25, idle=2.0)
    provider = Provider(name="up", type="openai", url=Literal_(value="http://upstream.invalid/v1"), auth="bearer",
                        timeouts=timeouts)
    client = make_client(provider)
    assert isinstance(client, PooledClient) and client.direct is None
    response = await open_response(client, resolve_endpoint(provider, {}), "http://upstream.invalid/v1/x", b"{}", [])
    assert [chunk async for chunk in iter_body(response, timeouts)] == [b"event 1", b"event 2"]
    await response.aclose()
    await client.aclose()
    server.close()


def test_a_socks_proxy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    client = make_client(Provider(name="up", type="openai", url=Literal_(value="http://x"), auth="bearer"))
    assert isinstance(client, PooledClient) and client.direct is None  # httpx's own client, with socksio


def test_a_proxy_httpx_cannot_use_is_said_once_and_calls_go_direct(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ALL_PROXY", "gopher://127.0.0.1:70")
    client = make_client(Provider(name="up", type="openai", url=Literal_(value="http://x"), auth="bearer"))
    assert isinstance(client, PooledClient) and isinstance(client.direct, Http1Transport)
    assert "provider 'up' connects directly: the proxy named in the environment cannot be used" in caplog.text
