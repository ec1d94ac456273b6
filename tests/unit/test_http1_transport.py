"""The aiohttp transport under `make_client`, against a scripted HTTP/1.1 upstream on 127.0.0.1: failures mean what
they meant with httpx's own transport, bodies arrive as they are sent, and closing decides the connection's fate."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from ccm.errors import UpstreamError
from ccm.providers.http import iter_body, make_client, open_response, read_body, resolve_endpoint
from ccm.table import Literal_, Provider, Timeouts

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """Serves each connection with `script`; counts connections and notices those the client closed."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.client_hung_up = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await _read_request(reader):
                await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        self.client_hung_up.set()
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return False
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    await reader.readexactly(length)
    return True


@asynccontextmanager
async def upstream(script: Script) -> AsyncIterator[tuple[str, Upstream]]:
    served = Upstream(script)
    server = await asyncio.start_server(served.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", served
    finally:
        server.close()


def provider(url: str) -> Provider:
    return Provider(name="up", type="openai", url=Literal_(value=url), auth="bearer")


async def post(url: str, timeouts: Timeouts = Timeouts()) -> tuple[httpx.AsyncClient, httpx.Response]:
    client = make_client(provider(url))
    endpoint = resolve_endpoint(provider(url).model_copy(update={"timeouts": timeouts}), {})
    return client, await open_response(client, endpoint, f"{url}/chat/completions", b'{"x":1}', [])


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_an_upstream_silent_before_its_headers_is_a_timeout_not_a_connect_failure() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with upstream(silent) as (url, _):
        with pytest.raises(UpstreamError) as raised:
            await post(url, Timeouts(first_byte=0.2))
    assert (raised.value.status, raised.value.reason) == (504, "timeout")


async def test_a_refused_connection_is_a_connect_failure() -> None:
    async with upstream(lambda reader, writer: asyncio.sleep(0)) as (url, _):
        pass  # closed: nothing listens on the port any more
    with pytest.raises(UpstreamError) as raised:
        await post(url)
    assert (raised.value.status, raised.value.reason) == (502, "connect")


async def test_a_body_cut_short_is_a_transport_failure() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    async with upstream(cut) as (url, _):
        client, response = await post(url)
        with pytest.raises(UpstreamError) as raised:
            await read_body(response, Timeouts())
        await client.aclose()
    assert raised.value.status == 502


async def test_chunks_are_handed_on_as_they_arrive() -> None:
    release = asyncio.Event()

    async def two_events(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(STREAM_HEAD + chunked(b"data: 1\n\n"))
        await writer.drain()
        await release.wait()  # the second event is sent only once the client has the first
        writer.write(chunked(b"data: 2\n\n") + b"0\r\n\r\n")
        await writer.drain()

    async with upstream(two_events) as (url, _):
        client, response = await post(url)
        chunks = iter_body(response, Timeouts())
        assert await chunks.__anext__() == b"data: 1\n\n"
        release.set()
        assert [chunk async for chunk in chunks] == [b"data: 2\n\n"]
        await response.aclose()
        await client.aclose()


async def test_a_finished_response_leaves_its_connection_for_the_next_request() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = gzip.compress(b'{"ok":true}')
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with upstream(answer) as (url, served):
        client = make_client(provider(url))
        endpoint = resolve_endpoint(provider(url), {})
        for _ in range(3):
            response = await open_response(client, endpoint, f"{url}/chat/completions", b"{}", [])
            assert await read_body(response, Timeouts()) == b'{"ok":true}'  # decoded by httpx, as before
            await response.aclose()
        await client.aclose()
    assert served.connections == 1


async def test_closing_an_unfinished_stream_hangs_up_on_the_upstream() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(STREAM_HEAD)
        while True:
            writer.write(chunked(b"data: more\n\n"))
            await writer.drain()
            await asyncio.sleep(0.01)

    async with upstream(endless) as (url, served):
        client, response = await post(url)
        chunks = iter_body(response, Timeouts())
        assert (await chunks.__anext__()).startswith(b"data: more")
        await chunks.aclose()
        await response.aclose()  # what a cancelled relay does: the client left mid-stream
        await asyncio.wait_for(served.client_hung_up.wait(), 2)
        await client.aclose()


async def test_the_idle_timeout_is_kept_by_the_socket_timer_once_the_body_started() -> None:
    async def one_event_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(STREAM_HEAD + chunked(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(5)

    async with upstream(one_event_then_silence) as (url, _):
        client, response = await post(url, Timeouts(first_byte=5, idle=0.2))
        chunks = iter_body(response, Timeouts(first_byte=5, idle=0.2))
        assert await chunks.__anext__() == b"data: 1\n\n"
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamError) as raised:
            await chunks.__anext__()
        assert 0.15 <= asyncio.get_running_loop().time() - started < 2
        assert (raised.value.status, raised.value.reason) == (504, "timeout") and "0.2s" in raised.value.message
        await response.aclose()
        await client.aclose()


async def test_a_stream_whose_end_follows_done_in_a_later_read_keeps_its_connection() -> None:
    from ccm.providers.base import Call
    from ccm.providers.openai import OpenAIAdapter
    from ccm.table import Model

    async def done_then_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        delta = b'{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}'
        writer.write(STREAM_HEAD + chunked(b"data: " + delta + b"\n\n", b"data: [DONE]\n\n"))
        await writer.drain()
        await asyncio.sleep(0.01)  # the chunked terminator comes in a read of its own
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with upstream(done_then_end) as (url, served):
        client = make_client(provider(url))
        adapter = OpenAIAdapter(provider(url), resolve_endpoint(provider(url), {}), client)
        model = Model(name="gpt", provider="up", model="gpt-up")
        body = {"model": "gpt", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            reply = await adapter.send(Call(body, b"", {}, True, model))
            assert reply.stream is not None
            assert b"message_stop" in b"".join([chunk async for chunk in reply.stream])
            await reply.aclose()
        await client.aclose()
    assert served.connections == 1
