"""What translating adapters share on the way back to the client: Anthropic events, messages and primed streams.

A translator (one per upstream wire format) reads upstream output and calls an `EventWriter`, which produces the
Anthropic event sequence of PROTOCOL §3 and nothing else: `message_start` before the first block, contiguous block
indices, one open block at a time, `signature_delta` just before a thinking block's stop, a `message_delta` whose
usage is always present (zeros when the upstream sent none) and `message_stop` last. The same events serve both
directions of the reply: `encode_events` turns them into SSE bytes for a stream, `fold_message` into the complete
message of a non-stream reply, so the two can never disagree.

`stream_reply` primes a stream: it returns only once the first upstream event has produced Anthropic output, so an
early upstream failure is raised as `UpstreamError` (a real status the core can fall back on) instead of becoming an
`event: error` after a 200.

`apply_overrides` applies a model's `force` and `drop` to an upstream body, dotted paths included.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

import httpx
import orjson

from ccm.errors import UpstreamError
from ccm.providers.base import Reply, Usage
from ccm.providers.http import iter_body, read_body
from ccm.sse import ServerEvent, SSEDecoder, encode_event
from ccm.table import Timeouts

Event = tuple[str, dict[str, Any]]

JSON_HEADERS = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_CHARS = frozenset(_ID_ALPHABET + "_-")


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


def mint_tool_id() -> str:
    return "toolu_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def tool_id(upstream_id: object) -> str:
    """An upstream call id usable as an Anthropic `tool_use.id` (`^[a-zA-Z0-9_-]+$`, PROTOCOL §8 pitfall 2):
    kept when valid, other characters replaced by `_`, minted when absent."""
    if not isinstance(upstream_id, str) or not upstream_id:
        return mint_tool_id()
    if all(c in _ID_CHARS for c in upstream_id):
        return upstream_id
    return "".join(c if c in _ID_CHARS else "_" for c in upstream_id)


def usage_payload(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    }


class EventWriter:
    """Builds one reply's Anthropic events. `usage` is the Reply's own object: translators update it in place and
    the writer reports it in `message_start` and `message_delta`."""

    def __init__(self, model: str, usage: Usage) -> None:
        self.model = model
        self.usage = usage
        self.saw_tool_use = False
        self.finished = False
        self._events: list[Event] = []
        self._started = False
        self._index = -1
        self._open: str | None = None

    @property
    def has_blocks(self) -> bool:
        return self._index >= 0

    def take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        message = {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_payload(self.usage),
        }
        self._events.append(("message_start", {"type": "message_start", "message": message}))

    def text(self, text: str) -> None:
        if not text:  # empty text blocks are rejected when Claude Code sends them back (PROTOCOL §8 pitfall 1)
            return
        if self._open != "text":
            self._open_block("text", {"type": "text", "text": ""})
        self._delta({"type": "text_delta", "text": text})

    def thinking(self, text: str) -> None:
        if not text:
            return
        if self._open != "thinking":
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self._delta({"type": "thinking_delta", "thinking": text})

    def signature(self, signature: str) -> None:
        """Ends the open thinking block with `signature`, or writes a thinking block holding only the signature."""
        if self._open != "thinking":
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self._delta({"type": "signature_delta", "signature": signature})
        self.close()

    def start_tool(self, call_id: str, name: str, kind: str = "tool_use") -> None:
        """Opens a `tool_use` (or `server_tool_use`) block; its arguments follow as `tool_arguments` fragments."""
        if kind == "tool_use":
            self.saw_tool_use = True
        self._open_block(kind, {"type": kind, "id": call_id, "name": name, "input": {}})

    def tool_arguments(self, fragment: str) -> None:
        """A fragment of the open tool call's JSON arguments, forwarded unparsed."""
        if fragment:
            self._delta({"type": "input_json_delta", "partial_json": fragment})

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

    def finish(self, stop_reason: str) -> None:
        if self.finished:
            return
        self.start()
        self.close()
        self.finished = True
        self._events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
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
        self._events.append(
            ("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": content_block})
        )

    def _delta(self, delta: dict[str, Any]) -> None:
        self._events.append(("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}))


def encode_events(events: Iterable[Event]) -> bytes:
    return b"".join(encode_event(name, orjson.dumps(payload)) for name, payload in events)


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
            block, delta = message["content"][payload["index"]], payload["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                arguments[payload["index"]] = arguments.get(payload["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and payload["index"] in arguments:
            message["content"][payload["index"]]["input"] = orjson.loads(arguments.pop(payload["index"]))
        elif name == "message_delta":
            message.update(payload["delta"])
            message["usage"] = dict(message["usage"], **payload["usage"])
    return message


class StreamTranslator(Protocol):
    """Upstream SSE events in, Anthropic events out (through its `EventWriter`)."""

    provider: str
    writer: EventWriter

    def feed(self, event: ServerEvent) -> None: ...

    def finish(self) -> None:
        """The upstream stream ended: flush, or raise `UpstreamError` if it ended too early."""


def protocol_error(provider: str, message: str) -> UpstreamError:
    return UpstreamError(502, message, reason="protocol", provider=provider)


def parse_json(provider: str, data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise protocol_error(provider, f"upstream {provider!r} sent malformed JSON ({exc})") from exc


async def read_json(provider: str, response: httpx.Response, timeouts: Timeouts) -> dict[str, Any]:
    """A non-stream upstream body as a JSON object; a 200 that is not one, or that holds an error, is a failure."""
    try:
        body = await read_body(response, timeouts)
    finally:
        await response.aclose()
    data = parse_json(provider, body)
    if not isinstance(data, dict):
        raise protocol_error(provider, f"upstream {provider!r} answered with a JSON {type(data).__name__}, not an object")
    error = data.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamError(500, f"upstream {provider!r} answered 200 with an error: {message}", "5xx", provider)
    return data


async def stream_reply(
    response: httpx.Response,
    timeouts: Timeouts,
    translator: StreamTranslator,
) -> Reply:
    """A primed streaming Reply: returns once the translator produced its first output, raising what went wrong
    before that. The rest is translated chunk by chunk as it arrives."""
    relay = _relay(response, timeouts, translator)
    try:
        first = await relay.__anext__()
    except StopAsyncIteration:
        await response.aclose()
        raise protocol_error(translator.provider, f"upstream {translator.provider!r} ended its stream without output") from None
    except BaseException:
        await _close(relay, response)
        raise

    async def stream() -> AsyncIterator[bytes]:
        yield first
        async for chunk in relay:
            yield chunk

    async def aclose() -> None:
        await _close(relay, response)

    return Reply(status=200, headers=list(SSE_HEADERS), stream=stream(), usage=translator.writer.usage, aclose=aclose)


async def _relay(response: httpx.Response, timeouts: Timeouts, translator: StreamTranslator) -> AsyncIterator[bytes]:
    decoder = SSEDecoder()
    writer = translator.writer
    async for chunk in iter_body(response, timeouts):
        for event in decoder.feed(chunk):
            translator.feed(event)
        if out := writer.take():
            yield encode_events(out)
    for event in decoder.flush():
        translator.feed(event)
    translator.finish()
    if out := writer.take():
        yield encode_events(out)


async def _close(relay: Any, response: httpx.Response) -> None:
    await response.aclose()
    try:
        await relay.aclose()
    except RuntimeError:  # the generator is running in another task; closing the response ends it there
        pass


# --- force / drop --------------------------------------------------------------------------------------------------


def apply_overrides(body: dict[str, Any], force: Iterable[tuple[str, Any]], drop: Iterable[str]) -> dict[str, Any]:
    """`force` sets keys, `drop` removes them, in the upstream's own wire format; `a.b.c` addresses nested objects.
    Dicts along a written path are copied first, so shared (cached) parts of the body are never modified."""
    for path, value in force:
        _set(body, path.split("."), value)
    for path in drop:
        _remove(body, path.split("."))
    return body


def _set(body: dict[str, Any], keys: list[str], value: Any) -> None:
    node = body
    for key in keys[:-1]:
        child = node.get(key)
        node[key] = dict(child) if isinstance(child, Mapping) else {}
        node = node[key]
    node[keys[-1]] = value


def _remove(body: dict[str, Any], keys: list[str]) -> None:
    node = body
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, Mapping):
            return
        node[key] = dict(child)
        node = node[key]
    node.pop(keys[-1], None)

