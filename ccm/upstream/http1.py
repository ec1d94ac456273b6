"""ccm's upstream HTTP/1.1 client: an httpx transport on asyncio protocols and llhttp (httptools' parser).

Why its own: the adapters keep httpx's API, but what sits under it is the largest cost on ccm's hot path. Measured
here (docs/performance-notes.md, CPU per POST to a loopback nginx): httpx's own transport (httpcore) ~800 µs and
collapsing under concurrency, httpx over aiohttp's pool ~350 µs, this transport ~100 µs. The difference is layers, not
I/O: one protocol object per connection feeds the socket's bytes to llhttp (the C parser Node.js uses, already here
under uvicorn) and hands body bytes to the reader as they arrive; there is no stream-reader, payload, tracing or
cookie machinery in between.

The contract (what httpx's own transport keeps, and what `ccm.upstream.client` relies on):
    timeouts     `connect` bounds opening a connection, `pool` waiting for a free one, `read` the upstream's silence
                 until the first body bytes (ccm's first-byte timeout); from then on the request extension
                 `IDLE_TIMEOUT`, when set, bounds it instead. One timer per connection keeps both: each read only
                 stamps the time, and the timer re-arms itself from the last stamp when it fires early (no cancel
                 scope or timer churn per chunk). Silence while ccm itself has paused reading does not count.
                 `write` is not kept separately: a request is handed to the socket whole, and an upstream that does
                 not read it does not answer either, which the read timeout catches
    bodies       passed on undecoded, as they arrive: the `httpx.Response` decodes `content-encoding` as usual. Past
                 `HIGH_WATER` unread bytes the socket stops being read until the consumer catches up
    connections  kept alive and reused (most recently used first) up to `max_keepalive_connections`; one idle
                 longer than `keepalive_expiry` is closed when a request to its upstream next takes a connection;
                 at most `max_connections` open at once. A request sent on a reused connection that the upstream
                 closes before any byte of an answer is sent again on another connection. ccm's choice for POSTs
                 too (httpcore never resends, aiohttp only idempotent methods): a keep-alive connection the
                 upstream dropped while idle is the common case, and ccm's retry policy would resend such a
                 "connect" failure anyway
    closing      closing a response whose body was not read to the end closes its connection (a client leaving
                 mid-stream hangs up on the upstream too); a finished one returns to the pool
    failures     raised as the httpx exception of the same meaning (ConnectError, ConnectTimeout, PoolTimeout,
                 ReadTimeout, ReadError, RemoteProtocolError), which `ccm.upstream.errors.transport_error` classifies
    connecting   to every address a name resolves to, IPv6 and IPv4 alternating, by Happy Eyeballs (`open_socket`)
    TLS          one default context for the process (the system's CA store, else certifi's; SSL_CERT_FILE /
                 SSL_CERT_DIR honoured), ALPN `http/1.1`
    not here     redirects, cookies, HTTP/2, proxies (a proxy named in the environment is the httpx client's business:
                 it routes those URLs through its own transport), HEAD requests (a HEAD answer has no body but may
                 declare one; ccm never sends HEAD)
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import socket
import ssl
from asyncio import staggered
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import certifi
import httptools
import httpx

# Extensions between `ccm.upstream.client` (open_response, iter_body) and a transport that times its own reads.
IDLE_TIMEOUT = "ccm.idle_timeout"  # request: seconds of upstream silence allowed once the body started
TIMED_READS = "ccm.timed_reads"  # response: the transport enforces the first-byte and idle timeouts itself
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address is tried alongside (RFC 8305's recommended value)
HIGH_WATER = 256 * 1024  # unread body bytes above which the socket is no longer read
# How many times the request being sent in this task went out again after a stale keep-alive connection closed before
# any answer: an upstream may have billed the first one, so the core records each resend with the attempt.
RESENDS: contextvars.ContextVar[int] = contextvars.ContextVar("ccm_upstream_resends", default=0)
Origin = tuple[bytes, bytes, int]  # scheme, host, port


class _Stale(Exception):
    """A reused connection closed before any byte of the answer: the request may be sent again on a new one."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Built on the first HTTPS request, once per process (loading the CA store takes tens of milliseconds). The
    system's CA store, or certifi's bundle when the system has none (a slim container), as httpx does."""
    context = ssl.create_default_context()
    if not context.cert_store_stats()["x509_ca"]:
        context.load_verify_locations(certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected socket to `host`, by Happy Eyeballs (RFC 8305) when the name has several addresses: IPv6 and IPv4
    alternate, and the next is tried once the previous failed or `HAPPY_EYEBALLS_DELAY` passed, first connected
    wins (what asyncio's own `create_connection(happy_eyeballs_delay=…)` does; uvloop's has no such option)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    if not infos:
        raise OSError(f"{host} has no address")
    ordered = _interleaved(infos)
    errors: list[OSError] = []

    async def attempt(info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _, address = info
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as error:
            sock.close()
            errors.append(error)
            raise
        except BaseException:
            sock.close()
            raise
        return sock

    winner, _, _ = await staggered.staggered_race(
        [functools.partial(attempt, info) for info in ordered], HAPPY_EYEBALLS_DELAY
    )
    if not isinstance(winner, socket.socket):
        raise errors[0] if len(errors) == 1 else OSError(f"could not connect to {host}:{port}: {errors}")
    return winner


def _interleaved(infos: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Addresses as the resolver ordered them, alternating families (RFC 8305 section 4)."""
    by_family: dict[int, list[tuple[Any, ...]]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    out: list[tuple[Any, ...]] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to an upstream, carrying one exchange at a time. Its fields for the exchange in flight
    are reset by `send`; the parser's callbacks (`on_*`) fill them in as llhttp reads the socket's bytes."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.aborted = False  # ccm hung up itself: the end of the connection is not the end of a body
        self.used = False  # has carried a request before the one in flight
        self.idle_since = 0.0
        # the exchange in flight
        self.busy = False
        self.received = False  # any byte of the answer
        self.head: asyncio.Future[None] | None = None  # resolved when the status line and headers are in
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None  # the body reader waiting for bytes
        # silence timer
        self.timer: asyncio.TimerHandle | None = None
        self.silence: float | None = None
        self.idle_limit: float | None = None
        self.last_read = 0.0
        self.body_started = False

    # --- asyncio.Protocol -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:  # nothing was asked (a server's "408" before it hangs up, say)
            self.keep_alive = False
            self.abort()
            return
        self.received = True
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.keep_alive = False
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response from upstream: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.busy and not self.complete:
            if not self.received and self.used:
                self._fail(_Stale())
            elif not self.received or self.head is None or not self.head.done():
                self._fail(httpx.RemoteProtocolError("upstream closed the connection without sending a response"))
            elif exc is None and not self.aborted and self._body_until_close():
                self.on_message_complete()
            elif self.aborted:
                self._fail(httpx.ReadError("ccm closed the connection before the body ended"))
            else:
                self._fail(httpx.ReadError("upstream closed the connection before the body ended"))
        self.pool.forget(self)

    # --- llhttp callbacks --------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # bytes past the end of the answer, in the same read: nothing asked for them
            raise httpx.RemoteProtocolError("upstream sent more than its answer")

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an informational answer (100 Continue…): the real one follows
            self.headers = []
            return
        self.status = status
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if not self.body_started:
            self.body_started = True
            self._use_idle_limit()
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:  # the end of an informational answer
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._stop_timer()
        self._wake()

    # --- the exchange --------------------------------------------------------------------------------------------

    def send(self, data: list[bytes], read_timeout: float | None, idle_timeout: float | None) -> None:
        self.busy, self.received, self.complete, self.keep_alive = True, False, False, False
        self.status, self.reason, self.headers = 0, b"", []
        self.chunks, self.buffered, self.error, self.body_started = [], 0, None, False
        self.head = self.loop.create_future()
        self.silence, self.idle_limit = read_timeout, idle_timeout
        assert self.transport is not None
        self.transport.writelines(data)
        if read_timeout is not None:
            self.last_read = self.loop.time()
            self.timer = self.loop.call_at(self.last_read + read_timeout, self._check_silence)

    async def response_head(self) -> None:
        assert self.head is not None
        await self.head

    def take(self) -> bytes | None:
        """The body bytes that arrived since the last call (None when there are none yet)."""
        if not self.chunks:
            return None
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.last_read = self.loop.time()  # the silence while paused was ccm's, not the upstream's
            self.transport.resume_reading()
        return data

    async def wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def finish(self) -> None:
        """The response is closed: back to the pool when its answer was read to the end, else hang up."""
        if not self.busy:
            return
        self.busy = False
        # not reused while its reading is paused (the answer ended inside a burst ccm had not read yet)
        if self.complete and self.keep_alive and not self.closed and not self.paused:
            self.used = True
            self.pool.release(self)
        else:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.aborted = True
            self.transport.abort()  # connection_lost follows: it fails a reader still waiting, and tells the pool

    # --- internals -----------------------------------------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
            head = self.head
            if head is not None and not head.done():
                head.set_exception(error)
                head.exception()  # retrieved here: a request cancelled meanwhile must not log it as unhandled
        self._stop_timer()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _use_idle_limit(self) -> None:
        """The first body bytes are in: from now on the idle timeout bounds the silence."""
        idle = self.idle_limit
        if idle is None:
            return
        shorter = self.silence is None or idle < self.silence
        self.silence = idle
        if shorter and self.timer is not None:
            self.timer.cancel()
            self.timer = self.loop.call_at(self.last_read + idle, self._check_silence)
        elif self.timer is None and not self.complete:
            self.timer = self.loop.call_at(self.last_read + idle, self._check_silence)

    def _check_silence(self) -> None:
        self.timer = None
        limit = self.silence
        if limit is None or not self.busy or self.complete or self.error is not None:
            return
        now = self.loop.time()
        if self.paused:  # ccm stopped reading: the upstream's silence is not the upstream's fault
            self.last_read = now
        due = self.last_read + limit
        if now < due:
            self.timer = self.loop.call_at(due, self._check_silence)
            return
        self._fail(httpx.ReadTimeout(f"upstream sent nothing for {limit:g}s"))
        self.abort()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _body_until_close(self) -> bool:
        """Whether the answer declared no length, so its body ends where the connection does (RFC 9112 §6.3)."""
        if self.status in (204, 304):
            return False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True


class Pool:
    """The connections of one transport: idle ones per origin, a limit on all of them, a queue of waiters."""

    def __init__(self, limits: httpx.Limits) -> None:
        self.max_connections = limits.max_connections
        self.max_idle = limits.max_keepalive_connections
        self.expiry = limits.keepalive_expiry
        self.idle: dict[Origin, list[Connection]] = {}  # per origin, in the order they were released
        self.open: set[Connection] = set()
        self.connecting = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    @property
    def idle_count(self) -> int:
        return sum(len(idle) for idle in self.idle.values())  # an origin or two: not worth a counter to keep in step

    async def acquire(self, origin: Origin, connect_timeout: float | None, pool_timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        deadline = None if pool_timeout is None else loop.time() + pool_timeout
        while True:
            if self.closed:
                raise httpx.PoolTimeout("the client was closed")
            connection = self._take_idle(origin, loop.time())
            if connection is not None:
                return connection
            if self.max_connections is None or len(self.open) + self.connecting < self.max_connections:
                return await self._connect(origin, connect_timeout)
            self._evict_other_origin(origin)
            await self._wait_for_room(deadline)

    def release(self, connection: Connection) -> None:
        if self.closed or (self.max_idle is not None and self.idle_count >= self.max_idle):
            connection.abort()
            return
        connection.idle_since = connection.loop.time()
        self.idle.setdefault(connection.origin, []).append(connection)
        self._wake_one()

    def forget(self, connection: Connection) -> None:
        """`connection` is closed: it no longer counts, and its place may go to a waiter."""
        if connection not in self.open:
            return
        self.open.discard(connection)
        idle = self.idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)
        self._wake_one()

    def close(self) -> None:
        self.closed = True
        for connection in list(self.open):
            connection.abort()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(httpx.PoolTimeout("the client was closed"))
        self.waiters.clear()

    def _take_idle(self, origin: Origin, now: float) -> Connection | None:
        idle = self.idle.get(origin)
        while idle and self.expiry is not None and now - idle[0].idle_since > self.expiry:
            idle.pop(0).abort()  # the oldest first (released in order): what is left is within the expiry
        while idle:
            connection = idle.pop()  # the most recently used: the likeliest to be alive and warm
            if connection.closed or connection.transport is None or connection.transport.is_closing():
                continue
            return connection
        return None

    def _evict_other_origin(self, origin: Origin) -> None:
        """The pool is full: an idle connection to another origin makes room (it is closed, and `forget` wakes us)."""
        for other, idle in self.idle.items():
            if other != origin and idle:
                idle.pop(0).abort()  # out of the list now: a second waiter in this turn evicts another one
                return

    async def _wait_for_room(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the room came as the deadline did: take it
            raise httpx.PoolTimeout("no upstream connection became free in time") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # the room given to this waiter goes to the next one
            raise

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = tls_context() if scheme == b"https" else None
        hostname = host.decode("ascii")
        self.connecting += 1  # holds its place under `max_connections` while connecting
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self, origin),
                    sock=await open_socket(hostname, port),
                    ssl=context,
                    server_hostname=hostname if context is not None else None,
                )
        except TimeoutError:
            self._wake_one()
            raise httpx.ConnectTimeout(f"could not connect to {hostname}:{port} within {timeout:g}s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError is an OSError)
            self._wake_one()
            raise httpx.ConnectError(f"could not connect to {hostname}:{port}: {exc}") from exc
        except asyncio.CancelledError:
            self._wake_one()
            raise
        finally:
            self.connecting -= 1
        if connection.closed:  # hung up before ccm could say anything
            self._wake_one()
            raise httpx.ConnectError(f"{hostname}:{port} closed the connection as soon as it opened")
        if self.closed:  # the client was closed while this connection was being opened
            connection.abort()
            raise httpx.PoolTimeout("the client was closed")
        self.open.add(connection)
        return connection


class Body(httpx.AsyncByteStream):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self.connection
        while True:
            data = connection.take()
            if data is not None:
                yield data
            elif connection.error is not None:
                raise connection.error
            elif connection.complete:
                return
            else:
                await connection.wait()

    async def aclose(self) -> None:
        self.connection.finish()


class Http1Transport(httpx.AsyncBaseTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        self.pool = Pool(limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        origin = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        timeouts = request.extensions.get("timeout", {})
        data = [_request_head(request), await _request_body(request)]
        while True:
            try:
                connection = await self.pool.acquire(origin, timeouts.get("connect"), timeouts.get("pool"))
            except httpx.TransportError as exc:
                exc.request = request
                raise
            try:
                connection.send(data, timeouts.get("read"), request.extensions.get(IDLE_TIMEOUT))
                await connection.response_head()
            except _Stale:  # each retry takes another idle connection or opens a new one, which cannot be stale
                RESENDS.set(RESENDS.get() + 1)
                continue
            except httpx.TransportError as exc:
                exc.request = request
                raise
            except BaseException:  # cancelled while waiting (client gone, deadline): the answer cannot be read now
                connection.abort()
                raise
            extensions: dict[str, object] = {"http_version": b"HTTP/1.1", TIMED_READS: True}
            if connection.reason:
                extensions["reason_phrase"] = connection.reason
            return httpx.Response(connection.status, headers=connection.headers, stream=Body(connection),
                                  request=request, extensions=extensions)

    async def aclose(self) -> None:
        self.pool.close()


async def _request_body(request: httpx.Request) -> bytes:
    try:
        return request.content  # ccm's requests carry their body in memory
    except httpx.RequestNotRead:
        return await request.aread()


def _request_head(request: httpx.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [b"%s: %s" % pair for pair in request.headers.raw]
    head = b"\r\n".join(lines)
    # a line break inside a name or value would smuggle in a header of its own: counted once over the whole head
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        raise httpx.LocalProtocolError("a request header contains a line break", request=request)
    return head + b"\r\n\r\n"
