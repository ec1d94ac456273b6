"""A complete Chat Completions answer → an Anthropic message: block order, ids, stop reasons, usage."""

from __future__ import annotations

from typing import Any

import pytest

from ccm.errors import UpstreamError
from ccm.providers.base import Usage
from ccm.providers.openai.reply import ReplyContext, translate_response
from ccm.providers.tool_names import CHAT, ToolNames, upstream_name


def completion(message: dict[str, Any], finish: Any = "stop", **choice: Any) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                     "finish_reason": finish, **choice}]}


def context() -> ReplyContext:
    return ReplyContext(model="claude-sonnet-5-5", names=ToolNames.of(["fs.read"]), message_id="msg_t",
                        stop_sequences=("END",), provider="up")


def translate(data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    usage = Usage()
    return translate_response(data, context(), usage), usage


@pytest.mark.parametrize(("finish", "tools", "expected"), [
    ("stop", False, "end_turn"),
    ("stop", True, "tool_use"),
    ("tool_calls", True, "tool_use"),
    ("function_call", True, "tool_use"),
    ("length", False, "max_tokens"),
    ("length", True, "max_tokens"),
    ("content_filter", False, "refusal"),
    ("", False, "end_turn"),
    ("", True, "tool_use"),
    (None, True, "tool_use"),
    ("eos", False, "end_turn"),
])
def test_stop_reasons(finish: Any, tools: bool, expected: str) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}] if tools else []
    message, _ = translate(completion({"content": "x", "tool_calls": calls}, finish))
    assert message["stop_reason"] == expected


def test_a_matched_stop_sequence_is_reported() -> None:
    message, _ = translate(completion({"content": "x"}, "stop", stop_reason="END"))
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


def test_blocks_ids_names_and_usage() -> None:
    data = completion({
        "content": None, "reasoning": "thought",
        "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": upstream_name("fs.read", CHAT), "arguments": "{}"}},
            {"type": "function", "function": {"name": "Bash", "arguments": {"command": "ls"}}},
            {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{}"}},
            {"id": "call_x", "type": "function", "function": {"arguments": "{}"}},
        ]}, "tool_calls")
    data["usage"] = {"prompt_tokens": 500, "completion_tokens": 9, "prompt_cache_hit_tokens": 384}
    message, usage = translate(data)
    assert message["content"] == [
        {"type": "thinking", "thinking": "thought", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "fs.read", "input": {}},
        {"type": "tool_use", "id": "toolu_t_1", "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "toolu_t_2", "name": "Bash", "input": {}},  # a repeated id is re-minted
    ]
    assert message["usage"] == {"input_tokens": 116, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 384, "output_tokens": 9}
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (116, 384)
    assert (message["id"], message["model"], message["type"], message["role"]) == (
        "msg_t", "claude-sonnet-5-5", "message", "assistant")


def test_refusal_and_content_parts() -> None:
    message, _ = translate(completion({"content": None, "refusal": "I can't help."}))
    assert message["content"] == [{"type": "text", "text": "I can't help."}]
    message, _ = translate(completion({"content": [{"type": "text", "text": "a"},
                                                            {"type": "text", "text": "b"}]}))
    assert message["content"] == [{"type": "text", "text": "ab"}]


def test_no_choices_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamError) as raised:
        translate({"id": "c1", "choices": []})
    assert (raised.value.status, raised.value.reason) == (502, "protocol")
