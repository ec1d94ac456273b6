"""FakeAnthropic on its own: it accepts every real Claude Code request in the fixtures, rejects what Anthropic
rejects, and its JSON and SSE answers are read correctly by the official `anthropic` SDK."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import fixture_names, load_fixture

from . import FakeAnthropic, Reply, Status, StreamFault, ToolCall, retry_later, serve

HEADERS = {"x-api-key": "sk-ant-fake", "anthropic-version": "2023-06-01"}


def sdk(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-ant-fake", max_retries=0)


@pytest.mark.parametrize("name", fixture_names())
def test_accepts_every_captured_claude_code_request(fake_anthropic: tuple[str, FakeAnthropic], name: str) -> None:
    url, fake = fake_anthropic
    captured = load_fixture(name)
    path = captured["path"].partition("?")[0]
    response = httpx.post(f"{url}{path}", json=captured["body"], headers=HEADERS)
    assert response.status_code == 200, response.text
    assert fake.rejections == []


def tool_turns() -> dict[str, Any]:
    return {
        "model": "claude-fake",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "run it"},
            {"role": "system", "content": "a reminder"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "c2ln"},
                    {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "a.txt"}]},
                    {"type": "text", "text": "and now?"},
                ],
            },
        ],
        "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {}}}],
    }


def _drop_result(b: dict[str, Any]) -> None:
    b["messages"][3]["content"].pop(0)


def _text_first(b: dict[str, Any]) -> None:
    b["messages"][3]["content"].reverse()


def _many_breakpoints(b: dict[str, Any]) -> None:
    b["system"] = [{"type": "text", "text": f"s{i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]


REJECTED: dict[str, Callable[[dict[str, Any]], None]] = {
    "tool_use without its tool_result": _drop_result,
    "tool_result for an unknown id": lambda b: b["messages"][3]["content"][0].update(tool_use_id="toolu_99"),
    "tool_result after text": _text_first,
    "tool_use id with a dot": lambda b: b["messages"][2]["content"][1].update(id="functions.Bash:0"),
    "empty text block": lambda b: b["messages"][3]["content"][1].update(text=""),
    "whitespace text block": lambda b: b["messages"][3]["content"][1].update(text="  \n"),
    "thinking without signature": lambda b: b["messages"][2]["content"][0].update(signature=""),
    "unknown block type": lambda b: b["messages"][3]["content"][1].update(type="image_url"),
    "max_tokens missing": lambda b: b.pop("max_tokens"),
    "messages empty": lambda b: b.update(messages=[]),
    "role tool": lambda b: b["messages"][0].update(role="tool"),
    "input_schema not an object": lambda b: b["tools"][0].update(input_schema={"type": "string"}),
    "five cache_control breakpoints": _many_breakpoints,
    "budget above max_tokens": lambda b: b.update(thinking={"type": "enabled", "budget_tokens": 4096}),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejects_what_anthropic_rejects(case: str) -> None:
    body = copy.deepcopy(tool_turns())
    with serve(FakeAnthropic()) as (url, fake):
        assert httpx.post(f"{url}/v1/messages", json=body, headers=HEADERS).status_code == 200
        REJECTED[case](body)
        response = httpx.post(f"{url}/v1/messages", json=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["request-id"] == response.json()["request_id"]
    assert len(fake.rejections) == 1


def test_checks_key_and_version(fake_anthropic: tuple[str, FakeAnthropic]) -> None:
    url, _ = fake_anthropic
    response = httpx.post(f"{url}/v1/messages", json=tool_turns(), headers={**HEADERS, "x-api-key": "wrong"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    response = httpx.post(f"{url}/v1/messages", json=tool_turns(), headers={"x-api-key": "sk-ant-fake"})
    assert response.status_code == 400 and "anthropic-version" in response.json()["error"]["message"]


def test_the_sdk_accumulates_the_fake_stream(fake_anthropic: tuple[str, FakeAnthropic]) -> None:
    url, fake = fake_anthropic
    fake.script(
        Reply(
            reasoning="Let me think.",
            text="Running two commands.",
            tool_calls=(ToolCall("Bash", {"command": "echo hi"}), ToolCall("Bash", {"command": "ls -la"})),
            pieces=5,
        )
    )
    with sdk(url).messages.stream(**tool_turns()) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].signature == Reply().signature
    assert message.content[1].text == "Running two commands."
    assert [b.input for b in message.content[2:]] == [{"command": "echo hi"}, {"command": "ls -la"}]
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 9
    assert fake.exchanges[-1].sent.startswith(b"event: message_start\n")


def test_the_sdk_reads_the_fake_json_and_errors(fake_anthropic: tuple[str, FakeAnthropic]) -> None:
    url, fake = fake_anthropic
    fake.script(Reply(text="hello", tool_calls=(ToolCall("Bash", {"command": "pwd"}, id="toolu_x1"),)), retry_later(3))
    message = sdk(url).messages.create(**tool_turns())
    assert [b.type for b in message.content] == ["text", "tool_use"] and message.content[1].id == "toolu_x1"
    with pytest.raises(anthropic.RateLimitError) as raised:
        sdk(url).messages.create(**tool_turns())
    assert raised.value.response.headers["retry-after"] == "3"
    fake.script(Status(529, "Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        sdk(url).messages.create(**tool_turns())
    assert overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"


def test_in_stream_error_event_reaches_the_sdk(fake_anthropic: tuple[str, FakeAnthropic]) -> None:
    url, fake = fake_anthropic
    fake.script(Reply(text="partial answer", fault=StreamFault("error", after=4)))
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        sdk(url).messages.stream(**tool_turns()) as stream,
    ):
        stream.get_final_message()


def test_count_tokens_does_not_consume_the_script(fake_anthropic: tuple[str, FakeAnthropic]) -> None:
    url, fake = fake_anthropic
    fake.script(Reply(text="scripted"))
    body = {k: v for k, v in tool_turns().items() if k != "max_tokens"}
    assert sdk(url).messages.count_tokens(**body).input_tokens > 10
    assert fake.pending == 1
