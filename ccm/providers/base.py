"""What every provider adapter is: the contract between the core and one upstream wire format.

The core hands an adapter a `Call` (the client's Anthropic request, parsed once, plus the table `Model` being tried)
and gets back a `Reply` in Anthropic's format: a complete JSON body, or an SSE stream whose first upstream event has
already arrived. An adapter makes exactly one upstream attempt; retries, fallbacks and timeouts around attempts are
the core's. Failures before the reply starts are raised as `UpstreamError` (built by `ccm.upstream.client`); failures
mid-stream are raised from the stream iterator, and the core turns them into an `event: error` frame. An answer that
ends before its protocol's own end is such a failure (reason `truncated`), never a finished answer.

`Reply.usage` is filled in while the response is read; `usage.final` says when the upstream's last counts are in
(the protocol's end was seen). The core reads it in one place when a request finishes (logging today, metering later).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ccm.table import Model
from ccm.usage import TokenUsage

# The headers a client authenticates with: the core removes them when they carry ccm's own inbound key, the
# Anthropic passthrough forwards them when its provider declares no key of its own.
CLIENT_AUTH = ("x-api-key", "authorization")


@dataclass(slots=True)
class Usage:
    """A reply's running counts in Anthropic's terms, as the adapter reads them (what Claude Code is told).
    `cache_creation_input_tokens` is every cache write; `cache_creation_1h_input_tokens` the part of it with a
    1-hour lifetime (Anthropic's `cache_creation.ephemeral_1h_input_tokens`), billed at its own rate."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    web_search_requests: int = 0
    # True once the upstream's answer reached its protocol's end (Anthropic's `message_stop`, OpenAI's usage chunk
    # or `[DONE]`, Gemini's `finishReason`, Responses' `response.completed`, a whole non-stream body): the counts are
    # the upstream's last. False while a stream is being read, and for good when it ended early or in an error.
    final: bool = False
    # Characters of content (text, thinking, tool arguments) streamed so far: an upper bound on the output tokens
    # forwarded (a token is at least one character), which a metered request's hold is kept ahead of mid-stream.
    streamed_chars: int = 0

    def take(self, report: TokenUsage) -> None:
        """An upstream's usage report, read by `ccm.usage`'s reader for its wire format, as the running counts."""
        self.input_tokens = report.input
        self.output_tokens = report.output
        self.cache_read_input_tokens = report.cache_read
        self.cache_creation_input_tokens = report.cache_write_5m + report.cache_write_1h
        self.cache_creation_1h_input_tokens = report.cache_write_1h
        self.web_search_requests = report.web_search

    def billed(self) -> TokenUsage:
        """The counts per billed class (`ccm.usage`)."""
        hour = min(self.cache_creation_1h_input_tokens, self.cache_creation_input_tokens)
        return TokenUsage(
            input=self.input_tokens,
            output=self.output_tokens,
            cache_write_5m=self.cache_creation_input_tokens - hour,
            cache_write_1h=hour,
            cache_read=self.cache_read_input_tokens,
            web_search=self.web_search_requests,
        )


@dataclass(slots=True)
class Call:
    body: dict[str, Any]  # the client's Anthropic Messages body; adapters must not mutate it (fallbacks reuse it)
    # the exact bytes the client sent, for passthrough when nothing needs changing; None when the core rewrote the
    # body (then an adapter that needs bytes serialises `body`: most never do, so the core does not)
    raw: bytes | None
    headers: Mapping[str, str]  # the client's headers, lower-case names
    stream: bool
    model: Model  # the target being tried: upstream model id, max_output, force/drop
    # the core's local count of the request's input tokens, when it has one: the translating adapters report it in
    # `message_start` (their upstreams count only at the end); the final `message_delta` has the upstream's count
    input_tokens: int | None = None


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]  # for the client: content-type, request-id, …
    body: bytes | None = None  # complete Anthropic JSON, when not streaming
    stream: AsyncIterator[bytes] | None = None  # Anthropic SSE bytes, when streaming
    usage: Usage = field(default_factory=Usage)
    # releases a stream's upstream connection; safe to call twice (a plain reply's was released as its body was read)
    aclose: Callable[[], Awaitable[None]] = _nothing


class Adapter(Protocol):
    """One per provider, built once per table with the provider's pooled client and resolved settings."""

    async def send(self, call: Call) -> Reply: ...

    async def aclose(self) -> None: ...
