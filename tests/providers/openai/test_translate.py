"""Anthropic → OpenAI request translation.

Golden files: every captured Claude Code request (tests/fixtures) translated for a plain model is stored whole in
golden/openai/requests/<fixture>.json; for the other model settings (max_output 8k, replay_reasoning,
keep_cache_control) only the difference from the plain translation is stored (<fixture>.<setting>.json: changed and
removed leaves by path), so each file shows exactly what the setting does. Every translation must also pass
`check_openai_rules`, the ordering and shape rules a strict OpenAI server enforces.

Regenerate with CCM_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ccm.providers.openai.request import EMPTY_RESULT, UNANSWERED, translate_request
from ccm.providers.tool_ids import ENCODED_ID_PREFIX
from ccm.providers.tool_names import CHAT, ToolNames, upstream_name
from ccm.table import Model
from tests.conftest import fixture_names, load_fixture

REQUESTS = Path(__file__).parents[1] / "golden" / "openai" / "requests"
UPDATE = os.environ.get("CCM_UPDATE_GOLDEN") == "1"
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OPENAI_FIELDS = {
    "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "reasoning_effort", "max_tokens",
    "temperature", "top_p", "stop", "user", "stream", "stream_options",
}

PLAIN = Model(name="plain", provider="up", model="gpt-test")
SETTINGS = {
    "max-output-8k": Model(name="small", provider="up", model="gpt-test", max_output=8192),
    "replay-reasoning": Model(name="ds", provider="up", model="gpt-test", quirks=("replay_reasoning",)),
    "keep-cache-control": Model(name="or", provider="up", model="gpt-test", quirks=("keep_cache_control",)),
}


def check_openai_rules(body: dict[str, Any], model: Model) -> None:
    """What a strict OpenAI-compatible server checks: one leading system message; every assistant tool call answered
    by `tool` messages immediately after it, before any other role; no `tool` message without its call; no empty
    content; valid and unique names and ids; only OpenAI fields; max_tokens within the model's cap."""
    assert set(body) <= OPENAI_FIELDS | {k for k, _ in model.force}, set(body) - OPENAI_FIELDS
    messages = body["messages"]
    assert messages
    assert all(m["role"] != "system" for m in messages[1:]), "a system message that is not first"
    pending: list[str] = []
    seen_ids: set[str] = set()
    for message in messages:
        role = message["role"]
        if role == "tool":
            assert message["tool_call_id"] in pending, "a tool message that answers no pending call"
            pending.remove(message["tool_call_id"])
            _check_content(message["content"], model)
            continue
        assert not pending, f"tool calls {pending} not answered before a {role} message"
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if message["content"] is None:
                assert calls, "an assistant message without content or tool calls"
            else:
                _check_content(message["content"], model)
            for call in calls:
                assert call["type"] == "function" and NAME.match(call["function"]["name"])
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
                assert call["id"] not in seen_ids
                seen_ids.add(call["id"])
                pending.append(call["id"])
        else:
            assert role in ("system", "user")
            _check_content(message["content"], model)
    assert not pending, "the conversation ends with unanswered tool calls"
    for tool in body.get("tools", []):
        assert tool["type"] == "function" and NAME.match(tool["function"]["name"])
        assert tool["function"]["parameters"].get("type") == "object"
    if model.max_output and "max_tokens" in body:
        assert body["max_tokens"] <= model.max_output
    if "keep_cache_control" not in model.quirks:
        assert "cache_control" not in json.dumps(body)
    assert len(body.get("user", "")) <= 64


def _check_content(content: Any, model: Model) -> None:
    if isinstance(content, str):
        assert content, "empty content"
        return
    assert isinstance(content, list) and content, "empty content list"
    for part in content:
        assert part["type"] in ("text", "image_url", "file")
        if part["type"] == "text":
            assert part["text"]


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{path}[{i}]").items()}
    return {path: value}


def difference(plain: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Changed and removed leaves; long strings (already shown whole in the plain golden) by size and hash."""
    before, after = flatten(plain), flatten(other)
    return {
        "changed": {k: _short(v) for k, v in after.items() if k not in before or before[k] != v},
        "removed": sorted(k for k in before if k not in after),
    }


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 120:
        return f"<{len(value)} chars, sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]}>"
    return value


def golden(path: Path, actual: Any) -> None:
    text = json.dumps(actual, indent=1, ensure_ascii=False) + "\n"
    if UPDATE:
        path.write_text(text)
    assert json.loads(path.read_text()) == actual, f"{path.name} differs (CCM_UPDATE_GOLDEN=1 to regenerate)"


@pytest.mark.parametrize("fixture", fixture_names())
def test_every_fixture_translates(fixture: str) -> None:
    body = load_fixture(fixture)["body"]
    plain, _ = translate_request(body, PLAIN)
    check_openai_rules(plain, PLAIN)
    stem = fixture.removesuffix(".json")
    golden(REQUESTS / f"{stem}.json", plain)
    for setting, model in SETTINGS.items():
        translated, _ = translate_request(body, model)
        check_openai_rules(translated, model)
        golden(REQUESTS / f"{stem}.{setting}.json", difference(plain, translated))


@pytest.mark.parametrize("fixture", fixture_names())
def test_translation_keeps_every_tool_exchange_and_image(fixture: str) -> None:
    body = load_fixture(fixture)["body"]
    translated, _ = translate_request(body, PLAIN)
    uses = [b["id"] for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]
            if b["type"] == "tool_use"]
    calls = [c["id"] for m in translated["messages"] for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for m in translated["messages"] if m["role"] == "tool"]
    assert calls == answered == uses
    dump_in, dump_out = json.dumps(body), json.dumps(translated)
    assert dump_in.count('"type": "image"') == dump_out.count('"type": "image_url"')
    custom = [t["name"] for t in body.get("tools", []) if "type" not in t]
    assert [t["function"]["name"] for t in translated.get("tools", [])] == custom


def test_the_fixture_body_is_not_mutated() -> None:
    body = load_fixture("image-tool-result.json")["body"]
    before = json.dumps(body)
    translate_request(body, SETTINGS["keep-cache-control"])
    assert json.dumps(body) == before


# --- behaviours, one request shape at a time ----------------------------------------------------------------------


def request(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-opus-5-5", "max_tokens": 1000, "messages": messages, **fields}


def test_system_blocks_and_system_messages_merge_into_one_leading_message() -> None:
    body = request(
        [{"role": "user", "content": "hi"}, {"role": "system", "content": [{"type": "text", "text": "env"}]},
         {"role": "assistant", "content": "hello"}, {"role": "system", "content": "late"}],
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"}, {"type": "text", "text": "You"}],
    )
    out, _ = translate_request(body, PLAIN)
    assert out["messages"] == [
        {"role": "system", "content": "You\n\nenv\n\nlate"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


def test_tool_results_come_first_and_media_moves_to_a_user_message() -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}
    body = request([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "text", "text": ""},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"p": 1}},
            {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "also this"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "a picture"}, {"type": "image", "source": png},
                {"type": "document", "source": pdf, "title": "spec.pdf"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": True},
        ]},
    ])
    out, _ = translate_request(body, PLAIN)
    placeholders = "[image 1: attached in the next user message]\n\n[document 2: attached in the next user message]"
    assert out["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "Read", "arguments": '{"p":1}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a picture\n\n" + placeholders},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            {"type": "text", "text": "also this"}]},
    ]
    check_openai_rules(out, PLAIN)


def test_unanswered_calls_and_orphan_results_stay_valid() -> None:
    body = request([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "never mind"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_zz", "content": "late"}]},
    ])
    out, _ = translate_request(body, PLAIN)
    check_openai_rules(out, PLAIN)
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "toolu_a", "content": UNANSWERED}
    assert out["messages"][-1] == {"role": "user", "content": "[result of tool call toolu_zz]\nlate"}


def test_consecutive_turns_merge_and_empty_text_disappears() -> None:
    body = request([
        {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}]},
        {"role": "assistant", "content": "c"},
    ])
    out, _ = translate_request(body, PLAIN)
    assert out["messages"] == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"}]


def test_reasoning_is_replayed_only_with_the_quirk() -> None:
    turn = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "plan", "signature": ""},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]}
    body = request([{"role": "user", "content": "go"}, turn,
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
                    {"role": "assistant", "content": "done"},  # the turn's final answer, which had no thinking
                    {"role": "user", "content": "anything else?"}])
    plain, _ = translate_request(body, PLAIN)
    assert all("reasoning_content" not in m for m in plain["messages"])
    replayed, _ = translate_request(body, SETTINGS["replay-reasoning"])
    assert replayed["messages"][1]["reasoning_content"] == "plan"
    # DeepSeek wants every assistant message of a turn that called tools to carry it, the final answer included
    assert replayed["messages"][3] == {"role": "assistant", "content": "done", "reasoning_content": ""}


def test_tools_choice_and_names() -> None:
    long_name = "mcp__" + "x" * 70
    body = request(
        [{"role": "user", "content": "hi"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "my.tool", "input": {}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}],
        tools=[
            {"name": "my.tool", "description": "d", "input_schema": {"$schema": "x", "type": "object"}},
            {"name": long_name, "input_schema": {"type": "object", "properties": {}}, "type": "custom"},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 8},
        ],
        tool_choice={"type": "tool", "name": "my.tool", "disable_parallel_tool_use": True},
    )
    out, names = translate_request(body, PLAIN)
    functions = [t["function"] for t in out["tools"]]
    assert [f["name"] for f in functions] == [upstream_name("my.tool", CHAT), upstream_name(long_name, CHAT)]
    assert all(NAME.match(f["name"]) for f in functions)
    assert functions[0] == {"name": upstream_name("my.tool", CHAT), "description": "d",
                            "parameters": {"type": "object"}}
    assert out["tool_choice"] == {"type": "function", "function": {"name": upstream_name("my.tool", CHAT)}}
    assert out["parallel_tool_calls"] is False
    assert out["messages"][1]["tool_calls"][0]["function"]["name"] == upstream_name("my.tool", CHAT)
    assert names.client(upstream_name(long_name, CHAT)) == long_name and names.client("Bash") == "Bash"

    for choice, expected in [({"type": "auto"}, None), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
                             ({"type": "tool", "name": "web_search"}, None)]:
        out, _ = translate_request({**body, "tool_choice": choice}, PLAIN)
        assert out.get("tool_choice") == expected
    only_server, _ = translate_request({**body, "tools": body["tools"][2:], "tool_choice": {"type": "any"}}, PLAIN)
    assert "tools" not in only_server and "tool_choice" not in only_server


@pytest.mark.parametrize(("thinking", "effort", "expected"), [
    ({"type": "adaptive"}, "max", None),
    ({"type": "disabled"}, None, None),
    (None, "high", None),
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 8192}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 31999}, None, "high"),
    ({"type": "enabled", "budget_tokens": 31999}, "low", "low"),
    ({"type": "enabled", "budget_tokens": 2000}, "xhigh", "high"),
])
def test_reasoning_effort_only_for_explicitly_enabled_thinking(thinking: Any, effort: Any, expected: Any) -> None:
    fields: dict[str, Any] = {}
    if thinking:
        fields["thinking"] = thinking
    if effort:
        fields["output_config"] = {"effort": effort}
    out, _ = translate_request(request([{"role": "user", "content": "hi"}], **fields), PLAIN)
    assert out.get("reasoning_effort") == expected


def test_parameters_force_and_drop() -> None:
    body = request([{"role": "user", "content": "hi"}], max_tokens=64000, temperature=0.2, top_p=0.9, top_k=5,
                   stop_sequences=["a", "b", "c", "d", "e"], metadata={"user_id": "u" * 100}, stream=True,
                   context_management={}, service_tier="auto", cache_control={"type": "ephemeral"})
    out, _ = translate_request(body, PLAIN)
    assert out == {
        "model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64000,
        "temperature": 0.2, "top_p": 0.9, "stop": ["a", "b", "c", "d"],
        "user": hashlib.sha256(b"u" * 100).hexdigest()[:32],  # a user_id ccm cannot read: a stable hash, never cut
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    model = Model(name="o", provider="up", model="o4", max_output=16384, drop=("temperature",),
                  force=(("reasoning_effort", "high"),), quirks=("max_completion_tokens",))
    out, _ = translate_request(body, model)
    assert "max_tokens" not in out and "temperature" not in out
    assert (out["max_completion_tokens"], out["reasoning_effort"], out["model"]) == (16384, "high", "o4")
    fixed, _ = translate_request(body, model.model_copy(update={"force": (("max_completion_tokens", 4096),)}))
    assert fixed["max_completion_tokens"] == 4096
    unlimited, _ = translate_request(body, model.model_copy(update={"drop": ("max_completion_tokens",)}))
    assert "max_tokens" not in unlimited and "max_completion_tokens" not in unlimited
    nested, _ = translate_request(body, model.model_copy(update={  # dotted paths, as for every translating adapter
        "force": (("stream_options.include_usage", False), ("extra_body.provider.order", ["groq"])),
        "drop": ("top_p",)}))
    assert nested["stream_options"] == {"include_usage": False}
    assert nested["extra_body"] == {"provider": {"order": ["groq"]}}
    assert "top_p" not in nested


def test_documents_and_images_in_user_content() -> None:
    body = request([{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}, "title": "T"},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
        {"type": "document", "source": {"type": "url", "url": "https://example.test/a.pdf"}},
        {"type": "text", "text": "what?", "cache_control": {"type": "ephemeral"}},
    ]}])
    out, _ = translate_request(body, PLAIN)
    assert out["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
        {"type": "text", "text": "T\n\nnotes"},
        {"type": "text", "text": "inner"},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "https://example.test/a.pdf"}},
        {"type": "text", "text": "what?"},
    ]
    cached, _ = translate_request(body, SETTINGS["keep-cache-control"])
    assert cached["messages"][0]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_renamed_tool_names_map_back() -> None:
    assert ToolNames.of(["Bash", "a.b"]).renamed == {upstream_name("a.b", CHAT): "a.b"}


@pytest.mark.parametrize("fixture", fixture_names())
def test_the_strict_fake_openai_accepts_every_translation(fixture: str) -> None:
    """A second, independent model of OpenAI's request checks: the one behind tests/fakes/openai.py."""
    from tests.fakes.openai_rules import Limits, check_chat_request

    body = load_fixture(fixture)["body"]
    check_chat_request(translate_request(body, PLAIN)[0], Limits(strict=True))
    check_chat_request(translate_request(body, SETTINGS["max-output-8k"])[0], Limits(max_output=8192, strict=True))
    check_chat_request(translate_request(body, SETTINGS["replay-reasoning"])[0], Limits(strict=True))
    # cache_control is only for upstreams that honour it (Claude behind OpenRouter), which do not reject it
    check_chat_request(translate_request(body, SETTINGS["keep-cache-control"])[0], Limits(strict=False))


def test_odd_blocks_never_break_the_translation() -> None:
    body = request([
        "not a message",
        {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f1"}},
                                     {"type": "mystery", "data": 1}, {"type": "text"}]},
        {"role": "assistant", "content": [{"type": "tool_use"}, {"type": "redacted_thinking", "data": "x"},
                                          {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": ""},
                                     {"type": "tool_result", "tool_use_id": "toolu_9", "content": [
                                         {"type": "tool_reference", "tool_name": "Grep"}]}]},
    ], tools=[{"name": "t"}], tool_choice="auto", metadata="x", stop_sequences="END", thinking={"type": "enabled"})
    out, _ = translate_request(body, PLAIN)
    check_openai_rules(out, PLAIN)
    assert out["messages"][0] == {"role": "user", "content": "[image omitted: unsupported source]"}
    assert out["messages"][2] == {"role": "tool", "tool_call_id": ENCODED_ID_PREFIX, "content": EMPTY_RESULT}
    assert "stop" not in out and "user" not in out and "reasoning_effort" not in out
    assert out["messages"][3]["content"] == "[result of tool call toolu_9]\n[tool Grep is now available]"
