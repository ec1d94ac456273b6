"""Tool names, one mapping for every translating adapter (issue 13, item 5): each upstream's own rule, names that
break it rewritten on the way up and mapped back in the reply, streamed or not. MCP servers produce long and dotted
names (`mcp__<server>__<tool>`), which Chat and Responses refuse and Gemini refuses past 128 characters."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from ccm.providers.base import Usage
from ccm.providers.gemini.reply import GeminiReader, translate_response
from ccm.providers.gemini.request import translate_request as gemini_request
from ccm.providers.openai.reply import ReplyContext
from ccm.providers.openai.reply import translate_response as chat_response
from ccm.providers.openai.request import translate_request as chat_request
from ccm.providers.responses.reply import ResponsesReader, read_response
from ccm.providers.responses.request import translate_request as responses_request
from ccm.providers.tool_names import CHAT, GEMINI, RESPONSES, NameRule, ToolNames, upstream_name
from ccm.table import Model
from tests.fakes.fake_gemini import GeminiRejected, check_gemini_request
from tests.fakes.fake_responses import ResponsesRejected, check_responses_request
from tests.fakes.openai_rules import Limits, check_chat_request
from tests.providers.translation_checks import check_grammar, relay, sdk_final_message

CHAT_RULE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
GEMINI_RULE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")
NAMES = [
    "Bash",
    "mcp__claude_ai_Gmail__search",
    "mcp__github.com__create_issue",  # dotted: fine for Gemini, not for Chat or Responses
    "mcp__" + "very_long_server_name_" * 4 + "__list_everything_in_the_workspace",  # 126 characters
    "mcp__" + "x" * 130,
    "9lives",  # Gemini wants a letter or an underscore first
    "my tool/with spaces",
    "ünïcode",
    "Bash\n",  # `$` matches before a trailing newline: the upstream's rule is the whole name
]
GPT = Model(name="gpt", provider="openai", model="gpt-5.5", max_output=8192)
GEMINI_MODEL = Model(name="g", provider="gemini", model="gemini-2.5-flash", max_output=8192)


@pytest.mark.parametrize(("rule", "pattern"), [(CHAT, CHAT_RULE), (RESPONSES, CHAT_RULE), (GEMINI, GEMINI_RULE)])
def test_every_name_becomes_one_the_upstream_accepts_and_valid_ones_stay(rule: NameRule,
                                                                         pattern: re.Pattern[str]) -> None:
    mapped = [upstream_name(name, rule) for name in NAMES]
    assert all(pattern.fullmatch(name) for name in mapped), mapped
    assert len(set(mapped)) == len(NAMES)  # distinct names stay distinct
    for name, upstream in zip(NAMES, mapped, strict=True):
        assert (upstream == name) == bool(pattern.fullmatch(name))
    assert mapped == [upstream_name(name, rule) for name in NAMES]  # stable across requests (prefix caches)
    names = ToolNames.of(NAMES, rule)
    assert [names.client(names.upstream(name)) for name in NAMES] == NAMES
    assert names.client("SomethingElse") == "SomethingElse"


def test_gemini_keeps_dotted_names_that_chat_must_rewrite() -> None:
    assert upstream_name("mcp__github.com__create_issue", GEMINI) == "mcp__github.com__create_issue"
    assert upstream_name("mcp__github.com__create_issue", CHAT) != "mcp__github.com__create_issue"


def body_with(names: list[str]) -> dict[str, Any]:
    tools = [{"name": n, "description": "d",
              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
             for n in names]
    return {"model": "claude-opus-5-5", "max_tokens": 100, "tools": tools,
            "tool_choice": {"type": "tool", "name": names[-1]},
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant",
                 "content": [{"type": "tool_use", "id": "call_1", "name": names[-1], "input": {"q": "x"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "ok"}]},
            ]}


LONG = NAMES[4]


def test_chat_requests_and_replies_use_the_shared_mapping() -> None:
    out, names = chat_request(body_with(["Bash", LONG]), GPT)
    check_chat_request(out, Limits())
    upstream = out["tools"][1]["function"]["name"]
    assert upstream == upstream_name(LONG, CHAT) and names.client(upstream) == LONG
    completion = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": upstream, "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}]}
    message = chat_response(completion, ReplyContext(model="m", names=names), Usage())
    assert message["content"][0]["name"] == LONG


def test_gemini_requests_use_gemini_names_and_the_fake_accepts_them() -> None:
    body = body_with(["Bash", "mcp__github.com__create_issue", LONG, "9lives"])
    out = gemini_request(body, GEMINI_MODEL)
    check_gemini_request(GEMINI_MODEL.model, out)
    declared = [d["name"] for d in out["tools"][0]["functionDeclarations"]]
    assert declared == ["Bash", "mcp__github.com__create_issue", upstream_name(LONG, GEMINI),
                        upstream_name("9lives", GEMINI)]
    turns = out["contents"]
    assert turns[1]["parts"][0]["functionCall"]["name"] == upstream_name("9lives", GEMINI)
    assert turns[2]["parts"][0]["functionResponse"]["name"] == upstream_name("9lives", GEMINI)
    assert out["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == [upstream_name("9lives", GEMINI)]


def test_the_gemini_fake_takes_128_characters_and_refuses_more_or_a_bad_first_character() -> None:
    def request(name: str) -> dict[str, Any]:
        return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "tools": [{"functionDeclarations": [{"name": name}]}]}
    check_gemini_request(GEMINI_MODEL.model, request("a" * 128))
    for bad in ("a" * 129, "9lives", "a b"):
        with pytest.raises(GeminiRejected, match="Invalid function name"):
            check_gemini_request(GEMINI_MODEL.model, request(bad))


async def test_gemini_replies_map_names_back_stream_and_non_stream() -> None:
    names = ToolNames.for_request(body_with([LONG]), GEMINI)
    call = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": upstream_name(LONG, GEMINI), "args": {"q": "x"}}}]}, "finishReason": "STOP"}]}
    message = translate_response(call, "gemini", "m", Usage(), names)
    assert message["content"][0]["name"] == LONG
    out, error = relay(GeminiReader("gemini", "m", Usage(), names), [b"data: " + orjson.dumps(call) + b"\n\n"])
    assert error is None
    streamed = await sdk_final_message(out)
    assert streamed.content[0].name == LONG  # type: ignore[union-attr]


def test_responses_requests_use_responses_names_and_the_fake_accepts_them() -> None:
    body = body_with(["Bash", "mcp__github.com__create_issue", LONG])
    out = responses_request(body, GPT)
    check_responses_request(out)
    assert [t["name"] for t in out["tools"]] == ["Bash", upstream_name("mcp__github.com__create_issue", RESPONSES),
                                                 upstream_name(LONG, RESPONSES)]
    call = next(i for i in out["input"] if i["type"] == "function_call")
    assert call["name"] == upstream_name(LONG, RESPONSES)
    assert out["tool_choice"] == {"type": "function", "name": upstream_name(LONG, RESPONSES)}


def test_the_responses_fake_refuses_a_dotted_name() -> None:
    body = {"model": "gpt-5.5", "input": "hi", "tools": [
        {"type": "function", "name": "mcp__github.com__x", "parameters": {"type": "object"}, "strict": False}]}
    with pytest.raises(ResponsesRejected, match="name"):
        check_responses_request(body)


def test_responses_replies_map_names_back_stream_and_non_stream() -> None:
    names = ToolNames.for_request(body_with([LONG]), RESPONSES)
    upstream = upstream_name(LONG, RESPONSES)
    item = {"type": "function_call", "call_id": "c1", "name": upstream, "arguments": "{}"}
    message = read_response({"status": "completed", "output": [item]}, "openai", "m", Usage(), names)
    assert message["content"][0]["name"] == LONG
    frames = [
        b'data: {"type":"response.output_item.added","output_index":0,"item":'
        + orjson.dumps(dict(item, arguments="")) + b"}\n\n",
        b'data: {"type":"response.output_item.done","output_index":0,"item":' + orjson.dumps(item) + b"}\n\n",
        b'data: {"type":"response.completed","response":{"status":"completed"}}\n\n',
    ]
    out, error = relay(ResponsesReader("openai", "m", Usage(), names), frames)
    assert error is None
    starts = [d["content_block"] for n, d in check_grammar(out) if n == "content_block_start"]
    assert starts[0]["name"] == LONG
