"""Anthropic → Gemini request translation: a golden file per captured Claude Code request, each accepted by the
strict fake's validation for Gemini 3 and 2.5 models, plus the rules the goldens alone would not make obvious."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ccm.errors import ApiError
from ccm.providers.gemini.request import SKIP_SIGNATURE, translate_request
from ccm.table import Model
from tests.conftest import fixture_names, load_fixture
from tests.fakes.fake_gemini import GeminiRejected, check_gemini_request
from tests.providers.translation_checks import (
    GOLDEN,
    PNG,
    assert_golden,
    assistant,
    call,
    golden_json,
    result,
    text,
    user,
)

REQUESTS = GOLDEN / "gemini" / "requests"
GEMINI_3 = Model(name="g3", provider="gemini", model="gemini-3-pro-preview", max_output=65536)
GEMINI_25 = Model(name="g25", provider="gemini", model="gemini-2.5-flash", max_output=65536)


@pytest.mark.parametrize("name", fixture_names())
def test_every_captured_request_translates_to_its_golden_and_is_accepted(name: str) -> None:
    body = load_fixture(name)["body"]
    before = copy.deepcopy(body)
    translated = translate_request(body, GEMINI_3)
    assert body == before, "translation must not modify the client's body"
    check_gemini_request(GEMINI_3.model, translated)
    check_gemini_request(GEMINI_25.model, translate_request(body, GEMINI_25))
    assert_golden(REQUESTS / name, golden_json(translated))


def test_every_tool_claude_code_offers_is_declared() -> None:
    for name in fixture_names():
        body = load_fixture(name)["body"]
        offered = [t["name"] for t in body.get("tools", ()) if "input_schema" in t]
        declared = [d["name"] for t in translate_request(body, GEMINI_3).get("tools", ())
                    for d in t.get("functionDeclarations", ())]
        assert declared == offered


def test_system_text_and_system_role_messages_become_the_system_instruction_in_order() -> None:
    body = {
        "system": [text("x-anthropic-billing-header: cc_version=1"), text("You are helpful.")],
        "messages": [user(text("hi")), {"role": "system", "content": "Env: linux"}, user(text("again"))],
        "max_tokens": 100,
    }
    out = translate_request(body, GEMINI_3)
    assert out["systemInstruction"] == {"parts": [{"text": "You are helpful."}, {"text": "Env: linux"}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}]


def test_tool_results_follow_call_order_with_names_looked_up_and_images_after() -> None:
    body = {
        "messages": [
            user(text("read both")),
            assistant(text(""), call("toolu_a", "Read", file_path="a.png"), call("toolu_b", "Bash", command="false")),
            user(
                result("toolu_b", [text("exit 1")], is_error=True),
                result("toolu_a", [PNG]),
                text("what now?"),
            ),
        ],
        "max_tokens": 100,
    }
    out = translate_request(body, GEMINI_25)
    check_gemini_request(GEMINI_25.model, out)
    model_turn, answer = out["contents"][1], out["contents"][2]
    assert [p["functionCall"]["name"] for p in model_turn["parts"]] == ["Read", "Bash"]
    assert answer["parts"] == [
        {"functionResponse": {"id": "toolu_a", "name": "Read",
                              "response": {"result": "(the result is the attachment that follows)"}}},
        {"functionResponse": {"id": "toolu_b", "name": "Bash", "response": {"error": "exit 1"}}},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"text": "what now?"},
    ]


def test_call_ids_the_reply_side_encoded_go_back_as_gemini_gave_them() -> None:
    encoded = "toolu_ccm_" + b"fn.call:1".hex()
    body = {"messages": [user(text("go")), assistant(call(encoded, "Bash", command="ls")), user(result(encoded))],
            "max_tokens": 100}
    out = translate_request(body, GEMINI_25)
    assert out["contents"][1]["parts"][0]["functionCall"]["id"] == "fn.call:1"
    assert out["contents"][2]["parts"][0]["functionResponse"]["id"] == "fn.call:1"


def test_a_result_for_an_unknown_call_is_a_clear_client_error() -> None:
    body = {"messages": [user(result("toolu_nowhere"))], "max_tokens": 10}
    with pytest.raises(ApiError) as caught:
        translate_request(body, GEMINI_3)
    assert caught.value.status == 400 and "toolu_nowhere" in caught.value.message


def test_signatures_go_back_on_the_call_they_came_with_and_foreign_thinking_is_dropped() -> None:
    body = {
        "messages": [
            user(text("go")),
            assistant(
                {"type": "thinking", "thinking": "", "signature": "ccm.gemini.SIG-A"},
                call("toolu_1", "Glob", pattern="*"),
                call("toolu_2", "Glob", pattern="*.py"),
            ),
            user(result("toolu_1"), result("toolu_2")),
            assistant(
                {"type": "thinking", "thinking": "Anthropic's own", "signature": "EqQBanthropic"},
                {"type": "redacted_thinking", "data": "xyz"},
                text("Reading."),
                call("toolu_3", "Read", file_path="x"),
            ),
            user(result("toolu_3")),
        ],
        "max_tokens": 100,
    }
    out = translate_request(body, GEMINI_3)
    first, second = out["contents"][1]["parts"], out["contents"][3]["parts"]
    assert first[0]["thoughtSignature"] == "SIG-A" and "thoughtSignature" not in first[1]
    assert second == [
        {"text": "Reading."},
        {"functionCall": {"id": "toolu_3", "name": "Read", "args": {"file_path": "x"}},
         "thoughtSignature": SKIP_SIGNATURE},
    ]
    check_gemini_request(GEMINI_3.model, out, issued={"SIG-A"})
    older = translate_request(body, GEMINI_25)
    assert "thoughtSignature" not in older["contents"][3]["parts"][1]


def test_a_gemini_3_history_without_signatures_is_what_the_fake_rejects() -> None:
    out = translate_request({"messages": [user(text("go")), assistant(call("toolu_1", "Glob")),
                                          user(result("toolu_1"))],
                             "max_tokens": 10}, GEMINI_3)
    del out["contents"][1]["parts"][0]["thoughtSignature"]
    with pytest.raises(GeminiRejected, match="thought_signature"):
        check_gemini_request(GEMINI_3.model, out)


def test_media_blocks() -> None:
    body = {
        "messages": [
            user(
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg?size=2"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
                {"type": "document", "title": "notes",
                 "source": {"type": "text", "media_type": "text/plain", "data": "a b"}},
                {"type": "document", "source": {"type": "content", "content": [text("inner")]}},
            )
        ],
        "max_tokens": 10,
    }
    parts = translate_request(body, GEMINI_3)["contents"][0]["parts"]
    assert parts == [
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg?size=2"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"text": "notes\n\na b"},
        {"text": "inner"},
    ]


@pytest.mark.parametrize(
    ("model", "thinking", "effort", "expected"),
    [
        ("gemini-3-pro-preview", {"type": "adaptive", "display": "omitted"}, "medium", None),
        ("gemini-3-pro-preview", {"type": "adaptive"}, "low", {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-3-flash-preview", {"type": "adaptive", "display": "updates"}, "max",
         {"thinkingLevel": "high", "includeThoughts": True}),
        ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 31999}, None,
         {"thinkingLevel": "high", "includeThoughts": True}),
        ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 2048}, None,
         {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-2.5-pro", {"type": "enabled", "budget_tokens": 31999}, None,
         {"thinkingBudget": 31999, "includeThoughts": True}),
        ("gemini-2.5-flash", {"type": "enabled", "budget_tokens": 31999}, None,
         {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-2.5-flash", {"type": "adaptive"}, "medium", {"thinkingBudget": -1, "includeThoughts": True}),
        ("gemini-2.5-flash", {"type": "adaptive", "display": "omitted"}, "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", {"type": "disabled"}, None, {"thinkingBudget": 0}),
        ("gemini-2.5-pro", {"type": "disabled"}, None, None),
        ("gemini-2.5-flash", None, None, None),
        # effort first, as on every adapter (it is what current Claude Code sends), the budget only without one
        ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 2000}, "xhigh",
         {"thinkingLevel": "high", "includeThoughts": True}),
        ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 31999}, "low",
         {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-2.5-flash", {"type": "enabled", "budget_tokens": 31999}, "low",
         {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-pro", {"type": "enabled", "budget_tokens": 2000}, "high",
         {"thinkingBudget": 32768, "includeThoughts": True}),
    ],
)
def test_thinking_config(model: str, thinking: Any, effort: Any, expected: Any) -> None:
    body: dict[str, Any] = {"messages": [user(text("hi"))], "max_tokens": 64000}
    if thinking:
        body["thinking"] = thinking
    if effort:
        body["output_config"] = {"effort": effort}
    target = Model(name="m", provider="gemini", model=model)
    out = translate_request(body, target)
    assert out["generationConfig"].get("thinkingConfig") == expected
    check_gemini_request(model, out)


def test_generation_parameters_clamp_and_overrides() -> None:
    body = {
        "messages": [user(text("hi"))],
        "max_tokens": 128000,
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["a", "b", "c", "d", "e", "f"],
    }
    model = Model(
        name="m", provider="gemini", model="gemini-2.5-flash", max_output=8192,
        force=(("generationConfig.temperature", 0.0), ("generationConfig.seed", 7)),
        drop=("generationConfig.topK",),
    )
    config = translate_request(body, model)["generationConfig"]
    assert config == {"maxOutputTokens": 8192, "temperature": 0.0, "topP": 0.9,
                      "stopSequences": ["a", "b", "c", "d", "e"],
                      "seed": 7}


def test_web_search_uses_google_search_only_with_the_quirk() -> None:
    body = load_fixture("web-search-server-tool.json")["body"]
    assert "tools" not in translate_request(body, GEMINI_3)
    searching = GEMINI_3.model_copy(update={"quirks": ("google_search",)})
    out = translate_request(body, searching)
    assert out["tools"] == [{"googleSearch": {}}]
    # Claude Code's `tool_choice: auto` has no function to apply to: Gemini rejects a calling config without them
    assert "toolConfig" not in out
    check_gemini_request(GEMINI_3.model, out)


def test_the_fake_rejects_a_function_calling_config_without_function_declarations() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}
    with pytest.raises(GeminiRejected, match="without function_declarations"):
        check_gemini_request(GEMINI_3.model, body)


def test_search_beside_functions_keeps_the_calling_config() -> None:
    body = load_fixture("web-search-server-tool.json")["body"]
    bash = {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}
    body = {**body, "tools": [*body["tools"], bash], "tool_choice": {"type": "any"}}
    out = translate_request(body, GEMINI_3.model_copy(update={"quirks": ("google_search",)}))
    assert [sorted(t) for t in out["tools"]] == [["functionDeclarations"], ["googleSearch"]]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    check_gemini_request(GEMINI_3.model, out)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"mode": "AUTO"}),
        ({"type": "any"}, {"mode": "ANY"}),
        ({"type": "none"}, {"mode": "NONE"}),
        ({"type": "tool", "name": "Bash"}, {"mode": "ANY", "allowedFunctionNames": ["Bash"]}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    body = {
        "messages": [user(text("hi"))],
        "max_tokens": 10,
        "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
        "tool_choice": choice,
    }
    out = translate_request(body, GEMINI_3)
    assert out["toolConfig"] == {"functionCallingConfig": expected}
    check_gemini_request(GEMINI_3.model, out)
