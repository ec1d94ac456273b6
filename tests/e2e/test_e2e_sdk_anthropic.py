"""Clients → a real `ccm run` → the strict FakeAnthropic: passthrough, byte for byte.

For each captured Claude Code request the upstream must receive exactly the bytes the client sent (only `model`
may differ, when the route file sends it to another id), with the upstream's key in place of the client's and the
`anthropic-*` headers forwarded; and the client must receive exactly the bytes the upstream answered.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import fixture_names, load_fixture
from tests.fakes import Reply, Status, StreamFault, ToolCall, retry_later

from .conftest import ANTHROPIC_KEY, CLIENT_KEY, Stack

MODEL = "claude-opus-5-5"


def as_claude_code_sends(body: dict[str, Any]) -> bytes:
    """JSON.stringify's output: compact separators, non-ASCII kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def post_captured(stack: Stack, name: str, extra: dict[str, str] | None = None) -> tuple[dict[str, Any], bytes, bytes]:
    """(captured request, bytes sent, bytes received) for a fixture posted to ccm as Claude Code posted it."""
    captured = load_fixture(name)
    headers = {k: v for k, v in captured["headers"].items()
               if k.lower() not in ("host", "content-length", "accept-encoding")}
    headers.update({"x-api-key": CLIENT_KEY, **(extra or {})})
    sent = as_claude_code_sends(captured["body"])
    with httpx.stream("POST", f"{stack.url}{captured['path']}", content=sent, headers=headers, timeout=30) as response:
        received = response.read()
        assert response.status_code == 200, received
    return captured, sent, received


@pytest.mark.parametrize("name", fixture_names())
def test_captured_requests_pass_through_byte_for_byte(anthropic_stack: Stack, name: str) -> None:
    anthropic_stack.fake.default = Reply(reasoning="Thinking.", text="Passed through.", pieces=4)
    captured, sent, received = post_captured(anthropic_stack, name)
    [upstream] = anthropic_stack.fake.exchanges
    assert upstream.path == captured["path"].partition("?")[0]
    assert upstream.raw == sent, "the upstream did not receive the client's bytes unchanged"
    assert received == bytes(upstream.sent), "the client did not receive the upstream's bytes unchanged"
    assert upstream.headers["x-api-key"] == ANTHROPIC_KEY and CLIENT_KEY not in upstream.headers.values()
    for name_ in ("anthropic-version", "anthropic-beta"):
        assert upstream.headers.get(name_) == captured["headers"][name_]
    assert anthropic_stack.fake.rejections == []


@pytest.mark.parametrize("name", ["bash-tool-result-turn2.json", "image-tool-result.json", "model-haiku.json"])
def test_routed_to_another_model_only_the_model_changes(anthropic_stack: Stack, name: str) -> None:
    captured, _, received = post_captured(anthropic_stack, name, {"x-e2e-rename": "1"})
    [upstream] = anthropic_stack.fake.exchanges
    forwarded = json.loads(upstream.raw)
    assert forwarded == {**captured["body"], "model": "claude-renamed-1"}
    assert list(forwarded) == list(captured["body"])  # field order kept
    assert received == bytes(upstream.sent)


def test_sdk_stream_with_thinking_and_parallel_tools(anthropic_stack: Stack) -> None:
    calls = (ToolCall("Bash", {"command": "echo one"}), ToolCall("Bash", {"command": "echo two"}))
    anthropic_stack.fake.script(Reply(reasoning="Two commands.", text="Running.", tool_calls=calls, pieces=5))
    bash = {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}
    with anthropic_stack.client().messages.stream(
        model=MODEL,
        max_tokens=16000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        tools=[bash],
        messages=[{"role": "user", "content": "Run both"}],
    ) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].signature == Reply().signature
    assert [b.input for b in message.content[2:]] == [c.arguments for c in calls]
    assert json.loads(anthropic_stack.fake.exchanges[-1].raw)["model"] == MODEL


def test_upstream_connections_are_pooled(anthropic_stack: Stack) -> None:
    client = anthropic_stack.client()
    for _ in range(5):
        client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert len(anthropic_stack.fake.exchanges) == 5 and anthropic_stack.fake.connections == 1


def test_rate_limit_passes_through_with_retry_after(anthropic_stack: Stack) -> None:
    anthropic_stack.fake.script(retry_later(4))
    with pytest.raises(anthropic.RateLimitError) as raised:
        anthropic_stack.client().messages.create(model=MODEL, max_tokens=64,
                                                 messages=[{"role": "user", "content": "hi"}])
    assert raised.value.response.headers.get("retry-after") == "4"
    assert raised.value.body["error"]["type"] == "rate_limit_error"


def test_overloaded_before_the_stream_is_a_status(anthropic_stack: Stack) -> None:
    anthropic_stack.fake.script(Status(529, "Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic_stack.stream_hi(MODEL)
    assert raised.value.status_code == 529 and raised.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("fault", ["error", "close"])
def test_failure_mid_stream_reaches_the_sdk(anthropic_stack: Stack, fault: str) -> None:
    anthropic_stack.fake.script(Reply(text="A long answer, interrupted.", pieces=6, fault=StreamFault(fault, after=5)))  # type: ignore[arg-type]
    with pytest.raises(anthropic.APIStatusError):
        anthropic_stack.stream_hi(MODEL)
