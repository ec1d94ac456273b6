"""The official `anthropic` SDK → a real `ccm run` → the strict FakeOpenAI, all on 127.0.0.1.

Every upstream request is checked by the fake the way OpenAI checks it (a violation is a 400 the test sees), so a
green test means ccm's translation is acceptable to a real OpenAI-compatible server, and what the SDK accumulates
proves the translation back.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import fixture_names, load_fixture
from tests.fakes import Exchange, Reply, Status, StreamFault, ToolCall, retry_later

from .conftest import CLIENT_KEY, OUTPUT_CAP, Stack
from .stream_check import read_stream

MODEL = "claude-opus-5-5"
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
}
# A 1x1 PNG, as the Read tool returns it.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005"
        "0001ff0f8a6c5f0000000049454e44ae426082"
    )
).decode()


def last_chat(stack: Stack) -> dict[str, Any]:
    requests = stack.fake.requests("/v1/chat/completions")
    assert requests, "the upstream received no chat request"
    return requests[-1].json


def test_text_non_streaming(openai_stack: Stack) -> None:
    openai_stack.fake.script(Reply(text="Hi there."))
    message = openai_stack.client().messages.create(
        model=MODEL, max_tokens=32000, system="Be brief.", messages=[{"role": "user", "content": "Say hi"}]
    )
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Hi there."
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 9
    sent = last_chat(openai_stack)
    assert sent["model"] == "gpt-fake"
    assert sent["max_tokens"] <= OUTPUT_CAP  # clamped from 32000 to the model's max_output
    assert sent["messages"][0]["role"] == "system" and "Be brief." in json.dumps(sent["messages"][0]["content"])
    assert openai_stack.fake.rejections == []


def test_text_streaming_through_the_sdk_accumulator(openai_stack: Stack) -> None:
    openai_stack.fake.script(Reply(text="Streaming works, piece by piece.", pieces=6))
    with openai_stack.client().messages.stream(
        model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": "Stream something"}]
    ) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(pieces) == "Streaming works, piece by piece." and len(pieces) > 1
    assert message.content[0].text == "Streaming works, piece by piece." and message.stop_reason == "end_turn"
    sent = last_chat(openai_stack)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == 21


def bash_then_answer(exchange: Exchange) -> Reply:
    """Turn 1: ask for a Bash call. Turn 2 (the request carries the tool result): quote the tool's output."""
    tool_messages = [m for m in exchange.messages if m.get("role") == "tool"]
    if not tool_messages:
        return Reply(text="Let me run that.", tool_calls=(ToolCall("Bash", {"command": "echo hi"}),), pieces=4)
    return Reply(text=f"The command printed: {tool_messages[-1]['content']}")


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "json"])
def test_tool_call_round_trip(openai_stack: Stack, streaming: bool) -> None:
    openai_stack.fake.default = bash_then_answer
    client = openai_stack.client()
    history: list[dict[str, Any]] = [{"role": "user", "content": "Run echo hi"}]

    def turn() -> anthropic.types.Message:
        if streaming:
            with client.messages.stream(model=MODEL, max_tokens=2048, tools=[BASH], messages=history) as stream:
                return stream.get_final_message()
        return client.messages.create(model=MODEL, max_tokens=2048, tools=[BASH], messages=history)

    first = turn()
    assert first.stop_reason == "tool_use"
    tool_use = first.content[-1]
    assert tool_use.type == "tool_use" and tool_use.name == "Bash" and tool_use.input == {"command": "echo hi"}
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", tool_use.id)  # Claude Code stores it; Anthropic rejects anything else
    history += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "hi"}]},
    ]
    second = turn()
    assert second.content[0].text == "The command printed: hi"
    sent = last_chat(openai_stack)
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    tool = next(m for m in sent["messages"] if m["role"] == "tool")
    assert tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"command": "echo hi"}
    assert sent["tools"][0]["function"]["name"] == "Bash"
    assert openai_stack.fake.rejections == []


def test_image_inside_a_tool_result(openai_stack: Stack) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}
    messages = [
        {"role": "user", "content": "Look at pixel.png"},
        {"role": "assistant",
         "content": [{"type": "tool_use", "id": "toolu_read1", "name": "Read", "input": {"file_path": "pixel.png"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_read1", "content": [image]}]},
    ]
    read = {"name": "Read", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}
    openai_stack.fake.script(Reply(text="A single pixel."))
    message = openai_stack.client().messages.create(model=MODEL, max_tokens=512, tools=[read], messages=messages)
    assert message.content[0].text == "A single pixel."
    roles = [m["role"] for m in last_chat(openai_stack)["messages"]]
    tool_at = roles.index("tool")
    follower = last_chat(openai_stack)["messages"][tool_at + 1]
    assert follower["role"] == "user"
    urls = [p["image_url"]["url"] for p in follower["content"] if p.get("type") == "image_url"]
    assert urls == [f"data:image/png;base64,{PIXEL}"]


def test_reasoning_becomes_a_thinking_block(openai_stack: Stack) -> None:
    openai_stack.fake.script(Reply(reasoning="First, consider the question.", text="42.", pieces=3))
    with openai_stack.client().messages.stream(
        model=MODEL,
        max_tokens=16000,
        thinking={"type": "enabled", "budget_tokens": 4096},
        messages=[{"role": "user", "content": "What is the answer?"}],
    ) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "First, consider the question." and message.content[1].text == "42."
    assert "thinking" not in last_chat(openai_stack)


def test_parallel_tool_calls(openai_stack: Stack) -> None:
    calls = (ToolCall("Bash", {"command": "echo one"}), ToolCall("Bash", {"command": "echo two; ls -la /tmp"}))
    openai_stack.fake.script(Reply(text="Running both.", tool_calls=calls, pieces=5), Reply(text="Both done."))
    client = openai_stack.client()
    history: list[dict[str, Any]] = [{"role": "user", "content": "Run both"}]
    with client.messages.stream(model=MODEL, max_tokens=1024, tools=[BASH], messages=history) as stream:
        first = stream.get_final_message()
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [c.arguments for c in calls] and len({u.id for u in uses}) == 2
    history += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user",
         "content": [{"type": "tool_result", "tool_use_id": u.id, "content": f"out {i}"} for i, u in enumerate(uses)]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=1024, tools=[BASH], messages=history)
    assert second.content[0].text == "Both done."
    tools = [m for m in last_chat(openai_stack)["messages"] if m["role"] == "tool"]
    assert [t["content"] for t in tools] == ["out 0", "out 1"]
    assert openai_stack.fake.rejections == []


def test_rate_limit_reaches_the_sdk_with_retry_after(openai_stack: Stack) -> None:
    openai_stack.fake.script(retry_later(5))
    with pytest.raises(anthropic.RateLimitError) as raised:
        openai_stack.client().messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 429 and raised.value.response.headers.get("retry-after") == "5"
    assert raised.value.body["error"]["type"] == "rate_limit_error"


def test_server_error_before_the_stream_is_a_status(openai_stack: Stack) -> None:
    openai_stack.fake.script(Status(500, "upstream exploded"))
    with pytest.raises(anthropic.APIStatusError) as raised:
        openai_stack.stream_hi(MODEL)
    assert raised.value.status_code >= 500
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] in ("api_error", "overloaded_error")


def test_failure_mid_stream_is_an_error_event(openai_stack: Stack) -> None:
    openai_stack.fake.script(Reply(text="This answer will be cut short.", pieces=6,
                                   fault=StreamFault("close", after=4)))
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError),
        openai_stack.client().messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        received.extend(stream.text_stream)
    assert received, "the stream had started before the failure"


def fixture_request(stack: Stack, name: str) -> tuple[dict[str, Any], httpx.Response]:
    """Send a captured Claude Code request to ccm as Claude Code sent it (path, query and headers)."""
    captured = load_fixture(name)
    headers = {k: v for k, v in captured["headers"].items()
               if k.lower() not in ("host", "content-length", "accept-encoding")}
    headers["x-api-key"] = CLIENT_KEY
    response = httpx.post(f"{stack.url}{captured['path']}", json=captured["body"], headers=headers, timeout=30)
    return captured, response


@pytest.mark.parametrize("name", fixture_names())
def test_every_captured_request_translates(openai_stack: Stack, name: str) -> None:
    openai_stack.fake.default = Reply(text="Fixture answered.", reasoning="Checking.")
    captured, response = fixture_request(openai_stack, name)
    assert response.status_code == 200, response.text
    assert openai_stack.fake.rejections == []
    if "count_tokens" in captured["path"]:
        assert response.json()["input_tokens"] > 0
        assert openai_stack.fake.requests() == []  # counted locally
        return
    message = read_stream(response.content)
    assert [b.get("text") for b in message["content"] if b["type"] == "text"] == ["Fixture answered."]
    sent = last_chat(openai_stack)
    assert sent["max_tokens"] <= OUTPUT_CAP
    if name == "image-tool-result.json":
        roles = [m["role"] for m in sent["messages"]]
        after_tool = sent["messages"][roles.index("tool") + 1]
        assert after_tool["role"] == "user" and any(p.get("type") == "image_url" for p in after_tool["content"])
