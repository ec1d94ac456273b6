"""The Responses adapter at the HTTP edge: URL, bearer key, primed streams and failures (`httpx.MockTransport`),
and a tool round trip against the strict fake on a loopback port."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from ccm.errors import UpstreamError
from ccm.providers.base import Call
from ccm.providers.responses.adapter import ResponsesAdapter
from ccm.table import Literal_, Model, Provider, Timeouts
from ccm.upstream.client import Endpoint, PooledClient, make_client
from tests.conftest import load_fixture
from tests.fakes.clients import mock_client
from tests.fakes.fake_responses import FakeResponses, call_item, check_responses_request, message_item, reasoning_item
from tests.fakes.loopback import serve
from tests.providers.translation_checks import GOLDEN, Frames, check_grammar, drain, sdk_final_message

MODEL = Model(name="gpt", provider="openai", model="gpt-5.5", max_output=128000)
STREAMS = GOLDEN / "responses" / "streams"


def adapter(url: str, transport: httpx.AsyncBaseTransport | None = None) -> tuple[ResponsesAdapter, PooledClient]:
    provider = Provider(name="openai", type="openai-responses", url=Literal_(value=url), auth="bearer")
    endpoint = Endpoint("openai", url, (("authorization", "Bearer responses-test-key"),),
                        Timeouts(first_byte=5, idle=5))
    client = mock_client(transport) if transport is not None else make_client(provider)
    return ResponsesAdapter(provider, endpoint, client), client


def call_for(body: dict[str, Any], stream: bool = True) -> Call:
    return Call(body=body, raw=orjson.dumps(body), headers={}, stream=stream, model=MODEL)


def event_stream(name: str) -> httpx.Response:
    frames = [f + b"\n\n" for f in (STREAMS / f"{name}.sse").read_bytes().split(b"\n\n") if f]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Frames(frames))


async def test_stream_posts_to_responses_with_the_key_and_primes_on_output() -> None:
    seen: list[httpx.Request] = []
    responses, client = adapter("https://api.openai.com/v1",
                                httpx.MockTransport(lambda r: seen.append(r) or event_stream("function-call")))
    reply = await responses.send(call_for(load_fixture("bash-tool-result-turn2.json")["body"]))
    assert str(seen[0].url) == "https://api.openai.com/v1/responses"
    assert seen[0].headers["authorization"] == "Bearer responses-test-key"
    sent = orjson.loads(seen[0].content)
    check_responses_request(sent)
    assert sent["stream"] is True
    out = await drain(reply)
    check_grammar(out)
    message = await sdk_final_message(out)
    assert message.stop_reason == "tool_use" and message.content[-1].input["command"] == "ls -la"
    assert (reply.usage.input_tokens, reply.usage.cache_read_input_tokens) == (176, 1024)
    await client.aclose()


async def test_non_stream() -> None:
    answer = {"status": "completed", "output": [message_item("Done.")],
              "usage": {"input_tokens": 9, "output_tokens": 2}}
    responses, client = adapter("https://api.openai.com/v1", httpx.MockTransport(
        lambda r: httpx.Response(200, headers={"content-type": "application/json"},
                                 stream=Frames([orjson.dumps(answer)]))))
    body = {"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
            "stream": True}
    reply = await responses.send(call_for(body, stream=False))
    message = orjson.loads(reply.body or b"")
    assert message["content"] == [{"type": "text", "text": "Done."}] and message["model"] == "claude-sonnet-5-5"
    assert reply.usage.output_tokens == 2
    await client.aclose()


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (lambda r: httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit_error"}}),
         429, "429"),
        (lambda r: event_stream("error-event"), 429, "429"),
        (lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Frames([
            b'event: response.created\ndata: {"type":"response.created","response":{}}\n\n',
            b'event: response.failed\n'
            b'data: {"type":"response.failed","response":{"error":{"code":"server_error","message":"x"}}}\n\n'])),
         500, "5xx"),
        (lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Frames([
            b'event: response.created\ndata: {"type":"response.created","response":{}}\n\n'])), 502, "truncated"),
    ],
)
async def test_failures_before_output_are_raised_from_send(answer: Any, status: int, reason: str) -> None:
    responses, client = adapter("https://api.openai.com/v1", httpx.MockTransport(answer))
    with pytest.raises(UpstreamError) as caught:
        await responses.send(call_for({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}))
    assert (caught.value.status, caught.value.reason) == (status, reason)
    await client.aclose()


async def test_a_failure_after_output_is_raised_from_the_stream() -> None:
    responses, client = adapter("https://api.openai.com/v1",
                                httpx.MockTransport(lambda r: event_stream("error-failed")))
    reply = await responses.send(call_for({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}))
    with pytest.raises(UpstreamError):
        await drain(reply)
    await reply.aclose()
    await client.aclose()


async def test_tool_round_trip_through_the_loopback_fake() -> None:
    fake = FakeResponses(args_only_in_done=True)

    def answer_with_output(body: dict[str, Any]) -> list[dict[str, Any]]:
        output = next(i["output"] for i in body["input"] if i["type"] == "function_call_output")
        return [message_item(f"The command printed {output}.")]

    fake.script([call_item("Bash", {"command": "echo hi"}, "call_1")], answer_with_output)
    with serve(fake) as (url, _):
        responses, client = adapter(f"{url}/v1")
        body = load_fixture("bash-tool-call-turn1.json")["body"]
        message = await sdk_final_message(await drain(await responses.send(call_for(body))))
        content = [b.model_dump(exclude_none=True) for b in message.content]
        follow_up = dict(body, messages=[*body["messages"], {"role": "assistant", "content": content},
                                          {"role": "user",
                                           "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                        "content": "hi"}]}])
        final = await sdk_final_message(await drain(await responses.send(call_for(follow_up))))
        await client.aclose()
    assert [e.rejected for e in fake.exchanges] == [None, None]
    assert final.content[0].text == "The command printed hi."
    assert fake.exchanges[1].body["input"][-2:] == [
        {"type": "function_call", "call_id": "call_1", "name": "Bash", "arguments": '{"command":"echo hi"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "hi"},
    ]


async def test_encrypted_reasoning_round_trips_through_claude_codes_history() -> None:
    # A reasoning model's reasoning is not lost at a tool turn (store: false): the fake issues encrypted reasoning
    # only when asked, and refuses any it did not issue.
    fake = FakeResponses()
    fake.script([reasoning_item("Listing first.", id="rs_1", encrypted_content="gAAAAB-turn1"),
                 call_item("Bash", {"command": "ls"}, "call_1")],
                [message_item("Two files.")])
    with serve(fake) as (url, _):
        responses, client = adapter(f"{url}/v1")
        body = load_fixture("bash-tool-call-turn1.json")["body"]
        message = await sdk_final_message(await drain(await responses.send(call_for(body))))
        content = [b.model_dump(exclude_none=True) for b in message.content]
        assert [b["type"] for b in content] == ["thinking", "tool_use"]
        follow_up = dict(body, messages=[*body["messages"], {"role": "assistant", "content": content},
                                          {"role": "user",
                                           "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                        "content": "a b"}]}])
        await drain(await responses.send(call_for(follow_up)))
        await client.aclose()
    assert [e.rejected for e in fake.exchanges] == [None, None]
    first, second = (e.body for e in fake.exchanges)
    assert first["include"] == ["reasoning.encrypted_content"] and first["store"] is False
    assert second["input"][-3:] == [
        {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAB-turn1",
         "summary": [{"type": "summary_text", "text": "Listing first."}]},
        {"type": "function_call", "call_id": "call_1", "name": "Bash", "arguments": '{"command":"ls"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "a b"},
    ]
