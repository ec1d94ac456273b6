"""The passthrough's reply side: reading what Anthropic sends without changing a byte of it.

`UsageScanner` reads usage from the `message_start` / `message_delta` frames as they pass (other frames are only
searched for those names, never parsed). `first_frame` and `raise_if_error_frame` prime a stream: a stream whose
first event is an `error` (Anthropic sends `overloaded_error` that way) is raised as an `UpstreamError` before the
client sees a 200.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ccm.providers.base import Usage
from ccm.upstream.errors import classified
from ccm.usage import from_anthropic, merge_anthropic

# An `error` frame at the very start of a stream: the status its Anthropic error type stands for (`classified`).
STREAM_START_ERRORS: dict[str, int] = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
}


async def first_frame(chunks: AsyncIterator[bytes]) -> bytes:
    """Read until the first complete SSE event (or the end): that is the reply being primed. Comment-only frames
    (a gateway's keep-alive) before it are kept with it but do not count."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if is_frame(buffer):
            break
    return buffer


def is_frame(first: bytes) -> bool:
    """Whether `first` holds a whole SSE event (else the body ended before one)."""
    if b"\n\n" not in first and b"\r\n\r\n" not in first:
        return False
    for frame in _FRAME_END.split(first)[:-1]:
        if any(line and not line.startswith(b":") for line in frame.splitlines()):
            return True
    return False


_FRAME_END = re.compile(rb"\r?\n\r?\n")


def raise_if_error_frame(first: bytes, provider: str) -> None:
    if not first.lstrip().startswith(b"event: error"):
        return
    _, _, data = first.partition(b"data:")
    try:
        error = orjson.loads(data.split(b"\n", 1)[0]).get("error", {})
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    error_type = error.get("type", "api_error") if isinstance(error, dict) else "api_error"
    message = error.get("message", "upstream stream failed") if isinstance(error, dict) else "upstream stream failed"
    raise classified(provider, STREAM_START_ERRORS.get(error_type, 500), str(message), error_type=error_type)


# The fewest bytes an Anthropic `content_block_delta` frame takes besides its content (a text delta at index 0 takes
# 99): what is left of a chunk of delta frames is at least the characters they carry.
DELTA_FRAMING = 90


class UsageScanner:
    """Reads usage from `message_start` / `message_delta` data lines as the stream passes, and notices the stream's
    end: `event: message_stop` (then `usage.final`) or `event: error` (`failed`). Other lines are only searched for
    those names (a C-speed `in`), never parsed. `ended` is False for a stream that stopped before either: cut short.
    Event lines are what the Anthropic SDK dispatches on (a `"message_stop"` inside a text delta is escaped JSON)."""

    __slots__ = ("_tail", "usage", "failed", "_reported")

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.failed = False
        self._tail = b""
        self._reported: dict[str, Any] = {}  # message_start's usage merged with each message_delta's (cumulative)

    @property
    def ended(self) -> bool:
        return self.usage.final or self.failed

    def feed(self, chunk: bytes) -> None:
        deltas = chunk.count(b"content_block_delta\n")  # once per delta frame: its `event:` line
        if deltas:  # the frames' bytes less their framing: at least the content they carry
            self.usage.streamed_chars += max(len(chunk) - DELTA_FRAMING * deltas, 0)
        data = self._tail + chunk if self._tail else chunk
        if b"message_" not in data and b"event: error" not in data:
            self._tail = data[data.rfind(b"\n") + 1 :]
            return
        lines = data.split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            self._line(line)

    def flush(self) -> None:
        """The end of the body: a last line without its newline still counts."""
        tail, self._tail = self._tail, b""
        if tail:
            self._line(tail)

    def _line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            if b'"message_start"' in line or b'"message_delta"' in line:
                self._read(line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
            if name == b"message_stop":
                self.usage.final = True
            elif name == b"error":
                self.failed = True

    def _read(self, data: bytes) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            usage = event["message"].get("usage")
        else:
            usage = event.get("usage")
        if isinstance(usage, dict):
            self._reported = merge_anthropic(self._reported, usage)
            self.usage.take(from_anthropic(self._reported))


