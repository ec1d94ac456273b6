"""What the translating adapters (OpenAI Chat, Gemini, OpenAI Responses) share: the one way to write an Anthropic
reply, to relay it, to name tool calls, and to apply a model's `force` / `drop`.

Writing a reply. A translator (one per upstream wire format) reads upstream output and calls an `EventWriter`,
which produces the Anthropic event sequence of PROTOCOL §3 and nothing else: `message_start` before the first block,
contiguous block indices, one open block at a time, no empty text or thinking deltas, `signature_delta` just before
a thinking block's stop, a `message_delta` whose usage is always present (zeros when the upstream sent none) and
`message_stop` last. The same events serve both kinds of reply: `encode_events` turns them into SSE bytes for a
stream, `fold_message` into the complete message of a non-stream reply, so the two can never disagree.

Relaying a stream. `stream_reply` primes it: it returns only once the translator produced its first output, so an
early upstream failure is raised as `UpstreamError` (a real status the core can fall back on) instead of becoming an
`event: error` after a 200. The output of each upstream read is then yielded as soon as it is translated; the
output of the events before a failure is yielded before the failure is raised (the failing event's own is
dropped). Reading stops once the reply is finished (nothing may follow `message_stop`). Closing the upstream
response is shielded from cancellation, so it completes even when the client's request is being cancelled.

Tool ids (`EventWriter.tool_id`, and `upstream_tool_id` on the request side): Anthropic accepts `tool_use.id` only
when it matches `^[a-zA-Z0-9_-]+$` (PROTOCOL §8 pitfall 2). An upstream id that does is kept; one that does not
(kimi's `functions.Bash:0`) reaches the client as `toolu_ccm_<hex of the original>` and is decoded back on the way
up, so both sides see ids they accept; a missing id, or one repeated within the reply, is minted from the message
id (`toolu_<message hex>_<n>`), unique within the reply and reproducible in tests.

`apply_overrides` applies a model's `force` and `drop` to an upstream body, dotted paths included.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import anyio
import httpx
import orjson

from ccm.errors import UpstreamError
from ccm.providers.base import Reply, Usage
from ccm.providers.tool_ids import client_tool_id
from ccm.table import Timeouts
from ccm.upstream.client import iter_body, read_body
from ccm.upstream.errors import classified, protocol_error, truncated_error
from ccm.upstream.sse import ServerEvent, SSEDecoder, encode_event

# One Anthropic event: (name, payload), the payload being the event's JSON object, except for the event written per
# token, `content_block_delta`, whose payload is (index, delta type, value): kept compact, so that encoding it costs
# one string serialisation (`encode_events`).
Event = tuple[str, Any]

_DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json",
                 "signature_delta": "signature"}
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
# What follows the index in a delta frame, up to the value, per delta type: the bytes orjson writes for the dict.
_DELTA_MIDDLES = {kind: f',"delta":{{"type":"{kind}","{field}":'.encode() for kind, field in _DELTA_FIELDS.items()}

JSON_HEADERS = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def new_message_id() -> str:
    return "msg_" + os.urandom(16).hex()


def usage_payload(usage: Usage) -> dict[str, int]:
    """Anthropic's usage object, both cache fields always present (Claude Code reads them as caching support)."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    }


# --- tool ids -----------------------------------------------------------------------------------------------------


# --- the writer ---------------------------------------------------------------------------------------------------


class EventWriter:
    """Builds one reply's Anthropic events. `usage` is the Reply's own object: translators update it in place and
    the writer reports it in `message_start` and `message_delta`. `message_id` is minted when not given.
    `input_estimate` (the core's local count, `Call.input_tokens`) is `message_start`'s input when the upstream has
    not reported one yet; `message_delta` always reports the upstream's own counts."""

    __slots__ = ("model", "usage", "message_id", "input_estimate", "saw_tool_use", "finished", "_events", "_started",
                 "_index", "_open", "_tool_ids")

    def __init__(
        self, model: str, usage: Usage, message_id: str | None = None, input_estimate: int | None = None
    ) -> None:
        self.model = model
        self.usage = usage
        self.message_id = message_id or new_message_id()
        # `Call.input_tokens`: message_start's input when the upstream's is unknown
        self.input_estimate = input_estimate
        self.saw_tool_use = False
        self.finished = False
        self._events: list[Event] = []
        self._started = False
        self._index = -1
        self._open: str | None = None
        self._tool_ids: set[str] = set()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def has_blocks(self) -> bool:
        return self._index >= 0

    def take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def tool_id(self, upstream_id: object) -> str:
        """The client's id for an upstream tool-call id (see the module docstring)."""
        candidate = client_tool_id(upstream_id) if isinstance(upstream_id, str) and upstream_id else ""
        if not candidate or candidate in self._tool_ids:
            candidate = f"toolu_{self.message_id.removeprefix('msg_')}_{len(self._tool_ids)}"
        self._tool_ids.add(candidate)
        return candidate

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        usage = usage_payload(self.usage)
        if self.input_estimate is not None and not self.usage.input_tokens:
            usage["input_tokens"] = self.input_estimate  # the upstream counts at the end; message_delta has its count
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        self._events.append(("message_start", {"type": "message_start", "message": message}))

    def text(self, text: str) -> None:
        if not text:  # empty text blocks are rejected when Claude Code sends them back (PROTOCOL §8 pitfall 1)
            return
        if self._open != "text":
            self._open_block("text", {"type": "text", "text": ""})
        self.usage.streamed_chars += len(text)
        self._events.append(("content_block_delta", (self._index, "text_delta", text)))

    def thinking(self, text: str) -> None:
        if not text:
            return
        if self._open != "thinking":
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self.usage.streamed_chars += len(text)
        self._events.append(("content_block_delta", (self._index, "thinking_delta", text)))

    def signature(self, signature: str) -> None:
        """Ends the open thinking block with `signature`, or writes a thinking block holding only the signature."""
        if self._open != "thinking":
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self._events.append(("content_block_delta", (self._index, "signature_delta", signature)))
        self.close()

    def start_tool(self, call_id: str, name: str, kind: str = "tool_use") -> None:
        """Opens a `tool_use` (or `server_tool_use`) block; its arguments follow as `tool_arguments` fragments."""
        if kind == "tool_use":
            self.saw_tool_use = True
        self._open_block(kind, {"type": kind, "id": call_id, "name": name, "input": {}})

    def tool_arguments(self, fragment: str) -> None:
        """A fragment of the open tool call's JSON arguments, forwarded unparsed."""
        if fragment:
            self.usage.streamed_chars += len(fragment)
            self._events.append(("content_block_delta", (self._index, "input_json_delta", fragment)))

    def tool_use(self, call_id: str, name: str, arguments: str) -> None:
        """A whole tool call: start, its complete JSON arguments as one delta, stop."""
        self.start_tool(call_id, name)
        self.tool_arguments(arguments)
        self.close()

    def block(self, content_block: dict[str, Any]) -> None:
        """A block that arrives whole in its `content_block_start` (e.g. `web_search_tool_result`)."""
        self._open_block(content_block["type"], content_block)
        self.close()

    def close(self) -> None:
        if self._open is not None:
            self._events.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
            self._open = None

    def finish(self, stop_reason: str, stop_sequence: str | None = None, *, final: bool = True) -> None:
        """Ends the reply. `final`: the upstream's protocol end was seen, so its usage is the last (`Usage.final`);
        False when the answer is complete but the upstream's end marker, which may carry usage, never came."""
        if self.finished:
            return
        self.start()
        self.close()
        self.finished = True
        self.usage.final = final
        self._events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": usage_payload(self.usage),
                },
            )
        )
        self._events.append(("message_stop", {"type": "message_stop"}))

    def _open_block(self, kind: str, content_block: dict[str, Any]) -> None:
        self.start()
        self.close()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": content_block}
        self._events.append(("content_block_start", start))


def encode_events(events: Iterable[Event]) -> bytes:
    """The events as Anthropic SSE frames, exactly as `encode_event(name, orjson.dumps(payload))` would write them."""
    frames = []
    for name, payload in events:
        if name == "content_block_delta":
            index, kind, value = payload
            frames.append(_DELTA_HEAD + b"%d" % index + _DELTA_MIDDLES[kind] + orjson.dumps(value) + b"}}\n\n")
        else:
            frames.append(encode_event(name, orjson.dumps(payload)))
    return b"".join(frames)


def fold_message(events: Iterable[Event]) -> dict[str, Any]:
    """The complete Anthropic message a finished event sequence describes (tool arguments parsed at block stop)."""
    message: dict[str, Any] = {}
    arguments: dict[int, str] = {}
    for name, payload in events:
        if name == "message_start":
            message = dict(payload["message"], content=[])
        elif name == "content_block_start":
            message["content"].append(dict(payload["content_block"]))
        elif name == "content_block_delta":
            index, kind, value = payload
            block = message["content"][index]
            if kind == "input_json_delta":
                arguments[index] = arguments.get(index, "") + value
            elif kind == "signature_delta":
                block["signature"] = value
            else:
                field = _DELTA_FIELDS[kind]
                block[field] += value
        elif name == "content_block_stop" and payload["index"] in arguments:
            message["content"][payload["index"]]["input"] = orjson.loads(arguments.pop(payload["index"]))
        elif name == "message_delta":
            message.update(payload["delta"])
            message["usage"] = dict(message["usage"], **payload["usage"])
    return message


# --- errors and bodies --------------------------------------------------------------------------------------------


def ended_early(data: bytes | str, exc: orjson.JSONDecodeError) -> bool:
    """Whether JSON that failed to parse is a document cut short rather than a malformed one: nothing at all, or a
    valid beginning that stops before its end (the parser fails at the end of the text, `{"a": [1,` or `{"a": "hel`).
    A document wrong anywhere else (`{"a": }`, HTML, content after the end) is malformed."""
    if not data.strip():
        return True
    text = exc.doc.rstrip()
    return bool(text) and exc.pos >= len(text)


def parse_json(provider: str, data: bytes | str, whole: bool = True) -> Any:
    """JSON from an upstream: cut short is `truncated`, malformed is `protocol`. `whole`: nothing framed the text's
    end but the text itself (a body; an event the body ended inside), so stopping before the end is a cut."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if whole and ended_early(data, exc):
            raise truncated_error(provider, "its JSON stops before the end") from exc
        raise protocol_error(provider, f"upstream {provider!r} sent malformed JSON ({exc})") from exc


def parse_event(provider: str, event: ServerEvent) -> dict[str, Any]:
    """A streamed event's data, which must be a JSON object. An event whose frame ended (its blank line came) is
    malformed when its JSON is; only the body's unterminated last one can have been cut short."""
    value = parse_json(provider, event.data, whole=not event.terminated)
    if not isinstance(value, dict):
        raise protocol_error(provider, f"upstream {provider!r} streamed a non-object event")
    return value


async def read_all(provider: str, response: httpx.Response, timeouts: Timeouts) -> bytes:
    """A non-stream upstream body, the response closed after even when the request is being cancelled. A failure
    reading it need not name the provider: the core's upstream boundary does (`ccm.upstream.errors.located`)."""
    try:
        return await read_body(response, timeouts)
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


async def read_json(provider: str, response: httpx.Response, timeouts: Timeouts) -> dict[str, Any]:
    """A non-stream upstream body as a JSON object; a 200 that is not one, or that holds an error, is a failure."""
    data = parse_json(provider, await read_all(provider, response, timeouts))
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise protocol_error(provider, f"upstream {provider!r} answered with a JSON {kind}, not an object")
    error = data.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise classified(provider, 500, f"upstream {provider!r} answered 200 with an error: {message}")
    return data


# --- streams ------------------------------------------------------------------------------------------------------


class StreamTranslator(Protocol):
    """Upstream SSE events in, Anthropic events out (through its `EventWriter`)."""

    provider: str
    writer: EventWriter

    def feed(self, event: ServerEvent) -> None: ...

    def finish(self) -> None:
        """The upstream body ended before the writer finished: finish it if the answer's end was seen, else raise
        `truncated_error` (a fragment must never look like a finished answer)."""


async def stream_reply(response: httpx.Response, timeouts: Timeouts, translator: StreamTranslator) -> Reply:
    """A primed streaming Reply: returns once the translator produced its first output, raising what went wrong
    before that. The rest is translated read by read as it arrives."""
    relay = _relay(response, timeouts, translator)
    try:
        first = await relay.__anext__()
    except StopAsyncIteration:
        await _close(relay, response)
        name = translator.provider
        raise protocol_error(name, f"upstream {name!r} ended its stream without output") from None
    except BaseException:
        await _close(relay, response)
        raise

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in relay:
                yield chunk
        finally:
            await _close(relay, response)

    async def aclose() -> None:
        await _close(relay, response)

    return Reply(status=200, headers=list(SSE_HEADERS), stream=stream(), usage=translator.writer.usage, aclose=aclose)


async def _relay(response: httpx.Response, timeouts: Timeouts, translator: StreamTranslator) -> AsyncIterator[bytes]:
    decoder = SSEDecoder()
    writer = translator.writer
    body = iter_body(response, timeouts)
    async for chunk in body:
        out, failure = _translate(translator, decoder.feed(chunk))
        if out:
            yield encode_events(out)
        if failure is not None:
            raise failure
        if writer.finished:  # nothing may follow message_stop: what is left is read only to keep the connection
            await _drain(body)
            return
    out, failure = _translate(translator, decoder.flush(), at_end=True)
    if out:
        yield encode_events(out)
    if failure is not None:
        raise failure


# After the reply finished (OpenAI's `[DONE]`, Anthropic's message_stop) the body's end often comes in a later read;
# reading up to it returns the connection to the pool instead of hanging up. Bounded: a server that keeps talking
# after its end marker is hung up on.
DRAIN_SECONDS = 0.05
DRAIN_BYTES = 64 * 1024


async def _drain(body: AsyncIterator[bytes]) -> None:
    read = 0
    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            async for chunk in body:
                read += len(chunk)
                if read > DRAIN_BYTES:
                    return
        except UpstreamError:
            return  # the reply is complete: a failure after its end changes nothing


def _translate(
    translator: StreamTranslator, events: list[ServerEvent], at_end: bool = False
) -> tuple[list[Event], UpstreamError | None]:
    """The output of `events`, fed until the reply is finished (and finished at the end of the body), and the
    failure that stopped them if any. The output of the events before a failure is kept, so it still goes out
    first; the failing event's own partial output is not (a first event that fails leaves nothing to send, and
    the failure becomes a real status)."""
    writer = translator.writer
    out: list[Event] = []
    try:
        for event in events:
            translator.feed(event)
            out += writer.take()
            if writer.finished:
                return out, None
        if at_end and not writer.finished:
            translator.finish()
            out += writer.take()
    except UpstreamError as exc:
        writer.take()
        return out, exc
    return out, None


async def _close(relay: Any, response: httpx.Response) -> None:
    with anyio.CancelScope(shield=True):  # the upstream is released even when the client's request is cancelled
        await response.aclose()
        # RuntimeError: the generator is running in another task; closing the response ends it there
        with contextlib.suppress(RuntimeError):
            await relay.aclose()


# --- force / drop --------------------------------------------------------------------------------------------------


