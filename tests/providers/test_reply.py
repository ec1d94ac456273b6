"""The pieces every translating adapter shares (`ccm.providers.reply`): the tool-id policy, the event writer's
invariants, the non-stream fold, `apply_overrides`, and the stream relay's priming and cleanup."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import anyio
import httpx
import orjson
import pytest

from ccm.errors import UpstreamError
from ccm.providers.base import Usage
from ccm.providers.reply import EventWriter, client_tool_id, encode_events, fold_message, read_json, stream_reply
from ccm.providers.request import apply_overrides
from ccm.providers.tool_ids import ENCODED_ID_PREFIX, upstream_tool_id
from ccm.table import Timeouts
from ccm.upstream.sse import ServerEvent, encode_event

VALID_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def test_tool_ids_round_trip() -> None:
    assert client_tool_id("call_abc-1") == "call_abc-1"
    encoded = client_tool_id("functions.Bash:0")
    assert encoded.startswith(ENCODED_ID_PREFIX) and VALID_ID.match(encoded)
    assert upstream_tool_id(encoded) == "functions.Bash:0"
    assert upstream_tool_id("toolu_01abc") == "toolu_01abc"
    assert upstream_tool_id(ENCODED_ID_PREFIX + "zz") == ENCODED_ID_PREFIX + "zz"  # not ours: unchanged
    foreign = upstream_tool_id("fs.read/1")  # an invalid id in the client's history: made valid, consistently
    assert VALID_ID.match(foreign) and foreign == upstream_tool_id("fs.read/1")
    assert VALID_ID.match(client_tool_id("x." * 50))


def test_the_writer_keeps_valid_ids_encodes_invalid_ones_and_mints_missing_or_repeated_ones() -> None:
    writer = EventWriter("m", Usage(), "msg_abc")
    assert writer.tool_id("call_1") == "call_1"
    assert writer.tool_id("functions.Bash:0") == ENCODED_ID_PREFIX + b"functions.Bash:0".hex()
    assert writer.tool_id(None) == "toolu_abc_2"
    assert writer.tool_id("") == "toolu_abc_3"
    assert writer.tool_id(7) == "toolu_abc_4"
    assert writer.tool_id("call_1") == "toolu_abc_5"  # Anthropic rejects a repeated id
    minted = EventWriter("m", Usage()).tool_id(None)
    assert VALID_ID.match(minted) and re.fullmatch(r"toolu_[0-9a-f]{32}_0", minted)


def test_the_stream_and_the_folded_message_say_the_same() -> None:
    usage = Usage()
    writer = EventWriter("claude-x", usage, "msg_1")
    writer.thinking("hmm")
    writer.signature("sig")
    writer.text("")  # nothing: empty text blocks are never written
    writer.text("Hello")
    writer.text(" there")
    writer.start_tool("call_1", "Bash")
    writer.tool_arguments('{"command":')
    writer.tool_arguments("")
    writer.tool_arguments(' "ls"}')
    usage.output_tokens = 9
    writer.finish("stop_sequence", "END")
    writer.finish("end_turn")  # a second finish writes nothing
    events = writer.take()
    assert [name for name, _ in events].count("message_stop") == 1
    frames = encode_events(events)
    assert frames.startswith(b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"')
    assert b'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" there"}}\n\n' in frames
    assert fold_message(events) == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Hello there"},
            {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
        ],
        "stop_reason": "stop_sequence", "stop_sequence": "END",
        "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 9},
    }


def test_delta_frames_are_the_serialised_event_objects() -> None:
    """Deltas are encoded straight to bytes: the frames must be exactly what serialising the event object gives."""
    fields = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json",
              "signature_delta": "signature"}
    tricky = 'quote " backslash \\ newline \n tab \t emoji \U0001f600 nul \x00 </script> \u2028'
    writer = EventWriter("m", Usage(), "msg_1")
    writer.thinking(tricky)
    writer.signature("s/+=")
    for _ in range(12):  # indices past one digit
        writer.text(tricky)
        writer.start_tool("c", "t")
        writer.tool_arguments('{"a": "' + tricky)
    deltas = [(name, payload) for name, payload in writer.take() if name == "content_block_delta"]
    assert {payload[1] for _, payload in deltas} == set(fields)
    for name, (index, kind, value) in deltas:
        event = {"type": name, "index": index, "delta": {"type": kind, fields[kind]: value}}
        assert encode_events([(name, (index, kind, value))]) == encode_event(name, orjson.dumps(event))


def test_overrides_set_and_remove_dotted_paths_without_touching_shared_parts() -> None:
    shared = {"temperature": 1, "thinkingConfig": {"thinkingBudget": 1024}}
    body = {"model": "m", "generationConfig": shared, "top_k": 3}
    out = apply_overrides(body, [("generationConfig.temperature", 0), ("a.b", 1), ("top_p", 0.5)],
                          ["generationConfig.thinkingConfig.thinkingBudget", "top_k", "missing.key"])
    assert out == {"model": "m", "generationConfig": {"temperature": 0, "thinkingConfig": {}}, "a": {"b": 1},
                   "top_p": 0.5}
    assert shared == {"temperature": 1, "thinkingConfig": {"thinkingBudget": 1024}}


# --- the relay ----------------------------------------------------------------------------------------------------


class LineTranslator:
    """A minimal translator: every `data:` line is a text delta, `end` finishes, `fail` raises."""

    provider = "up"

    def __init__(self) -> None:
        self.writer = EventWriter("m", Usage(), "msg_t")

    def feed(self, event: ServerEvent) -> None:
        if event.data == "fail":
            raise UpstreamError(500, "boom", "5xx")
        if event.data == "end":
            self.writer.finish("end_turn")
        else:
            self.writer.text(event.data)

    def finish(self) -> None:
        raise UpstreamError(502, "cut short", "protocol")


def response(body: AsyncIterator[bytes]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


async def pieces(*chunks: bytes, then: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if then is not None:
        await then.wait()


async def test_output_before_a_failure_goes_out_first() -> None:
    upstream = response(pieces(b"data: a\n\ndata: fail\n\n"))
    reply = await stream_reply(upstream, Timeouts(), LineTranslator())
    assert reply.stream is not None
    first = await reply.stream.__anext__()
    assert b'"text":"a"' in first
    with pytest.raises(UpstreamError):
        await reply.stream.__anext__()
    assert upstream.is_closed


async def test_reading_stops_at_message_stop() -> None:
    hold = asyncio.Event()  # the upstream never ends its body: the relay must not wait for it
    upstream = response(pieces(b"data: a\n\ndata: end\n\ndata: late\n\n", then=hold))
    reply = await stream_reply(upstream, Timeouts(), LineTranslator())
    assert reply.stream is not None
    output = b"".join([chunk async for chunk in reply.stream])
    assert output.endswith(b'{"type":"message_stop"}\n\n') and b"late" not in output
    assert upstream.is_closed


async def test_a_stream_without_output_is_a_protocol_error_and_releases_the_upstream() -> None:
    upstream = response(pieces(b": keep-alive\n\n"))
    with pytest.raises(UpstreamError) as raised:
        await stream_reply(upstream, Timeouts(), LineTranslator())
    assert raised.value.reason == "protocol"
    assert upstream.is_closed


class SlowClose(httpx.AsyncByteStream):
    """A body whose close takes a while, as a real connection's can."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"data: a\n\n"
        await anyio.sleep(30)

    async def aclose(self) -> None:
        await anyio.sleep(0.05)
        self.closed = True


async def test_closing_the_upstream_completes_even_when_the_request_is_cancelled() -> None:
    body = SlowClose()
    upstream = httpx.Response(200, stream=body)
    reply = await stream_reply(upstream, Timeouts(), LineTranslator())
    with anyio.CancelScope() as scope:
        scope.cancel()  # the client went away while ccm was releasing the upstream
        await reply.aclose()
    assert body.closed


async def test_a_non_stream_body_that_stalls_times_out_and_is_released() -> None:
    upstream = response(pieces(b'{"id": ', then=asyncio.Event()))
    with pytest.raises(UpstreamError) as raised:
        await read_json("gem", upstream, Timeouts(idle=0.05))
    assert raised.value.reason == "timeout"
    assert upstream.is_closed
