"""ccm's own HTTP/1.1 transport (`ccm.upstream.http1`) under `make_client`, against a scripted HTTP/1.1 upstream on
127.0.0.1: failures mean what they meant with httpx's own transport, bodies arrive as they are sent (and stop being
read when ccm stops reading), and closing decides the connection's fate."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trustme

from ccm.errors import UpstreamError
from ccm.table import Literal_, Provider, Timeouts
from ccm.upstream import http1
from ccm.upstream.client import Endpoint, iter_body, make_client, open_response, read_body, resolve_endpoint
from ccm.upstream.http1 import HIGH_WATER, Http1Transport, Pool

pytestmark = pytest.mark.usefixtures("without_proxies")  # ccm's own transport is what is under test

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """Serves each connection with `script` (once per request read); counts the requests each connection carried
    and notices those the client closed."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[int] = []  # requests read, per connection, in the order the connections opened
        self.writers: list[asyncio.StreamWriter] = []
        self.client_hung_up = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return len(self.requests)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.requests)
        self.requests.append(0)
        self.writers.append(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        try:
            while await _read_request(reader):
                self.requests[index] += 1
                await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # `stop`: a cancelled handler task would be logged by asyncio's server
            writer.transport.abort()
            return
        self.client_hung_up.set()
        writer.close()

    async def stop(self) -> None:
        """Ends the connections still being served (a script still sleeping or reading, say)."""
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers)


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
async def upstream(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, Upstream]]:
    served = Upstream(script)
    server = await asyncio.start_server(served.serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1", served
    finally:
        server.close()
        await served.stop()


def provider(url: str) -> Provider:
    return Provider(name="up", type="openai", url=Literal_(value=url), auth="bearer")


async def post(url: str, timeouts: Timeouts = Timeouts()) -> tuple[httpx.AsyncClient, httpx.Response]:
    client = make_client(provider(url))
    endpoint = resolve_endpoint(provider(url).model_copy(update={"timeouts": timeouts}), {})
    return client, await open_response(client, endpoint, f"{url}/chat/completions", b'{"x":1}', [])


async def post_through(transport: Http1Transport, url: str) -> bytes:
    """POST `{}` straight to `transport` and read the whole answer."""
    response = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
    try:
        return await response.aread()
    finally:
        await response.aclose()


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
    from ccm.providers.openai.adapter import OpenAIAdapter
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


# --- connections: reuse, replacement, framing -------------------------------------------------------------------

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(OK)
    await writer.drain()


def client_for(url: str, **settings: object) -> tuple[httpx.AsyncClient, Endpoint]:
    """A pooled client for the upstream at `url`, and its endpoint; `settings` update the Provider."""
    configured = provider(url).model_copy(update=settings)
    return make_client(configured), resolve_endpoint(configured, {})


async def ask(client: httpx.AsyncClient, endpoint: Endpoint) -> bytes:
    """One request read to the end and closed (its connection goes back to the pool when it can)."""
    response = await open_response(client, endpoint, f"{endpoint.url}/chat/completions", b'{"x":1}', [])
    try:
        return await read_body(response, endpoint.timeouts)
    finally:
        await response.aclose()


def pool_of(client: httpx.AsyncClient) -> Pool:
    transport = client.direct  # type: ignore[attr-defined]
    assert isinstance(transport, Http1Transport)
    return transport.pool


async def settle(condition: Callable[[], bool], within: float = 1.0) -> None:
    """Waits until `condition` holds (the client noticed something the upstream did), failing after `within`."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_kept_connection_the_upstream_closed_meanwhile_is_replaced_and_the_request_sent_once() -> None:
    async with upstream(answer_ok) as (url, served):
        client, endpoint = client_for(url)
        assert await ask(client, endpoint) == b'{"ok":true}'
        [kept] = [c for idle in pool_of(client).idle.values() for c in idle]
        served.writers[0].get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        assert not kept.closed  # no await since the hang-up: the client cannot have noticed it, and sends on `kept`
        resends = http1.RESENDS.set(0)
        assert await ask(client, endpoint) == b'{"ok":true}'
        assert http1.RESENDS.get() == 1  # said to the core: the attempt's record shows the POST went out twice
        http1.RESENDS.reset(resends)
        await client.aclose()
    # the request sent on the dead connection was refused by the upstream's kernel (reset), not read: the upstream
    # saw the second request once, on a new connection
    assert served.requests == [1, 1]


async def test_a_kept_connection_the_upstream_closed_while_idle_is_not_reused() -> None:
    async def answer_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_ok(reader, writer)  # no `connection: close`: the upstream closes without a word
        writer.close()

    async with upstream(answer_then_hang_up) as (url, served):
        client, endpoint = client_for(url)
        assert await ask(client, endpoint) == b'{"ok":true}'
        await settle(lambda: not pool_of(client).open)  # the client noticed the hang-up and dropped the connection
        assert await ask(client, endpoint) == b'{"ok":true}'
        await client.aclose()
    assert served.requests == [1, 1]


async def test_an_answer_saying_connection_close_does_not_leave_its_connection_for_the_next_request() -> None:
    async def answer_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # says `close` but keeps the socket open: the client must go by the header, not wait for the hang-up
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with upstream(answer_close) as (url, served):
        client, endpoint = client_for(url)
        assert await ask(client, endpoint) == b"ok"
        await asyncio.wait_for(served.client_hung_up.wait(), 1)  # the client closed it itself
        assert await ask(client, endpoint) == b"ok"
        await client.aclose()
    assert served.requests == [1, 1]


@pytest.mark.parametrize(
    "status_line", [b"HTTP/1.1 200 OK\r\nconnection: close", b"HTTP/1.0 200 OK"], ids=["1.1-close", "1.0"]
)
async def test_a_body_without_length_or_chunks_is_read_until_the_upstream_closes(status_line: bytes) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(status_line + b"\r\ncontent-type: application/json\r\n\r\n" + b'{"text":"')
        await writer.drain()
        await asyncio.sleep(0.01)  # the rest in a later read: only the hang-up says where the body ends
        writer.write(b'hello"}')
        await writer.drain()
        writer.close()

    async with upstream(until_close) as (url, served):
        client, endpoint = client_for(url)
        assert await ask(client, endpoint) == b'{"text":"hello"}'
        assert await ask(client, endpoint) == b'{"text":"hello"}'
        await client.aclose()
    assert served.requests == [1, 1]


async def test_a_new_connection_closed_before_any_answer_is_a_connect_failure_and_not_sent_again() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with upstream(hang_up) as (url, served):
        client, endpoint = client_for(url)
        with pytest.raises(UpstreamError) as raised:
            await ask(client, endpoint)
        await client.aclose()
    assert (raised.value.status, raised.value.reason) == (502, "connect")
    assert served.requests == [1]  # a new connection that fails is not stale: no second attempt


async def test_a_connection_closed_as_soon_as_it_opened_is_a_connect_failure() -> None:
    accepted: list[int] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    client, endpoint = client_for(url)
    with pytest.raises(UpstreamError) as raised:
        await ask(client, endpoint)
    await client.aclose()
    server.close()
    assert (raised.value.status, raised.value.reason) == (502, "connect")
    assert accepted == [1]


async def test_an_invalid_answer_is_a_protocol_failure() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SMTP ready, not HTTP\r\n\r\n")
        await writer.drain()

    async with upstream(garbage) as (url, served):
        client, endpoint = client_for(url)
        with pytest.raises(UpstreamError) as raised:
            await ask(client, endpoint)
        await asyncio.wait_for(served.client_hung_up.wait(), 1)  # a connection out of step is not kept
        await client.aclose()
    assert (raised.value.status, raised.value.reason) == (502, "connect")
    assert "RemoteProtocolError" in raised.value.message


@pytest.mark.parametrize("apart", [False, True], ids=["one-read", "two-reads"])
async def test_an_informational_answer_is_skipped_for_the_final_one(apart: bool) -> None:
    async def continue_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\nx-interim: yes\r\n\r\n")
        if apart:
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"HTTP/1.1 200 Fine\r\nx-final: yes\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with upstream(continue_then_answer) as (url, served):
        client, endpoint = client_for(url)
        for _ in range(2):
            response = await open_response(client, endpoint, f"{url}/chat/completions", b"{}", [])
            assert (response.status_code, response.reason_phrase) == (200, "Fine")
            assert response.headers.get("x-final") == "yes" and "x-interim" not in response.headers
            assert await read_body(response, Timeouts()) == b"ok"
            await response.aclose()
        await client.aclose()
    assert served.requests == [2]  # the connection stays usable after an interim answer


# --- the pool's limits ------------------------------------------------------------------------------------------


async def test_with_max_concurrency_one_concurrent_requests_take_turns_on_one_connection() -> None:
    in_flight: list[int] = []

    async def slow_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        in_flight.append(1)
        await asyncio.sleep(0.02)
        await answer_ok(reader, writer)

    async with upstream(slow_answer) as (url, served):
        client, endpoint = client_for(url, max_concurrency=1)
        bodies = await asyncio.gather(*(ask(client, endpoint) for _ in range(3)))
        await client.aclose()
    assert bodies == [b'{"ok":true}'] * 3
    assert served.requests == [3]


async def test_a_request_waiting_longer_than_the_pool_timeout_for_a_connection_is_a_connect_failure() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(STREAM_HEAD + chunked(b"data: 1\n\n"))
        await writer.drain()
        await reader.read()  # until the client hangs up

    async with upstream(endless) as (url, served):
        client, endpoint = client_for(url, max_concurrency=1, timeouts=Timeouts(connect=0.1))
        holding = await open_response(client, endpoint, f"{url}/chat/completions", b"{}", [])
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamError) as raised:
            await ask(client, endpoint)  # the one connection is busy with `holding`
        assert 0.08 <= loop.time() - started < 0.5
        assert (raised.value.status, raised.value.reason) == (502, "connect")
        assert "PoolTimeout" in raised.value.message
        await holding.aclose()  # unfinished: hung up, and its place is free again
        await asyncio.wait_for(served.client_hung_up.wait(), 1)
        followed = await open_response(client, endpoint, f"{url}/chat/completions", b"{}", [])
        await followed.aclose()
        await client.aclose()
    assert served.requests == [1, 1]


async def test_an_idle_connection_past_its_keepalive_expiry_is_not_reused() -> None:
    transport = Http1Transport(httpx.Limits(keepalive_expiry=0.05))

    async with upstream(answer_ok) as (url, served):
        assert await post_through(transport, url) == b'{"ok":true}'
        assert await post_through(transport, url) == b'{"ok":true}'  # straight away: the same connection
        await asyncio.sleep(0.1)
        # past the expiry: a new one, and the old one hung up
        assert await post_through(transport, url) == b'{"ok":true}'
        await asyncio.wait_for(served.client_hung_up.wait(), 1)
        await transport.aclose()
    assert served.requests == [2, 1]


async def test_a_full_pool_closes_an_idle_connection_to_another_upstream_to_make_room() -> None:
    transport = Http1Transport(httpx.Limits(max_connections=1))

    async with upstream(answer_ok) as (first, first_served), upstream(answer_ok) as (second, second_served):
        assert await post_through(transport, first) == b'{"ok":true}'  # its connection stays idle, taking the one place
        assert await post_through(transport, second) == b'{"ok":true}'
        await asyncio.wait_for(first_served.client_hung_up.wait(), 1)
        await transport.aclose()
    assert (first_served.requests, second_served.requests) == ([1], [1])


# --- flow control -----------------------------------------------------------------------------------------------


async def test_an_upstream_faster_than_its_reader_is_held_back_and_its_body_arrives_whole() -> None:
    body = os.urandom(24 * 1024 * 1024)  # more than loopback's socket buffers can hold
    sent = [0]  # bytes the upstream handed to its transport and drained

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 64 * 1024):
            writer.write(chunked(body[start : start + 64 * 1024]))
            await writer.drain()
            sent[0] = start + 64 * 1024
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with upstream(flood) as (url, served):
        timeouts = Timeouts(first_byte=5, idle=0.1)
        client, endpoint = client_for(url, timeouts=timeouts)
        response = await open_response(client, endpoint, f"{url}/chat/completions", b"{}", [])
        await settle(lambda: sent[0] > 0)
        # ccm does not read for longer than the idle timeout: the upstream ends up blocked in drain()
        progress = -1
        while progress != sent[0]:
            progress = sent[0]
            await asyncio.sleep(0.1)
        assert progress < len(body)
        assert served.writers[0].transport.get_write_buffer_size() > 0
        [connection] = pool_of(client).open
        assert connection.paused
        assert connection.buffered <= HIGH_WATER + 256 * 1024  # one socket read past the mark at most
        await asyncio.sleep(0.1)  # ccm's own pause is not the upstream's silence: no idle timeout
        received = hashlib.sha256()
        async for chunk in iter_body(response, timeouts):
            received.update(chunk)
        await response.aclose()
        await client.aclose()
    assert received.digest() == hashlib.sha256(body).digest()
    assert served.requests == [1]


# --- TLS --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def trusting(authority: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts only the test authority (the process-wide one stays as it is)."""
    with authority.cert_pem.tempfile() as cafile:
        context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    return context


def serving(authority: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*names).configure_cert(context)
    return context


async def test_an_https_upstream_is_answered_over_tls(authority: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "tls_context", lambda: trusting(authority))
    async with upstream(answer_ok, tls=serving(authority, "127.0.0.1")) as (url, served):
        client, endpoint = client_for(url)
        assert url.startswith("https://")
        assert await ask(client, endpoint) == b'{"ok":true}'
        assert await ask(client, endpoint) == b'{"ok":true}'
        assert served.writers[0].get_extra_info("ssl_object") is not None
        await client.aclose()
    assert served.requests == [2]


async def test_a_certificate_for_another_host_is_a_connect_failure(
    authority: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "tls_context", lambda: trusting(authority))
    async with upstream(answer_ok, tls=serving(authority, "upstream.example")) as (url, served):
        client, endpoint = client_for(url)
        with pytest.raises(UpstreamError) as raised:
            await ask(client, endpoint)
        assert pool_of(client).connecting == 0 and not pool_of(client).open
        await client.aclose()
    assert (raised.value.status, raised.value.reason) == (502, "connect")
    assert "ConnectError" in raised.value.message
    assert served.requests == []  # the handshake failed: no HTTP exchange began



async def test_the_default_context_takes_its_authorities_from_ssl_cert_file(
    authority: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What docs/providers.md promises a user behind a corporate CA: SSL_CERT_FILE names the authorities trusted."""
    cafile = tmp_path / "corporate-ca.pem"
    authority.cert_pem.write_to_path(str(cafile))
    async with upstream(answer_ok, tls=serving(authority, "127.0.0.1")) as (url, served):
        monkeypatch.setattr(http1, "tls_context", http1.tls_context.__wrapped__)  # built afresh, not the cached one
        client, endpoint = client_for(url)
        with pytest.raises(UpstreamError):  # the system's store does not know the test authority
            await ask(client, endpoint)
        await client.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", str(cafile))
        client, endpoint = client_for(url)
        assert await ask(client, endpoint) == b'{"ok":true}'
        await client.aclose()
    assert served.requests == [1]

# --- what is sent, what is received between exchanges -----------------------------------------------------------


@pytest.mark.parametrize("value", ["sk-secret\r\nx-injected: 1", "sk-secret\n", "sk-secret\rx"])
async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(value: str) -> None:
    async with upstream(answer_ok) as (url, served):
        transport = Http1Transport(httpx.Limits())
        request = httpx.Request("POST", url, content=b"{}", headers=[("authorization", value)])
        with pytest.raises(httpx.LocalProtocolError) as raised:
            await transport.handle_async_request(request)
        assert "sk-secret" not in str(raised.value)
        # through the adapters' path too: a key with a stray newline (an env file written on Windows, say)
        client, endpoint = client_for(url)
        endpoint = resolve_endpoint(provider(url).model_copy(update={"key": Literal_(value=value)}), {})
        with pytest.raises(UpstreamError) as failed:
            await ask(client, endpoint)
        assert "sk-secret" not in failed.value.message
        assert (failed.value.status, failed.value.reason) == (424, "config")  # not retried, not the breaker's
        await client.aclose()
        await transport.aclose()
    assert served.connections == 0


async def test_an_unsolicited_answer_on_an_idle_connection_does_not_reach_the_next_request() -> None:
    idle = asyncio.Event()

    async def answer_then_time_out(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_ok(reader, writer)
        if not idle.is_set():  # the first connection only, once the client has put it back in the pool
            await idle.wait()
            writer.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")  # and keeps the socket open
            await writer.drain()

    async with upstream(answer_then_time_out) as (url, served):
        client, endpoint = client_for(url)
        assert await ask(client, endpoint) == b'{"ok":true}'
        idle.set()
        await asyncio.wait_for(served.client_hung_up.wait(), 1)  # the client dropped the connection
        assert await ask(client, endpoint) == b'{"ok":true}'
        await client.aclose()
    assert served.requests == [1, 1]


# --- cancelling and closing -------------------------------------------------------------------------------------


async def test_a_request_cancelled_while_waiting_for_its_answer_hangs_up_and_frees_its_place() -> None:
    asked = asyncio.Event()
    hung_up = asyncio.Event()

    async def silent_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not asked.is_set():
            asked.set()
            await reader.read()  # never answers; returns when the client hangs up
            hung_up.set()
            return
        await answer_ok(reader, writer)

    async with upstream(silent_first) as (url, served):
        client, endpoint = client_for(url, max_concurrency=1, timeouts=Timeouts(connect=0.5))
        waiting = asyncio.create_task(ask(client, endpoint))
        await asyncio.wait_for(asked.wait(), 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(hung_up.wait(), 1)
        assert await ask(client, endpoint) == b'{"ok":true}'  # the one place went back to the pool
        await client.aclose()
    assert served.requests == [1, 1]


# --- found in review: the answer's end, bodies cut short, the pool's places -----------------------------------


async def test_bytes_after_an_answer_in_the_same_read_are_not_taken_into_it() -> None:
    async def answer_and_more(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # the end of the answer and an unsolicited one arrive together (one write, one read)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                     + b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 7\r\n\r\ntimeout")
        await writer.drain()

    async with upstream(answer_and_more) as (url, served):
        client, endpoint = client_for(url)
        response = await open_response(client, endpoint, f"{url}/chat/completions", b"{}", [])
        assert response.status_code == 200
        assert response.headers.get_list("content-length") == ["2"]
        assert await read_body(response, Timeouts()) == b"ok"
        await response.aclose()
        await client.aclose()


@pytest.mark.parametrize("head", [STREAM_HEAD, b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"],
                         ids=["chunked", "until-close"])
async def test_closing_the_client_fails_any_body_being_read(head: bytes) -> None:
    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head + (chunked(b"data: 1\n\n") if b"chunked" in head else b"data: 1\n\n"))
        await writer.drain()
        await reader.read()

    async with upstream(stalled) as (url, served):
        client, endpoint = client_for(url)
        response = await open_response(client, endpoint, f"{url}/chat/completions", b"{}", [])
        chunks = iter_body(response, Timeouts())
        assert await chunks.__anext__() == b"data: 1\n\n"
        reading = asyncio.create_task(chunks.__anext__())
        await asyncio.sleep(0.01)
        await client.aclose()
        with pytest.raises(UpstreamError) as raised:
            await asyncio.wait_for(reading, 1)  # promptly; not StopAsyncIteration: the body was cut by ccm, not ended
        await asyncio.wait_for(served.client_hung_up.wait(), 1)
        await response.aclose()
    assert (raised.value.status, raised.value.reason) == (502, "connect")


async def test_a_body_until_close_cut_by_a_reset_is_a_failure_not_an_end() -> None:
    async def reset_midway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b'{"text":"hel')
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    async with upstream(reset_midway) as (url, served):
        client, endpoint = client_for(url)
        with pytest.raises(UpstreamError) as raised:
            await ask(client, endpoint)
        await client.aclose()
    assert (raised.value.status, raised.value.reason) == (502, "connect")


async def test_a_request_cancelled_while_connecting_frees_its_place_for_a_waiting_one() -> None:
    accepted = asyncio.Event()

    async def no_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # a TCP peer that never answers the TLS handshake

    mute = await asyncio.start_server(no_handshake, "127.0.0.1", 0)
    mute_url = f"https://127.0.0.1:{mute.sockets[0].getsockname()[1]}/v1"
    transport = Http1Transport(httpx.Limits(max_connections=1))
    timeout = {"connect": 5.0, "pool": 0.5, "read": 5.0, "write": 5.0}
    async with upstream(answer_ok) as (url, served):
        connecting = asyncio.create_task(
            transport.handle_async_request(httpx.Request("POST", mute_url, content=b"{}",
                                                         extensions={"timeout": timeout}))
        )
        await asyncio.wait_for(accepted.wait(), 1)
        waiting = asyncio.create_task(
            transport.handle_async_request(httpx.Request("POST", url, content=b"{}", extensions={"timeout": timeout}))
        )
        await asyncio.sleep(0.01)  # `waiting` is queued for the one place, held by `connecting`
        loop = asyncio.get_running_loop()
        started = loop.time()
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        response = await waiting  # not PoolTimeout: the place was freed
        assert loop.time() - started < 0.2
        assert await response.aread() == b'{"ok":true}'
        await response.aclose()
        await transport.aclose()
    mute.close()


async def test_a_place_given_to_a_waiter_as_its_deadline_comes_is_not_lost() -> None:
    transport = Http1Transport(httpx.Limits(max_connections=1))
    pool = transport.pool
    async with upstream(answer_ok) as (url, served):
        holding = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
        assert b"".join([chunk async for chunk in holding.stream]) == b'{"ok":true}'  # complete, still held
        origin = (b"http", b"127.0.0.1", httpx.URL(url).port)
        late = asyncio.create_task(pool.acquire(origin, 1.0, 0.0))  # its deadline is now: its timer fires next
        patient = asyncio.create_task(pool.acquire(origin, 1.0, 0.3))
        await asyncio.sleep(0)  # both queued
        await holding.aclose()  # the place goes to `late`, whose deadline fires in the same loop turn
        outcomes = await asyncio.gather(late, patient, return_exceptions=True)
        # the place is not lost: one of them has it (`late` despite its deadline, or `patient` after it)
        assert [isinstance(outcome, http1.Connection) for outcome in outcomes].count(True) == 1, outcomes
        await transport.aclose()


async def test_idle_connections_past_their_expiry_are_closed_while_another_one_is_in_use() -> None:
    transport = Http1Transport(httpx.Limits(keepalive_expiry=0.1))

    async def slow_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.01)
        await answer_ok(reader, writer)

    async with upstream(slow_answer) as (url, served):
        # a burst: two connections, both then idle
        await asyncio.gather(post_through(transport, url), post_through(transport, url))
        assert served.connections == 2
        for _ in range(10):  # then one request at a time for 0.3 s: the most recently used one serves them all
            await post_through(transport, url)
            await asyncio.sleep(0.03)
        # the other one has been idle for 0.3 s, three times its expiry: it should have been closed by now
        assert len(transport.pool.open) == 1
        await transport.aclose()


async def test_a_closed_client_sends_nothing_more() -> None:
    async with upstream(answer_ok) as (url, served):
        client, endpoint = client_for(url)
        assert await ask(client, endpoint) == b'{"ok":true}'
        await client.aclose()
        with pytest.raises(UpstreamError):
            await ask(client, endpoint)
    assert served.requests == [1]


# --- found in the second review: a paused connection, the pool's evictions, a client closed while connecting ----


async def test_a_connection_whose_reading_is_paused_is_not_reused() -> None:
    """The answer ended inside a burst ccm had not read (reading paused past HIGH_WATER), then the response was
    closed: the connection must not carry the next request, whose answer would never be read (nor time out)."""
    size, first_part = HIGH_WATER + 44 * 1024, 200 * 1024  # the read with the rest crosses HIGH_WATER and ends it

    async def burst_then_small(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if sum(served.requests) == 1:  # the first request of the test
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"a" * first_part)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"b" * (size - first_part))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with upstream(burst_then_small) as (url, served):
        transport = Http1Transport(httpx.Limits(max_connections=1))
        timeout = {"connect": 1.0, "read": 1.0, "pool": 1.0}
        first = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}",
                                                                   extensions={"timeout": timeout}))
        connection = first.stream.connection  # type: ignore[attr-defined]
        await settle(lambda: connection.complete)
        assert connection.paused  # the whole answer is in, unread, with reading paused
        await first.aclose()
        second = await asyncio.wait_for(transport.handle_async_request(
            httpx.Request("POST", url, content=b"{}", extensions={"timeout": timeout})), 2)
        assert await second.aread() == b"ok"
        await second.aclose()
        await transport.aclose()
    assert served.requests == [1, 1]


async def test_two_requests_making_room_in_one_turn_evict_two_idle_connections() -> None:
    async def slow_or_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(STREAM_HEAD + chunked(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(5)

    transport = Http1Transport(httpx.Limits(max_connections=2))
    timeout = {"connect": 1.0, "read": 5.0, "pool": 1.0}
    async with upstream(answer_ok) as (other, _), upstream(slow_or_ok) as (url, served):
        # two requests at once: two connections to `other`, both idle afterwards, filling the pool
        await asyncio.gather(post_through(transport, other), post_through(transport, other))
        assert transport.pool.idle_count == 2
        streams = await asyncio.wait_for(asyncio.gather(*(transport.handle_async_request(
            httpx.Request("POST", url, content=b"{}", extensions={"timeout": timeout})) for _ in range(2))), 0.8)
        assert len(served.requests) == 2  # both got a connection of their own, neither waited for the pool
        for response in streams:
            await response.aclose()
        await transport.aclose()


async def test_a_connection_opened_for_a_client_closed_meanwhile_is_not_kept() -> None:
    async with upstream(answer_ok) as (url, served):
        transport = Http1Transport(httpx.Limits())
        request = asyncio.create_task(post_through(transport, url))
        await asyncio.sleep(0)  # inside create_connection
        assert transport.pool.connecting == 1
        await transport.aclose()
        with pytest.raises(httpx.PoolTimeout):
            await request
        await asyncio.wait_for(served.client_hung_up.wait(), 1)
    assert not transport.pool.open and served.requests == [0]  # connected, and hung up on before any request


async def test_a_name_with_an_unreachable_address_first_connects_by_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Happy Eyeballs: the first address (TEST-NET, never answers) does not hold the connection up for its timeout."""
    async with upstream(answer_ok) as (url, served):
        port = int(url.split("://")[1].split("/")[0].rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        unreachable = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))
        reachable = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))

        async def resolve(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
            return [unreachable, reachable]

        monkeypatch.setattr(loop, "getaddrinfo", resolve)
        started = time.monotonic()
        sock = await http1.open_socket("upstream.test", port)
        took = time.monotonic() - started
        assert sock.getpeername() == ("127.0.0.1", port) and took < 2.0
        sock.close()


def test_addresses_alternate_families_in_resolver_order() -> None:
    v6 = [(socket.AF_INET6, 1, 6, "", (f"::{i}", 1, 0, 0)) for i in (1, 2)]
    v4 = [(socket.AF_INET, 1, 6, "", (f"10.0.0.{i}", 1)) for i in (1, 2)]
    ordered = http1._interleaved([*v6, *v4])
    assert [info[4][0] for info in ordered] == ["::1", "10.0.0.1", "::2", "10.0.0.2"]
