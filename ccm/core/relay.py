"""The one owner of a relayed stream: from the primed reply dispatch hands over until the final usage is known.

    StreamRelay(reply, …).run(client) -> Relayed

What it owns, and nothing else does:
    the deadline      the request's `timeout total` bounds reading the upstream and writing to the client alike:
                      when it passes, the stream ends with an `event: error` (504 `timeout_error`)
    a slow client     a write the client does not take within the provider's `idle` timeout ends the relay and
                      frees the attempt's concurrency slot (a client that stops reading must not keep it)
    a quiet upstream  while the upstream sends nothing for `PING_SECONDS`, the client gets Anthropic's
                      `event: ping` (as Anthropic itself sends), so proxies and clients with idle timeouts do not
                      cut a healthy answer from a model that thinks for a minute; only between whole events
    mid-stream errors an upstream failure after the 200 is located once at the upstream boundary (provider named,
                      secrets redacted), counted against the deployment's breaker, and sent as `event: error`
    the final usage   `on_final(usage)` is awaited once the stream reached its protocol's end, before the chunk
                      that ends it goes to the client: what is settled there is settled before the client has the
                      whole answer (the ledger's guarantee after a crash)
    a metered hold    with a `budget`, each chunk's output so far (an upper bound: the content characters streamed)
                      must be covered before the chunk goes out; when the budget cannot grow, the answer stops there
                      with the error the budget gives (`billing_error` when the key's credit ran out)
    the client leaving  with a drain slot free (`Drains`), the relay keeps reading the upstream to its final usage,
                      bounded in time, writing nothing; without one the request is cancelled as before

Closing the reply is not the relay's: the dispatcher's `Answer.close` does it, once, for streams and bodies alike.

Cost per chunk: a clock read and a state flag or two; the timers are one per stream (the deadline) and one
periodic check every `TICK_SECONDS` at most (pings, stalled writes), never one per chunk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Protocol

from ccm.core.breaker import Breaker, Ticket
from ccm.errors import UpstreamError
from ccm.frozen import frozen
from ccm.providers.base import Reply, Usage
from ccm.upstream.errors import Redactor, located, timed_out

log = logging.getLogger("ccm.attempt")

PING_SECONDS = 10.0
TICK_SECONDS = 5.0
PING = b'event: ping\ndata: {"type": "ping"}\n\n'

FinalUsage = Callable[[Usage], Awaitable[None]]


class Budget(Protocol):
    """A metered request's hold, kept ahead of its output (`ccm.core.metering.Admitted`)."""

    def covers(self, output_tokens: int) -> bool: ...

    async def meter(self, output_tokens: int) -> UpstreamError | None:
        """None: the hold grew to cover `output_tokens`; else what the answer stops with."""


class ClientStream(Protocol):
    """The client's side of the exchange, as the relay writes to it."""

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def body(self, data: bytes, more: bool = False) -> None: ...


class Drains:
    """How many streams whose client left may still be read to their final usage at once, and for how long each."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.active = 0

    def take(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def give_back(self) -> None:
        self.active -= 1


NO_DRAINS = Drains(0, 0.0)


@frozen
class Relayed:
    complete: bool  # the upstream's stream reached its protocol's end
    error: UpstreamError | None = None  # what ended it otherwise (sent to the client as `event: error` if it was there)
    client_left: bool = False
    drained: bool = False  # the client left and the upstream was read on to its end


class _State(Enum):
    IDLE = 0
    READING = 1
    WRITING = 2


class StreamRelay:
    def __init__(
        self,
        reply: Reply,
        headers: list[tuple[bytes, bytes]],
        *,
        deadline: float,
        write_idle: float,
        breaker: Breaker,
        provider: str,
        redactor: Redactor,
        on_final: FinalUsage | None = None,
        drains: Drains = NO_DRAINS,
        ping_seconds: float = PING_SECONDS,
        budget: Budget | None = None,
    ) -> None:
        assert reply.stream is not None
        self._reply = reply
        self._headers = headers
        self._deadline = deadline  # on the loop's clock (anyio's is the loop's)
        self._write_idle = write_idle
        self._breaker = breaker
        self._provider = provider
        self._redactor = redactor
        self._on_final = on_final
        self._drains = drains
        self._ping_seconds = ping_seconds
        self._budget = budget
        self._state = _State.IDLE
        self._cut: UpstreamError | None = None  # set by a timer that cut the relay: why
        self._stalled = False  # the cut was the client's: it stopped reading, so nothing more is sent
        self._task: asyncio.Task[object] | None = None
        self._client: ClientStream | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._ping: asyncio.Task[None] | None = None
        self._last_write = 0.0
        self._write_since = 0.0
        self._at_boundary = True  # the bytes sent so far end with a whole event
        self._client_gone = False
        self._draining = False

    def client_left(self) -> bool:
        """The client disconnected. True when the relay takes it from here (it drains the upstream to its end);
        False when it does not, and the request is to be cancelled."""
        if self._client_gone:
            return True
        if self._task is None or not self._drains.take():
            return False
        self._client_gone = self._draining = True
        remaining = self._deadline - asyncio.get_running_loop().time()
        self._deadline = asyncio.get_running_loop().time() + min(self._drains.seconds, max(remaining, 0.0))
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(self._deadline, self._expire)
        return True

    async def run(self, client: ClientStream) -> Relayed:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None and self._reply.stream is not None
        self._task, self._client = task, client
        cancelling = task.cancelling()
        self._last_write = loop.time()
        self._timer = loop.call_at(self._deadline, self._expire)
        tick = min(self._ping_seconds, self._write_idle / 2, TICK_SECONDS)
        self._ticker = loop.call_later(tick, self._on_tick, tick)
        chunks = self._reply.stream.__aiter__()
        complete = False
        error: UpstreamError | None = None
        try:
            self._state = _State.WRITING
            self._write_since = loop.time()
            await client.start(self._reply.status, self._headers)
            self._state = _State.IDLE
            while self._cut is None:
                self._state = _State.READING
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    complete = True
                    break
                except asyncio.CancelledError:
                    if self._cut is None or task.uncancel() > cancelling:
                        raise  # not ours, or someone else's too
                    error = self._cut
                    break
                except Exception as exc:  # noqa: BLE001 - the upstream boundary: every failure is located here
                    error = located(exc, self._provider, self._redactor)
                    self._breaker.record(Ticket(probe=False), error)
                    log.info("stream provider=%s failed mid-stream reason=%s (%s)", self._provider, error.reason,
                             error.message)
                    break
                finally:
                    self._state = _State.IDLE
                if self._on_final is not None and self._reply.usage.final:  # this chunk ends it: settle first
                    on_final, self._on_final = self._on_final, None
                    await on_final(self._reply.usage)
                budget = self._budget
                if budget is not None and not budget.covers(self._reply.usage.streamed_chars):
                    stopped = await budget.meter(self._reply.usage.streamed_chars)
                    if stopped is not None:
                        error = stopped
                        break
                if self._client_gone:
                    continue
                if not await self._write(client, chunk, task, cancelling):
                    error = self._cut
                    break
            if not complete and error is None:
                error = self._cut  # cut between two chunks
            if complete and self._on_final is not None:
                await self._on_final(self._reply.usage)
            if not self._client_gone and not self._stalled:
                if error is not None:
                    await client.body(error.event(), more=True)
                await client.body(b"")
            return Relayed(complete, error, self._client_gone, self._draining and complete)
        finally:
            for timer in (self._timer, self._ticker):
                if timer is not None:
                    timer.cancel()
            if self._ping is not None:
                self._ping.cancel()
            if self._draining:
                self._drains.give_back()

    async def _write(self, client: ClientStream, chunk: bytes, task: asyncio.Task[object], cancelling: int) -> bool:
        """Send one chunk; False when a timer cut the relay meanwhile."""
        loop = asyncio.get_running_loop()
        self._state = _State.WRITING
        self._write_since = loop.time()
        try:
            if self._ping is not None:  # a ping on its way out: let it finish first, the events stay whole
                await self._ping
                self._ping = None
            await client.body(chunk, more=True)
        except asyncio.CancelledError:
            if self._cut is None or task.uncancel() > cancelling:
                raise
            return False
        finally:
            self._state = _State.IDLE
        self._last_write = loop.time()
        self._at_boundary = chunk.endswith(b"\n\n")
        return True

    # --- timers ------------------------------------------------------------------------------------------------

    def _expire(self) -> None:
        self._timer = None
        if self._draining:
            self._cut = timed_out(self._provider, "the client left and the upstream's answer did not end in time")
        else:
            self._cut = timed_out(self._provider, "the stream outlived its total timeout")
            self._breaker.record(Ticket(probe=False), self._cut)
        if self._state is not _State.IDLE and self._task is not None:
            self._task.cancel()

    def _on_tick(self, tick: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._ticker = loop.call_later(tick, self._on_tick, tick)
        if self._state is _State.WRITING and now - self._write_since > self._write_idle:
            self._stalled = True
            self._cut = timed_out(self._provider, f"the client took no data for {self._write_idle:g}s")
            log.info("stream provider=%s: the client took no data for %.0fs; closing", self._provider,
                     self._write_idle)
            if self._task is not None:
                self._task.cancel()
        elif (self._state is _State.READING and not self._client_gone and self._ping is None and self._at_boundary
              and now - self._last_write >= self._ping_seconds):
            self._ping = loop.create_task(self._send_ping())

    async def _send_ping(self) -> None:
        # The relay is waiting on the upstream; before its next write it awaits this task (`_write`).
        assert self._client is not None
        await self._client.body(PING, more=True)
        self._last_write = asyncio.get_running_loop().time()

