"""A truncated answer is an error, never a finished one — the same rule for every adapter (issue 13, item 1).

An upstream stream can end cleanly at the HTTP level (the chunked body properly terminated, or a read-until-close
body closed) before its protocol's own end: OpenAI's `finish_reason` / `[DONE]`, Anthropic's `message_stop`,
Gemini's `finishReason`, Responses' `response.completed`. Before the first output that is raised from `send` (the
core retries it like a 5xx, then falls back); after, the stream raises it where the upstream stopped (the core
writes `event: error`), never a `message_stop` that would make the fragment look complete. A non-stream JSON body
that stops before its document is complete is cut short the same way; one that is malformed elsewhere is not.
`Reply.usage.final` says whether the protocol's end was seen (the upstream's last counts are known).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from ccm.core.retry import retry_class
from ccm.errors import UpstreamError
from ccm.providers.anthropic.adapter import AnthropicAdapter
from ccm.providers.base import Call, Reply
from ccm.providers.gemini.adapter import GeminiAdapter
from ccm.providers.openai.adapter import OpenAIAdapter
from ccm.providers.responses.adapter import ResponsesAdapter
from ccm.table import Literal_, Model, Provider, Timeouts
from ccm.upstream.client import Endpoint
from tests.fakes.clients import mock_client
from tests.providers.translation_checks import Frames, parse_events

Adapter = OpenAIAdapter | GeminiAdapter | ResponsesAdapter | AnthropicAdapter
KINDS = {"openai": OpenAIAdapter, "gemini": GeminiAdapter, "openai-responses": ResponsesAdapter,
         "anthropic": AnthropicAdapter}
UPSTREAM_MODELS = {"openai": "gpt-test", "gemini": "gemini-2.5-flash", "openai-responses": "gpt-5.5",
                   "anthropic": "claude-upstream-1"}


def adapter(kind: str, frames: list[bytes], content_type: str = "text/event-stream") -> Adapter:
    provider = Provider(name="up", type=kind, url=Literal_(value="http://up.test"), key=Literal_(value="k"),  # type: ignore[arg-type]
                        auth="x-api-key")
    endpoint = Endpoint("up", "http://up.test", (("x-api-key", "k"),), Timeouts(first_byte=5, idle=5))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, stream=Frames(list(frames)))

    client = mock_client(handler)
    return KINDS[kind](provider, endpoint, client)  # type: ignore[no-any-return]


def call(kind: str, stream: bool = True) -> Call:
    body = {"model": "claude-opus-5-5", "max_tokens": 1024, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}
    model = Model(name="m", provider="up", model=UPSTREAM_MODELS[kind])
    return Call(body=body, raw=orjson.dumps(body), headers={}, stream=stream, model=model)


async def consume(reply: Reply) -> tuple[bytes, UpstreamError | None]:
    assert reply.stream is not None
    out: list[bytes] = []
    try:
        async for chunk in reply.stream:
            out.append(chunk)
    except UpstreamError as error:
        return b"".join(out), error
    finally:
        await reply.aclose()
    return b"".join(out), None


def data(value: Any) -> bytes:
    return b"data: " + orjson.dumps(value) + b"\n\n"


def event(value: dict[str, Any]) -> bytes:
    return b"event: " + value["type"].encode() + b"\n" + data(value)


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return data({"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


OPENAI_USAGE = data({"id": "c1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
GEMINI_TEXT = data({"candidates": [{"content": {"role": "model", "parts": [{"text": "Partial"}]}, "index": 0}]})
GEMINI_END = data({"candidates": [{"content": {"role": "model", "parts": [{"text": "."}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2}})
RESPONSES_TEXT = [
    event({"type": "response.created", "response": {"id": "r1", "status": "in_progress", "output": []}}),
    event({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Partial"}),
]
RESPONSES_END = event({"type": "response.completed",
                       "response": {"status": "completed", "usage": {"input_tokens": 9, "output_tokens": 2}}})
ANTHROPIC_TEXT = [
    event({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                                "model": "claude-upstream-1", "stop_reason": None,
                                                "usage": {"input_tokens": 9, "output_tokens": 1}}}),
    event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partial"}}),
]
ANTHROPIC_END = [
    event({"type": "content_block_stop", "index": 0}),
    event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
    event({"type": "message_stop"}),
]

# Each adapter's stream: some output, then the rest that makes it complete.
STREAMS: dict[str, tuple[list[bytes], list[bytes]]] = {
    "openai": ([openai_chunk({"role": "assistant", "content": "Partial"})],
               [openai_chunk({}, "stop"), OPENAI_USAGE, b"data: [DONE]\n\n"]),
    "gemini": ([GEMINI_TEXT], [GEMINI_END]),
    "openai-responses": (RESPONSES_TEXT, [RESPONSES_END]),
    "anthropic": (ANTHROPIC_TEXT, ANTHROPIC_END),
}


def assert_truncated(error: UpstreamError | None) -> None:
    assert error is not None, "a stream cut short must raise"
    assert (error.status, error.error_type, error.reason, error.provider) == (502, "api_error", "truncated", "up")
    assert "ended early" in error.message
    assert retry_class(error) == "5xx"  # retried like a server error, then the fallback


@pytest.mark.parametrize("kind", list(STREAMS))
async def test_a_stream_that_ends_before_its_protocol_end_raises_after_its_output(kind: str) -> None:
    head, _ = STREAMS[kind]
    reply = await adapter(kind, head).send(call(kind))
    output, error = await consume(reply)
    assert_truncated(error)
    assert b"Partial" in output
    assert b"message_stop" not in output and b"message_delta" not in output
    assert reply.usage.final is False


@pytest.mark.parametrize("kind", list(STREAMS))
async def test_a_complete_stream_ends_with_message_stop_and_final_usage(kind: str) -> None:
    head, rest = STREAMS[kind]
    reply = await adapter(kind, head + rest).send(call(kind))
    output, error = await consume(reply)
    assert error is None
    assert [name for name, _ in parse_events(output)][-1] == "message_stop"
    assert reply.usage.final is True


@pytest.mark.parametrize("kind", list(STREAMS))
@pytest.mark.parametrize("body", [[], [b": keep-alive\n\n"]], ids=["empty", "comment-only"])
async def test_a_stream_that_ends_before_any_event_is_raised_from_send(kind: str, body: list[bytes]) -> None:
    with pytest.raises(UpstreamError) as caught:
        await adapter(kind, body).send(call(kind))
    assert_truncated(caught.value)


async def test_a_passthrough_stream_cut_inside_its_first_frame_is_raised_from_send() -> None:
    first = ANTHROPIC_TEXT[0]
    with pytest.raises(UpstreamError) as caught:
        await adapter("anthropic", [first[: len(first) // 2]]).send(call("anthropic"))
    assert_truncated(caught.value)


async def test_a_passthrough_stream_ended_by_an_error_event_is_relayed_as_it_came() -> None:
    overloaded = event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    reply = await adapter("anthropic", [*ANTHROPIC_TEXT, overloaded]).send(call("anthropic"))
    output, error = await consume(reply)
    assert error is None  # the client already has the upstream's own error frame: no second one
    assert output.endswith(overloaded)
    assert reply.usage.final is False  # the answer did not reach its end


async def test_openai_done_without_a_finish_reason_is_complete() -> None:
    # Some hosts never send a finish chunk (PROTOCOL §8 pitfall 5): [DONE] is the protocol's end, the stop inferred.
    frames = [openai_chunk({"role": "assistant", "content": "All"}), b"data: [DONE]\n\n"]
    reply = await adapter("openai", frames).send(call("openai"))
    output, error = await consume(reply)
    assert error is None
    assert parse_events(output)[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert reply.usage.final is True


async def test_openai_finish_reason_without_done_is_a_complete_answer_whose_usage_is_not_final() -> None:
    # The answer's end came; the usage chunk and [DONE] that would follow did not.
    frames = [openai_chunk({"role": "assistant", "content": "All"}), openai_chunk({}, "stop")]
    reply = await adapter("openai", frames).send(call("openai"))
    output, error = await consume(reply)
    assert error is None
    assert [name for name, _ in parse_events(output)][-1] == "message_stop"
    assert reply.usage.final is False


# --- non-stream bodies ----------------------------------------------------------------------------------------

COMPLETE: dict[str, dict[str, Any]] = {
    "openai": {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "All"},
                                        "finish_reason": "stop"}], "usage": {"prompt_tokens": 5}},
    "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": "All"}]}, "finishReason": "STOP"}]},
    "openai-responses": {"status": "completed", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "All"}]}]},
    "anthropic": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-upstream-1",
                  "content": [{"type": "text", "text": "All"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 5, "output_tokens": 1}},
}


def non_stream(kind: str, body: bytes) -> Callable[[], Any]:
    async def send() -> Reply:
        return await adapter(kind, [body], "application/json").send(call(kind, stream=False))
    return send


@pytest.mark.parametrize("kind", list(COMPLETE))
async def test_a_complete_non_stream_body_has_final_usage(kind: str) -> None:
    reply = await non_stream(kind, orjson.dumps(COMPLETE[kind]))()
    assert reply.status == 200 and reply.usage.final is True


@pytest.mark.parametrize("kind", list(COMPLETE))
@pytest.mark.parametrize("cut", [0.5, 0.9, 0.0], ids=["half", "most", "empty"])
async def test_a_non_stream_body_whose_json_stops_before_its_end_is_truncated(kind: str, cut: float) -> None:
    whole = orjson.dumps(COMPLETE[kind], option=orjson.OPT_INDENT_2)
    with pytest.raises(UpstreamError) as caught:
        await non_stream(kind, whole[: int(len(whole) * cut)])()
    assert_truncated(caught.value)


@pytest.mark.parametrize("kind", ["openai", "gemini", "openai-responses"])
async def test_a_malformed_non_stream_body_is_a_protocol_error_not_a_truncation(kind: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        await non_stream(kind, b'{"id": "c1", "choices": ]}')()
    assert caught.value.reason == "protocol"


async def test_a_malformed_passthrough_body_is_relayed_as_it_came() -> None:
    reply = await non_stream("anthropic", b"<html>bad gateway</html>")()
    assert reply.body == b"<html>bad gateway</html>" and reply.usage.final is False
