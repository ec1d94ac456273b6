"""The Gemini adapter end to end at the HTTP edge: URLs, key header, primed streams, early and mid-stream failures
(through `httpx.MockTransport`), and a multi-turn tool round trip against the strict fake on a loopback port that
proves the thought signature returns on the right call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from ccm.errors import UpstreamError
from ccm.providers.base import Call
from ccm.providers.gemini.adapter import GeminiAdapter
from ccm.table import Literal_, Model, Provider, Timeouts
from ccm.upstream.client import Endpoint, PooledClient, make_client
from tests.conftest import load_fixture
from tests.fakes.clients import mock_client
from tests.fakes.fake_gemini import FakeGemini, call_chunk, check_gemini_request, text_chunk
from tests.fakes.loopback import serve
from tests.providers.translation_checks import Frames, check_grammar, drain, parse_events, sdk_final_message

MODEL = Model(name="gemini-pro", provider="gemini", model="gemini-3-pro-preview", max_output=65536)
USAGE = {"promptTokenCount": 100, "candidatesTokenCount": 5, "totalTokenCount": 105}


def adapter(url: str, transport: httpx.AsyncBaseTransport | None = None) -> tuple[GeminiAdapter, PooledClient]:
    provider = Provider(name="gemini", type="gemini", url=Literal_(value=url), auth="x-goog-api-key")
    endpoint = Endpoint("gemini", url, (("x-goog-api-key", "gemini-test-key"),), Timeouts(first_byte=5, idle=5))
    client = mock_client(transport) if transport is not None else make_client(provider)
    return GeminiAdapter(provider, endpoint, client), client


def mock(answer: Callable[[httpx.Request], httpx.Response]) -> tuple[GeminiAdapter, PooledClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    gemini, client = adapter("https://generativelanguage.googleapis.com", httpx.MockTransport(handler))
    return gemini, client, seen


def sse(*chunks: dict[str, Any]) -> httpx.Response:
    frames = [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Frames(frames))


def call_for(body: dict[str, Any], stream: bool = True, model: Model = MODEL) -> Call:
    return Call(body=body, raw=orjson.dumps(body), headers={}, stream=stream, model=model)


async def test_streaming_request_url_key_body_and_primed_reply() -> None:
    gemini, client, seen = mock(lambda r: sse(text_chunk("Hel", usage=USAGE),
                                              text_chunk("lo", finish="STOP", usage=USAGE)))
    body = load_fixture("bash-tool-result-turn2.json")["body"]
    reply = await gemini.send(call_for(body))
    request = seen[0]
    assert str(request.url) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-3-pro-preview:streamGenerateContent?alt=sse"
    )
    assert request.headers["x-goog-api-key"] == "gemini-test-key"
    check_gemini_request(MODEL.model, orjson.loads(request.content))
    assert reply.status == 200 and ("content-type", "text/event-stream") in reply.headers
    out = await drain(reply)
    check_grammar(out)
    message = await sdk_final_message(out)
    assert message.content[0].text == "Hello" and message.model == "claude-opus-5-5"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (100, 5)
    await client.aclose()


async def test_non_streaming_reply_is_a_complete_message() -> None:
    answer = {"candidates": [{"content": {"role": "model",
                                          "parts": [{"functionCall": {"name": "Bash", "args": {"command": "ls"}}}]},
                              "finishReason": "STOP"}], "usageMetadata": USAGE}
    gemini, client, seen = mock(lambda r: httpx.Response(200, headers={"content-type": "application/json"},
                                                          stream=Frames([orjson.dumps(answer)])))
    body = {"model": "claude-haiku-5-5", "messages": [{"role": "user", "content": "list files"}], "max_tokens": 50}
    reply = await gemini.send(call_for(body, stream=False))
    assert seen[0].url.path == "/v1beta/models/gemini-3-pro-preview:generateContent"
    message = orjson.loads(reply.body or b"")
    assert message["stop_reason"] == "tool_use" and message["model"] == "claude-haiku-5-5"
    assert message["content"][0]["input"] == {"command": "ls"} and message["content"][0]["id"].startswith("toolu_")
    assert reply.usage.output_tokens == 5
    await client.aclose()


async def test_a_url_that_names_the_api_version_is_used_as_written() -> None:
    seen: list[httpx.Request] = []
    gemini, client = adapter("https://proxy.example/gemini/v1beta", httpx.MockTransport(
        lambda r: seen.append(r) or sse(text_chunk("ok", finish="STOP"))))
    await drain(await gemini.send(call_for({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})))
    assert seen[0].url.path == "/gemini/v1beta/models/gemini-3-pro-preview:streamGenerateContent"
    await client.aclose()


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (lambda r: httpx.Response(429,
                                  json={"error": {"code": 429, "message": "Quota exceeded",
                                                  "status": "RESOURCE_EXHAUSTED"}},
                                  headers={"retry-after": "7"}), 429, "429"),
        (lambda r: httpx.Response(503, json={"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}),
         529, "5xx"),
        (lambda r: sse({"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}), 500, "5xx"),
        (lambda r: sse({"candidates": [{"content": {"parts": []}, "finishReason": "MALFORMED_FUNCTION_CALL"}]}),
         502, "protocol"),
        (lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Frames([])),
         502, "truncated"),
    ],
)
async def test_failures_before_the_first_event_are_raised_from_send(answer: Any, status: int, reason: str) -> None:
    gemini, client, _ = mock(answer)
    with pytest.raises(UpstreamError) as caught:
        await gemini.send(call_for({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
    assert (caught.value.status, caught.value.reason) == (status, reason)
    await client.aclose()


async def test_a_failure_after_output_is_raised_from_the_stream() -> None:
    gemini, client, _ = mock(lambda r: sse(text_chunk("partial"),
                                           {"error": {"code": 503, "message": "gone", "status": "UNAVAILABLE"}}))
    reply = await gemini.send(call_for({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
    assert reply.stream is not None
    first = await reply.stream.__anext__()
    assert b"partial" in first
    with pytest.raises(UpstreamError) as caught:
        await reply.stream.__anext__()
    assert caught.value.status == 529
    await reply.aclose()
    await client.aclose()


async def test_tool_round_trip_through_the_loopback_fake_carries_the_signature_back() -> None:
    """Turn 1: Gemini 3 asks for two parallel Bash calls (the fake signs the first). Claude Code stores the reply
    as-is and sends the results; the fake accepts turn 2 only if the signature it issued is on the first call."""
    fake = FakeGemini()
    fake.script(
        [call_chunk("Bash", {"command": "echo a"}, usage=USAGE),
         call_chunk("Bash", {"command": "echo b"}, finish="STOP", usage=USAGE)],
        [text_chunk("Both printed.", finish="STOP", usage=USAGE)],
    )
    with serve(fake) as (url, _):
        gemini, client = adapter(url)
        body = load_fixture("bash-tool-call-turn1.json")["body"]
        first = await drain(await gemini.send(call_for(body)))
        message = await sdk_final_message(first)
        assert [b.type for b in message.content] == ["thinking", "tool_use", "tool_use"]
        content = [b.model_dump(exclude_none=True) for b in message.content]
        results = [{"type": "tool_result", "tool_use_id": b["id"], "content": b["input"]["command"][5:]}
                   for b in content if b["type"] == "tool_use"]
        follow_up = dict(body, messages=[*body["messages"], {"role": "assistant", "content": content},
                                          {"role": "user", "content": results}])
        second = await drain(await gemini.send(call_for(follow_up)))
        await client.aclose()
    assert [e.rejected for e in fake.exchanges] == [None, None]
    sent = fake.exchanges[1].body["contents"]
    calls = [p for p in sent[-2]["parts"] if "functionCall" in p]
    assert calls[0]["thoughtSignature"] in fake.issued and "thoughtSignature" not in calls[1]
    assert [p["functionResponse"]["response"] for p in sent[-1]["parts"]] == [{"result": "a"}, {"result": "b"}]
    assert [e for e, _ in parse_events(second)][-1] == "message_stop"
    assert (await sdk_final_message(second)).content[0].text == "Both printed."
