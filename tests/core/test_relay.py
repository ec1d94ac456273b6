"""The stream relay: the deadline over reading and writing, a client that stops reading, pings while the upstream
is quiet, failures located at the boundary, and a client that leaves while drains are allowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

from ccm.core.breaker import Breaker
from ccm.core.relay import PING, Drains, StreamRelay
from ccm.errors import UpstreamError
from ccm.providers.base import Reply
from ccm.upstream.errors import Redactor

START = b'event: message_start\ndata: {"type":"message_start"}\n\n'
STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class Client:
    """A client that takes what it is sent, or stops taking it (`stalled`)."""

    def __init__(self, stalled: bool = False) -> None:
        self.status: int | None = None
        self.chunks: list[bytes] = []
        self.ended = False
        self.stalled = stalled

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status

    async def body(self, data: bytes, more: bool = False) -> None:
        if self.stalled and data:
            await anyio.sleep(3600)
        if more:
            self.chunks.append(data)
        else:
            self.ended = True


def relay(stream: AsyncIterator[bytes], *, total: float = 10.0, idle: float = 10.0, breaker: Breaker | None = None,
          redactor: Redactor | None = None, drains: Drains | None = None, ping: float = 10.0) -> StreamRelay:
    reply = Reply(200, [], stream=stream)
    extra = {"drains": drains} if drains is not None else {}
    return StreamRelay(reply, [], deadline=asyncio.get_running_loop().time() + total, write_idle=idle,
                       breaker=breaker or Breaker(), provider="up", redactor=redactor or Redactor(()),
                       ping_seconds=ping, **extra)


async def test_a_whole_stream_is_relayed_and_complete() -> None:
    async def answer() -> AsyncIterator[bytes]:
        yield START
        yield STOP

    client = Client()
    relayed = await relay(answer()).run(client)
    assert relayed.complete and relayed.error is None
    assert client.chunks == [START, STOP] and client.ended


async def test_the_deadline_cuts_a_stalled_upstream_and_counts_against_the_breaker() -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield START
        await anyio.sleep(5)
        yield b"never"

    breaker = Breaker(threshold=1)
    client = Client()
    relayed = await relay(stalls(), total=0.3, breaker=breaker).run(client)
    assert not relayed.complete and relayed.error is not None and relayed.error.reason == "timeout"
    assert breaker.state == "open"
    assert client.chunks[0] == START and b"event: error" in client.chunks[-1] and client.ended


async def test_a_client_that_stops_reading_is_let_go_within_the_idle_timeout() -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield START
            await anyio.sleep(0)

    breaker = Breaker(threshold=1)
    with anyio.fail_after(5):
        relayed = await relay(endless(), idle=0.2, breaker=breaker).run(Client(stalled=True))
    assert not relayed.complete
    assert breaker.state == "closed"  # the client's doing, not the upstream's


async def test_a_quiet_upstream_gets_the_client_pings_between_whole_events() -> None:
    async def thinks() -> AsyncIterator[bytes]:
        yield START
        await anyio.sleep(0.5)
        yield STOP

    client = Client()
    relayed = await relay(thinks(), ping=0.1).run(client)
    assert relayed.complete
    assert client.chunks[0] == START and client.chunks[-1] == STOP
    assert PING in client.chunks[1:-1]


async def test_a_failure_mid_stream_is_located_and_redacted() -> None:
    async def fails() -> AsyncIterator[bytes]:
        yield START
        raise UpstreamError(500, "bad request echoing x-api-key: sk-secret-123456", "5xx")

    client = Client()
    relayed = await relay(fails(), redactor=Redactor(["sk-secret-123456"])).run(client)
    assert relayed.error is not None and relayed.error.provider == "up"
    assert b"sk-secret" not in b"".join(client.chunks) and b"[redacted]" in client.chunks[-1]


async def test_a_client_that_leaves_is_drained_to_the_end_when_a_drain_is_free() -> None:
    read: list[bytes] = []
    gone = asyncio.Event()

    async def answer() -> AsyncIterator[bytes]:
        yield START
        await gone.wait()
        for chunk in (b"event: content_block_delta\ndata: {}\n\n", STOP):
            read.append(chunk)
            yield chunk

    drains = Drains(limit=1, seconds=5)
    stream = relay(answer(), drains=drains)
    client = Client()
    running = asyncio.create_task(stream.run(client))
    await asyncio.sleep(0.05)
    assert stream.client_left() is True
    gone.set()
    relayed = await running
    assert relayed.complete and relayed.drained and relayed.client_left
    assert len(read) == 2 and client.chunks == [START] and not client.ended
    assert drains.active == 0


async def test_without_a_free_drain_the_client_leaving_is_left_to_the_caller() -> None:
    async def answer() -> AsyncIterator[bytes]:
        yield START
        await anyio.sleep(5)
        yield STOP

    stream = relay(answer(), drains=Drains(limit=0, seconds=5))
    running = asyncio.create_task(stream.run(Client()))
    await asyncio.sleep(0.05)
    assert stream.client_left() is False
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
