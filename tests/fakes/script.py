"""What a fake upstream does with a request: scripted behaviours, neutral to the wire format.

Each fake keeps a queue; every scripted request pops the next behaviour, and `default` answers once it is empty.
A behaviour is one of:

    Reply        a successful answer: text, reasoning/thinking, tool calls; streamed when the request asks for it,
                 each text and argument split into `pieces` fragments at seeded random points, `chunk_delay`
                 seconds between frames (trickle), and optionally a `StreamFault` after some frames
    Status       an error status with the flavour's error body (or a given one) and headers (429 + retry-after…)
    Hang         no answer for `seconds` (headers never sent), then `then` (default: the fake's default)
    Raw          exact bytes with a status and content type: malformed JSON, a wrong content type, a 200 error body
    a callable   `(Exchange) -> behaviour`: decides from the request (multi-turn tool round trips)

The fakes render Reply/Status in their own protocol (`FakeOpenAI`, `FakeAnthropic`); Hang and Raw are generic.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ToolCall:
    """`arguments` is an object (serialised for the wire) or raw text sent as is (to script malformed JSON)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass(frozen=True)
class StreamFault:
    """A failure after `after` frames of a stream have been sent.

    hang       send nothing more for `seconds` (the connection stays open), then end the stream abruptly
    close      drop the connection without finishing the chunked body
    truncate   end the body cleanly (the chunked encoding terminated) before the protocol's own end: no finish,
               no `[DONE]`, no `message_stop` — what an upstream that gives up mid-answer looks like at the HTTP level
    malformed  send a frame whose data is not JSON, then end the stream
    error      send the protocol's in-stream error (OpenAI `data: {"error":…}`, Anthropic `event: error`)
    """

    kind: Literal["hang", "close", "truncate", "malformed", "error"]
    after: int = 2
    seconds: float = 30.0


@dataclass(frozen=True)
class Reply:
    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    signature: str = "c2lnbmF0dXJlLWZyb20tZmFrZQ=="  # Anthropic thinking signature
    pieces: int = 3
    seed: int = 7
    chunk_delay: float = 0.0
    fault: StreamFault | None = None
    finish: str | None = None  # the raw finish_reason / stop_reason; None: inferred like the real APIs
    input_tokens: int = 21
    output_tokens: int = 9
    cached_tokens: int = 0
    send_usage: bool = True  # False: a stream without its usage chunk (OpenAI)
    headers: tuple[tuple[str, str], ...] = ()

    def split(self, value: str) -> list[str]:
        """`value` in at most `pieces` non-empty fragments cut at seeded random points (mid-word, mid-escape)."""
        if len(value) <= 1 or self.pieces <= 1:
            return [value] if value else []
        cuts = sorted(random.Random(f"{self.seed}:{value}").sample(range(1, len(value)),
                                                                   min(self.pieces, len(value)) - 1))
        edges = [0, *cuts, len(value)]
        return [value[a:b] for a, b in itertools.pairwise(edges)]


@dataclass(frozen=True)
class Status:
    status: int
    message: str = "scripted failure"
    body: bytes | None = None  # None: the flavour's own error body for `status`
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Hang:
    seconds: float
    then: Behaviour | None = None


@dataclass(frozen=True)
class Raw:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def malformed_json() -> Raw:
    """A whole body that is not JSON (wrong before its end): nothing a retry of the same server would fix."""
    return Raw(200, b'{"id": "broken", "choices": [}')


def truncated_json() -> Raw:
    """A whole HTTP body whose JSON stops before its end (a read-until-close body cut off): an answer cut short."""
    return Raw(200, b'{"id": "chatcmpl-cut", "object": "chat.completion", "choices": [{"index": 0, "message": {"ro')


def wrong_content_type() -> Raw:
    return Raw(200, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")


def malformed_sse() -> Raw:
    return Raw(200, b"data: {this is not json\n\n", content_type="text/event-stream")


def retry_later(seconds: int = 1, status: int = 429) -> Status:
    return Status(status, "rate limited by the fake", headers=(("retry-after", str(seconds)),))


Behaviour = Reply | Status | Hang | Raw | Callable[["Exchange"], "Behaviour"]


@dataclass
class Exchange:
    """One request as the fake received it, and what it answered. Filled in by the fake's server thread."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    client_port: int
    json: Any = None
    status: int | None = None
    sent: bytearray = field(default_factory=bytearray)  # the response body bytes, exactly as written
    rejection: str | None = None  # why the fake refused the request, as its error body says
    disconnected: bool = False  # the client went away before the answer was complete
    done: bool = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", [])) if isinstance(self.json, dict) else []
