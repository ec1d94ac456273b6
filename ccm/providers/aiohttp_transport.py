"""An httpx transport on aiohttp's connection pool: adapters keep httpx's API, requests travel on aiohttp.

Why: httpx's own transport (httpcore) adds over 1 ms per request here and collapses under concurrency (~230 req/s at
32 connections); aiohttp's C-accelerated HTTP/1.1 client does not (docs/performance-notes.md has the numbers).

Why not `httpx-aiohttp`: its exception map turns aiohttp's read timeout (`SocketTimeoutError`, a subclass of
`ClientConnectionError`) into `httpx.ConnectTimeout`, so an upstream that stalls before its headers would be
reported as "could not connect" (502) instead of a timeout (504); a server that drops the connection mid-answer
also becomes a ConnectTimeout. It also reads bodies in fixed 16 KB pieces. This module maps each aiohttp failure to
the httpx exception of the same meaning, so `ccm.providers.http.transport_error` classifies both transports alike,
and hands body bytes on as soon as they arrive.

The contract, as httpx's default transport keeps it:
    timeouts     `connect` bounds opening a connection, `pool` waiting for a free one, `read` the socket's silence
                 until the first body bytes (ccm's first-byte timeout); from then on the request extension
                 `IDLE_TIMEOUT` (ccm's idle timeout), when set, bounds it instead. aiohttp enforces both with one
                 timer per socket read, so no per-chunk cancel scope is needed above (a response says so with the
                 extension `TIMED_READS`); the timer stops while reading is paused by a slow consumer
    bodies       passed through undecoded: the `httpx.Response` decodes `content-encoding` as usual
    closing      closing a response whose body was not read to the end closes its connection (so a client that
                 leaves mid-stream hangs up on the upstream too); a finished one returns to the pool
    TLS          aiohttp's default context, built once when aiohttp is imported (the system's CA store;
                 SSL_CERT_FILE / SSL_CERT_DIR honoured): building another per provider would put ~40 ms on its
                 first request
    no redirects, no cookies, HTTP/1.1 only (a proxy named in the environment is the httpx client's business: it
    routes those URLs through its own transport)

The aiohttp session is created on first use, inside the event loop that serves the requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx

from ccm.providers.http import IDLE_TIMEOUT, TIMED_READS

# aiohttp exception -> httpx exception of the same meaning; the first match wins, so subclasses come first.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # connect, sock_connect, or waiting for the pool
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),  # no byte within `read`
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),  # the body ended early or was malformed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not a valid HTTP response
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (asyncio.TimeoutError, httpx.ReadTimeout),
)


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(f"{type(exc).__name__}: {exc}", request=request) from exc
        raise httpx.TransportError(f"{type(exc).__name__}: {exc}", request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request, idle: float | None) -> None:
        self._response = response
        self._request = request
        self._idle = idle

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            chunks = self._response.content.iter_any()
            async for chunk in chunks:
                if self._idle is not None:
                    self._idle_from_now_on(self._idle)
                yield chunk
                break
            async for chunk in chunks:
                yield chunk

    def _idle_from_now_on(self, idle: float) -> None:
        connection = self._response.connection
        if connection is not None and connection.protocol is not None:  # (None: the body is already all in)
            connection.protocol.read_timeout = idle
            connection.protocol.start_timeout()  # re-arm the running timer with the idle timeout

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # unread bytes left: the connection cannot be reused, hang up


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 0,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            # httpx has already set every header the request needs (Host, Accept, User-Agent, Content-Length…)
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open_session()
        timeout = request.extensions.get("timeout", {})
        with _httpx_errors(request):
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1", TIMED_READS: True}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response, request, request.extensions.get(IDLE_TIMEOUT)),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
