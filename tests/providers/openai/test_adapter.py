"""OpenAIAdapter against an `httpx.MockTransport` upstream: what it sends, non-stream replies, primed streams, errors
before and after the first event, usage, and chunks forwarded as they arrive."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ccm.errors import UpstreamError
from ccm.providers.base import Call, Reply
from ccm.providers.openai.adapter import OpenAIAdapter
from ccm.table import Literal_, Model, Provider, Timeouts
from ccm.upstream.client import resolve_endpoint
from tests.conftest import load_fixture
from tests.fakes.clients import mock_client

STREAMS = Path(__file__).parents[1] / "golden" / "openai" / "streams"
PROVIDER = Provider(name="up", type="openai", url=Literal_(value="http://127.0.0.1:9/v1/"),
                    key=Literal_(value="sk-test"), auth="bearer")
MODEL = Model(name="fast", provider="up", model="gpt-test", max_output=8192)

Handler = Callable[[httpx.Request], Any]


def adapter(handler: Handler, timeouts: Timeouts | None = None) -> OpenAIAdapter:
    provider = PROVIDER.model_copy(update={"timeouts": timeouts}) if timeouts else PROVIDER
    endpoint = resolve_endpoint(provider, {})
    return OpenAIAdapter(provider, endpoint, mock_client(handler))


def call(stream: bool, body: dict[str, Any] | None = None) -> Call:
    body = body or {"model": "claude-opus-5-5", "max_tokens": 64000, "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}], "stop_sequences": ["END"]}
    return Call(body=body, raw=orjson.dumps(body), headers={}, stream=stream, model=MODEL)


def sse(*pieces: bytes, gate: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    """A body arriving in `pieces`; with a gate, everything after the first piece waits for it."""
    async def body() -> AsyncIterator[bytes]:
        for i, piece in enumerate(pieces):
            if i == 1 and gate is not None:
                await gate.wait()
            yield piece
    return body()


def stream_response(content: AsyncIterator[bytes] | bytes) -> httpx.Response:
    return answer(200, content, "text/event-stream")


def answer(status: int, content: AsyncIterator[bytes] | bytes | Any, content_type: str = "application/json",
           headers: dict[str, str] | None = None) -> httpx.Response:
    """A response whose body streams like a network one (httpx reads `bytes` content eagerly, and a read response
    cannot be streamed raw again); anything but bytes or a stream is sent as JSON."""
    if not isinstance(content, bytes) and not hasattr(content, "__anext__"):
        content = orjson.dumps(content)
    body = sse(content) if isinstance(content, bytes) else content
    return httpx.Response(status, headers={"content-type": content_type, **(headers or {})}, content=body)


async def collect(reply: Reply) -> bytes:
    assert reply.stream is not None
    return b"".join([chunk async for chunk in reply.stream])


# --- non-streaming --------------------------------------------------------------------------------------------


async def test_non_stream_request_and_reply(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(200, {
            "id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "Checking.", "reasoning_content": "need ls",
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "Bash", "arguments": "{'command': 'ls',}"}},
                    {"id": "functions.Read:1", "type": "function", "function": {"name": "Read", "arguments": ""}},
                ]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 60}},
        })

    with caplog.at_level(logging.WARNING, logger="ccm.providers.openai.adapter"):
        reply = await adapter(handler).send(call(stream=False))
    request = seen[0]
    assert str(request.url) == "http://127.0.0.1:9/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    sent = json.loads(request.content)
    assert (sent["model"], sent["max_tokens"], sent["stop"]) == ("gpt-test", 8192, ["END"])
    assert "stream" not in sent

    assert reply.status == 200 and reply.headers == [("content-type", "application/json")]
    message = json.loads(reply.body or b"")
    assert message["id"].startswith("msg_") and message["model"] == "claude-opus-5-5"
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert message["content"][0] == {"type": "thinking", "thinking": "need ls", "signature": ""}
    assert message["content"][2]["input"] == {"command": "ls"}
    assert message["content"][3]["input"] == {}
    assert message["content"][3]["id"] == "toolu_ccm_" + b"functions.Read:1".hex()
    assert (message["stop_reason"], message["stop_sequence"]) == ("tool_use", None)
    assert message["usage"] == {"input_tokens": 40, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60,
                                "output_tokens": 20}
    assert (reply.usage.input_tokens, reply.usage.cache_read_input_tokens, reply.usage.output_tokens) == (40, 60, 20)
    assert "repaired malformed arguments of tool Bash" in caplog.text
    assert "ls" not in caplog.text  # the arguments themselves are never logged


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b'{"error": {"message": "model overloaded", "type": "server_error", "code": null}}', 502, "protocol"),
    (b'{"error": {"message": "slow down", "code": 429}}', 429, "429"),
    (b"<html>gateway</html>", 502, "protocol"),
    (b'{"choices": []}', 502, "protocol"),
])
async def test_non_stream_200_that_is_not_a_completion(body: bytes, status: int, reason: str) -> None:
    upstream = adapter(lambda _: answer(200, body))
    with pytest.raises(UpstreamError) as raised:
        await upstream.send(call(stream=False))
    assert (raised.value.status, raised.value.reason, raised.value.provider) == (status, reason, "up")


async def test_upstream_error_status_keeps_its_meaning() -> None:
    upstream = adapter(lambda _: answer(429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                                        headers={"retry-after": "7"}))
    with pytest.raises(UpstreamError) as raised:
        await upstream.send(call(stream=True))
    error = raised.value
    assert (error.status, error.error_type, error.retry_after, error.message) == (
        429, "rate_limit_error", "7", "Rate limit reached")


# --- streaming ------------------------------------------------------------------------------------------------


async def test_stream_matches_the_golden_transcript_and_fills_usage() -> None:
    raw = (STREAMS / "openai-text.sse").read_bytes()
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return stream_response(sse(*[raw[i : i + 50] for i in range(0, len(raw), 50)]))

    reply = await adapter(handler).send(call(stream=True))
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}
    assert reply.headers == [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
    output = (await collect(reply)).decode()
    expected = (STREAMS / "openai-text.expected").read_text().replace("msg_golden", "MSG")
    message_id = json.loads(output.split("\n")[1].removeprefix("data: "))["message"]["id"]
    assert output.replace(message_id, "MSG") == expected
    assert (reply.usage.input_tokens, reply.usage.cache_read_input_tokens, reply.usage.output_tokens) == (176, 1024, 7)
    await reply.aclose()
    await reply.aclose()  # safe twice


async def test_send_returns_at_the_first_event_and_forwards_chunks_as_they_come() -> None:
    gate = asyncio.Event()
    first = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\n\n'
    rest = (b'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n")
    upstream = adapter(lambda _: stream_response(sse(first, rest, gate=gate)))
    reply = await asyncio.wait_for(upstream.send(call(stream=True)), timeout=5)
    assert reply.stream is not None
    primed = await asyncio.wait_for(reply.stream.__anext__(), timeout=5)
    assert primed.startswith(b"event: message_start")
    assert b'"text_delta","text":"Hel"' in primed  # forwarded while the upstream still holds the rest
    following = asyncio.ensure_future(reply.stream.__anext__())
    await asyncio.sleep(0.05)
    assert not following.done()
    gate.set()
    second = await asyncio.wait_for(following, timeout=5)  # everything that read translated to, at once
    assert b'"text":"lo"' in second
    tail = second + await collect(reply)
    assert tail.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


@pytest.mark.parametrize("body", [
    b": OPENROUTER PROCESSING\n\ndata: {\"error\":{\"message\":\"No endpoints found\",\"code\":404}}\n\n",
    b": OPENROUTER PROCESSING\n\n",
    b"data: [DONE]\n\n",
    b"data: {not json\n\n",
])
async def test_failures_before_the_first_event_are_raised_by_send(body: bytes) -> None:
    responses: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        responses.append(stream_response(body))
        return responses[-1]

    with pytest.raises(UpstreamError) as raised:
        await adapter(handler).send(call(stream=True))
    assert raised.value.provider == "up" and raised.value.status in (404, 502)
    assert responses[0].is_closed  # the upstream connection was released


async def test_a_json_answer_to_a_stream_request_is_an_error() -> None:
    upstream = adapter(lambda _: answer(200, {"error": {"message": "bad key"}}))
    with pytest.raises(UpstreamError) as raised:
        await upstream.send(call(stream=True))
    assert (raised.value.status, raised.value.message) == (502, "upstream error: bad key")


async def test_mid_stream_error_is_raised_from_the_iterator() -> None:
    raw = (STREAMS / "error-mid-stream.sse").read_bytes()
    reply = await adapter(lambda _: stream_response(sse(raw))).send(call(stream=True))
    chunks = []
    with pytest.raises(UpstreamError) as raised:
        assert reply.stream is not None
        async for chunk in reply.stream:
            chunks.append(chunk)
    assert b"".join(chunks).count(b"event: ") == 3  # message_start, content_block_start, the "Partial" delta
    assert (raised.value.status, raised.value.provider) == (500, "up")


async def test_an_idle_upstream_times_out_mid_stream() -> None:
    async def stalled() -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        await asyncio.sleep(30)
        yield b""

    upstream = adapter(lambda _: stream_response(stalled()), Timeouts(idle=0.05))
    reply = await upstream.send(call(stream=True))
    with pytest.raises(UpstreamError) as raised:
        await collect(reply)
    assert (raised.value.status, raised.value.reason) == (504, "timeout")


async def test_a_real_claude_code_request_round_trips() -> None:
    body = load_fixture("image-tool-result.json")["body"]
    stream = (STREAMS / "openai-tool-split-args.sse").read_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "user"]
        return stream_response(stream)

    reply = await adapter(handler).send(Call(body, orjson.dumps(body), {}, True, MODEL))
    output = await collect(reply)
    assert b'"name":"Bash"' in output and output.endswith(b'{"type":"message_stop"}\n\n')
    assert reply.usage.output_tokens == 31


async def test_closing_the_reply_releases_the_upstream_mid_stream() -> None:
    gate = asyncio.Event()
    responses: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        responses.append(stream_response(sse(b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
                                              b"data: [DONE]\n\n", gate=gate)))
        return responses[-1]

    reply = await adapter(handler).send(call(stream=True))
    assert not responses[0].is_closed
    await reply.aclose()  # what the core does when the client disconnects
    assert responses[0].is_closed
