"""The harness's own HTTP/1.1 load generator (asyncio, standard library only).

wrk drives the throughput and latency workloads of the real run; this client drives what wrk cannot see — the time
to the first body byte of a stream, a burst of different bodies fired at once, 256 streams held open — and all of
the smoke test, where wrk may not be installed. It speaks just enough HTTP/1.1 for that: keep-alive connections,
`content-length` and `chunked` bodies, `connection: close`.

    await load(url, body, connections=8, seconds=2.0)     -> Load (every latency, the errors, the elapsed time)
    await fetch(url, body)                                -> Answer (status, body, time to headers/first byte/end)
    await burst(url, bodies)                              -> (wall seconds for all, their Answers)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client understands."""


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    headers_s: float  # from the request's first byte sent to the end of the response headers
    first_byte_s: float  # ... to the first body byte
    total_s: float  # ... to the last body byte


@dataclass(slots=True)
class Load:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0  # non-2xx answers and broken connections
    elapsed_s: float = 0.0
    first_error: str = ""

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0


def request_bytes(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A complete POST request for `url` (host header, content-length, any extra headers)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {target or '/'} HTTP/1.1", f"host: {parts.netloc}", "content-type: application/json",
             f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; `exchange` sends a request and reads its whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, raw_request: bytes) -> Answer:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        reader, writer = self.reader, self.writer
        assert reader is not None
        started = time.perf_counter()
        writer.write(raw_request)
        head = await reader.readuntil(b"\r\n\r\n")
        headers_at = time.perf_counter()
        status, headers = _parse_head(head)
        body, first_byte_at = await _read_body(reader, headers, status)
        ended = time.perf_counter()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, body, headers_at - started, (first_byte_at or ended) - started, ended - started)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
            self.writer = None


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"bad status line: {lines[0][:80]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], status: int) -> tuple[bytes, float]:
    """The body and the time its first byte arrived (0.0 when it is empty)."""
    if status in (204, 304) or 100 <= status < 200:
        return b"", 0.0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length == 0:
            return b"", 0.0
        first = await reader.read(length)
        if not first:
            raise asyncio.IncompleteReadError(b"", length)
        first_byte_at = time.perf_counter()
        rest = await reader.readexactly(length - len(first)) if len(first) < length else b""
        return first + rest, first_byte_at
    data = await reader.read()  # no length and not chunked: the body runs to the connection's end
    return data, time.perf_counter()


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """A chunked body, parsed from whatever has arrived: one await per read, not three per chunk, so that the
    client's own cost per SSE event stays far below what it measures."""
    buffer = bytearray()
    parts: list[bytes] = []
    first_byte_at = 0.0
    position = 0
    while True:
        end = buffer.find(b"\r\n", position)
        if end >= 0:
            size = int(bytes(buffer[position:end]).split(b";")[0], 16)
            if size == 0:
                if buffer.find(b"\r\n", end + 2) >= 0:  # the blank line that ends the body (no trailers expected)
                    return b"".join(parts), first_byte_at
            elif len(buffer) >= end + 2 + size + 2:
                parts.append(bytes(buffer[end + 2:end + 2 + size]))
                first_byte_at = first_byte_at or time.perf_counter()
                position = end + 2 + size + 2
                continue
        data = await reader.read(1 << 16)
        if not data:
            raise asyncio.IncompleteReadError(bytes(buffer), None)
        del buffer[:position]
        position = 0
        buffer += data


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def fetch(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30.0) -> Answer:
    """One request on a fresh connection."""
    connection = Connection(*_endpoint(url))
    try:
        return await asyncio.wait_for(connection.exchange(request_bytes(url, body, headers)), timeout)
    finally:
        await connection.close()


async def load(url: str, body: bytes, connections: int, seconds: float, headers: dict[str, str] | None = None,
               max_requests: int | None = None, warmup: int = 1, timeout: float = 30.0) -> Load:
    """`connections` keep-alive connections, each sending `body` back to back for `seconds` (or until
    `max_requests` in all). Each connection first sends `warmup` unmeasured requests."""
    raw = request_bytes(url, body, headers)
    result = Load()
    host, port = _endpoint(url)
    budget = [max_requests if max_requests is not None else -1]

    async def one_connection() -> None:
        connection = Connection(host, port)
        try:
            try:
                for _ in range(warmup):
                    await asyncio.wait_for(connection.exchange(raw), timeout)
            finally:
                ready.append(connection)
                if len(ready) == connections:
                    warmed.set()
            await measuring.wait()
            while time.perf_counter() < deadline and budget[0] != 0:
                budget[0] -= 1
                try:
                    answer = await asyncio.wait_for(connection.exchange(raw), timeout)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError) as error:
                    result.errors += 1
                    result.first_error = result.first_error or f"{type(error).__name__}: {error}"
                    await connection.close()
                    continue
                if 200 <= answer.status < 300:
                    result.latencies_s.append(answer.total_s)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or f"HTTP {answer.status}: {answer.body[:200]!r}"
        finally:
            await connection.close()

    ready: list[Connection] = []
    warmed, measuring = asyncio.Event(), asyncio.Event()
    deadline = float("inf")
    tasks = [asyncio.create_task(one_connection()) for _ in range(connections)]
    await asyncio.wait_for(warmed.wait(), timeout)
    start = time.perf_counter()
    deadline = start + seconds
    measuring.set()
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    return result


async def burst(url: str, bodies: list[bytes], headers: dict[str, str] | None = None,
                timeout: float = 30.0) -> tuple[float, list[Answer]]:
    """Every body at once, each on its own connection opened beforehand; the wall time from the first request
    sent to the last answer read."""
    host, port = _endpoint(url)
    connections = [Connection(host, port) for _ in bodies]
    for connection in connections:
        connection.reader, connection.writer = await asyncio.open_connection(host, port)
    try:
        start = time.perf_counter()
        answers = await asyncio.wait_for(asyncio.gather(*(
            connection.exchange(request_bytes(url, body, headers))
            for connection, body in zip(connections, bodies, strict=True))), timeout)
        return time.perf_counter() - start, list(answers)
    finally:
        for connection in connections:
            await connection.close()
