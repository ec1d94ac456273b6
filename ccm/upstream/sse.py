"""Server-sent events: an incremental decoder for upstream streams and the encoder for Anthropic frames.

The decoder follows the WHATWG event-stream rules that matter in practice: LF, CRLF or CR line endings, `:` comment
lines (OpenRouter's `: OPENROUTER PROCESSING`), multi-line `data`, and frames split anywhere across network reads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class ServerEvent:
    event: str | None
    data: str
    # False for the body's last event when the body ended before its blank line: its data may have been cut off.
    terminated: bool = True


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            # A lone CR at the very end may be the first half of a CRLF: keep it for the next read.
            tail = b"\r" if buffer.endswith(b"\r") else b""
            buffer = buffer[: len(buffer) - len(tail)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[ServerEvent] = []
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"), events)
        return events

    def flush(self) -> list[ServerEvent]:
        """Call at end of stream: a final frame without its blank line still counts."""
        events: list[ServerEvent] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r").decode("utf-8", "replace"), events)
            self._buffer = b""
        if self._data:
            events.append(ServerEvent(self._event, "\n".join(self._data), terminated=False))
        self._event, self._data = None, []
        return events

    def _line(self, line: str, events: list[ServerEvent]) -> None:
        if not line:
            if self._data:
                events.append(ServerEvent(self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line[0] == ":":
            return
        field, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value


def encode_event(event: str, data: bytes) -> bytes:
    """One Anthropic SSE frame; `data` is already-serialised JSON."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
